"""The mask network of the TRUST localizer.

``g`` maps an input ``(N, C, *spatial)`` to mask logits ``(N, M, *spatial)`` (``M = C`` for a
mask per channel, ``M = 1`` for one mask shared by all channels). The mask is

    δ_τ(x) = tanh(relu(τ · softmax(BN(g(x)))))

where the softmax runs over every mask entry (``budget='total'``) or over space separately
for each mask channel (``budget='per_channel'``). Every entry is < 1 (capped below 1 where tanh
rounds to 1 in floating point: :func:`masks_from_probs`) and the entries sum to
at most τ (per channel for ``'per_channel'``). With ``sink=True`` the softmax gets one extra
learned entry per budget group whose share is discarded, so the mask can spend less than τ
when nothing needs removing.

Because every τ uses the *same* softmax, the masks are nested: τ ≤ τ' implies δ_τ(x) ≤ δ_τ'(x)
entry by entry, so one network gives the whole τ path.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

__all__ = ["BACKBONES", "DEFAULT_BACKBONE", "STRIDED_MIN_SIZE", "MaskNet", "DilatedBackbone", "UNetBackbone", "StridedBackbone",
           "PaperBackbone",
           "default_backbone", "default_backbone_kind", "paper_backbone", "masks_from_probs", "KerasBackbone",
           "is_keras_model",
           "apply_mask", "blur"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _coords(x: torch.Tensor) -> torch.Tensor:
    """Coordinate channels in [-1, 1], one per spatial axis: ``(N, rank, *spatial)``."""
    spatial = x.shape[2:]
    axes = [torch.linspace(-1.0, 1.0, s, dtype=x.dtype, device=x.device) for s in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grids).unsqueeze(0).expand(x.shape[0], -1, *spatial)


class UNetBackbone(nn.Module):
    """The default ``g`` (``backbone='unet'``): a small rank-generic conv encoder–decoder (two down/up levels
    with skips) at full resolution.

    Coordinate channels are appended to the input so the network can tell *where* a feature is
    (a bump shared by every sample at one place and a class bump elsewhere look alike locally).
    Works for any length / image size (the decoder interpolates back to the skip's exact size).
    """

    def __init__(self, rank: int, in_channels: int, out_channels: int, width: int = 16, kernel: int = 5,
                 coords: bool = True) -> None:
        super().__init__()
        if rank not in _CONV:
            raise InputError("unsupported rank", parameter="rank", expected="1, 2 or 3", got=rank,
                             fix="pass signals (N, C, L) or images (N, C, H, W)")
        conv = _CONV[rank]
        k, p, w = kernel, kernel // 2, int(width)
        self.rank, self.coords = rank, bool(coords)
        c0 = in_channels + (rank if coords else 0)
        self.enc0 = nn.Sequential(conv(c0, w, k, padding=p), nn.ReLU(), conv(w, w, k, padding=p), nn.ReLU())
        self.enc1 = nn.Sequential(conv(w, 2 * w, k, stride=2, padding=p), nn.ReLU(),
                                  conv(2 * w, 2 * w, k, padding=p), nn.ReLU())
        self.enc2 = nn.Sequential(conv(2 * w, 2 * w, k, stride=2, padding=p), nn.ReLU(),
                                  conv(2 * w, 2 * w, k, padding=p), nn.ReLU())
        self.dec1 = nn.Sequential(conv(4 * w, 2 * w, k, padding=p), nn.ReLU())
        self.dec0 = nn.Sequential(conv(3 * w, w, k, padding=p), nn.ReLU())
        self.out = conv(w, out_channels, k, padding=p)
        self.mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[rank]

    def _up(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=like.shape[2:], mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, _coords(x)], 1) if self.coords else x
        e0 = self.enc0(h)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        d1 = self.dec1(torch.cat([self._up(e2, e1), e1], 1))
        d0 = self.dec0(torch.cat([self._up(d1, e0), e0], 1))
        return self.out(d0)


class DilatedBackbone(nn.Module):
    """A light ``g`` (``backbone='dilated'``): a stack of 'same'-size convolutions with growing dilation (1, 2,
    4, 8: a receptive field of 61 samples per axis with kernel 5) on the input plus coordinate
    channels, then a 1x1 convolution to the mask logits. No down/up-sampling, ~5x fewer
    multiply-adds than :class:`UNetBackbone` at the same width, so a trained localizer explains
    tens of thousands of beats per second on a CPU."""

    def __init__(self, rank: int, in_channels: int, out_channels: int, width: int = 16, kernel: int = 5,
                 dilations: Sequence[int] = (1, 2, 4, 8), coords: bool = True) -> None:
        super().__init__()
        if rank not in _CONV:
            raise InputError("unsupported rank", parameter="rank", expected="1, 2 or 3", got=rank,
                             fix="pass signals (N, C, L) or images (N, C, H, W)")
        conv = _CONV[rank]
        w, k = int(width), int(kernel)
        self.coords = bool(coords)
        layers: list[nn.Module] = []
        c = in_channels + (rank if coords else 0)
        for d in dilations:
            layers += [conv(c, w, k, padding=(k // 2) * d, dilation=d), nn.ReLU()]
            c = w
        layers.append(conv(c, out_channels, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, _coords(x)], 1) if self.coords else x)


def _conv_with_coords(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(cat([x, coords]))`` without building the concatenation: a convolution is linear in its
    input channels, so the coordinate channels' part (the same for every sample) is computed once on a
    batch of one and broadcast. Exact up to float rounding (zero padding pads each part alike)."""
    c = x.shape[1]
    w = conv.weight
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    f = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.ndim - 2]
    out = f(x, w[:, :c].contiguous(), conv.bias, **kw)
    return out + f(_coords(x[:1]), w[:, c:].contiguous(), None, **kw)


class StridedBackbone(nn.Module):
    """The fast ``g`` (``backbone='strided'``; the default for the removal objectives on inputs of at least
    :data:`STRIDED_MIN_SIZE` entries per axis, see :func:`default_backbone_kind`): a rank-generic
    encoder–decoder that never convolves at the input's full resolution. Two stride-2 convolutions
    take the input (plus coordinate channels) to 1/4 of its size, one more level goes to 1/8 and
    comes back with a skip; the mask logits are made at 1/4 resolution and interpolated (linear) to
    the input's size. About 1/3 of the multiply-adds of :class:`DilatedBackbone` and 1/12 of
    :class:`UNetBackbone` at the same width, with the U-Net's multi-scale view (its receptive field
    covers ~90 samples per axis). The logits are smooth at the scale of 4 samples, finer than any
    feature the localizer is asked to find on beats (a QRS is ~20 samples at 125 Hz). On short
    signals with ``objective='preserve'`` it puts less of the mask on the region than the U-Net
    (benchmarks/bench_locate.py)."""

    def __init__(self, rank: int, in_channels: int, out_channels: int, width: int = 16, kernel: int = 5,
                 coords: bool = True) -> None:
        super().__init__()
        if rank not in _CONV:
            raise InputError("unsupported rank", parameter="rank", expected="1, 2 or 3", got=rank,
                             fix="pass signals (N, C, L) or images (N, C, H, W)")
        conv = _CONV[rank]
        k, p, w = int(kernel), int(kernel) // 2, int(width)
        self.coords = bool(coords)
        self.stem = conv(in_channels + (rank if coords else 0), w, k, stride=2, padding=p)
        self.enc = nn.Sequential(nn.ReLU(inplace=True), conv(w, w, k, stride=2, padding=p), nn.ReLU(inplace=True),
                                 conv(w, w, k, padding=p), nn.ReLU(inplace=True))
        self.deep = nn.Sequential(conv(w, w, k, stride=2, padding=p), nn.ReLU(inplace=True),
                                  conv(w, w, k, padding=p), nn.ReLU(inplace=True))
        self.head = nn.Sequential(conv(2 * w, w, 3, padding=1), nn.ReLU(inplace=True), conv(w, out_channels, 1))
        self.mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[rank]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _conv_with_coords(self.stem, x) if self.coords else self.stem(x)
        e = self.enc(h)
        d = F.interpolate(self.deep(e), size=e.shape[2:], mode=self.mode, align_corners=False)
        z = self.head(torch.cat([d, e], 1))
        return F.interpolate(z, size=x.shape[2:], mode=self.mode, align_corners=False)


def is_keras_model(obj) -> bool:
    return type(obj).__module__.startswith("keras") and hasattr(obj, "get_weights") and hasattr(obj, "weights")


class KerasBackbone(nn.Module):
    """A user's Keras 3 network as ``g`` (Keras on the torch backend), as dnn-locate lets users pass their
    own Keras localizer. The network is channels-last (Keras' convention): it maps ``(N, *spatial, C)``
    to ``(N, *spatial, M)``; the wrapper moves the channel axis on the way in and out. Its weights are
    registered here under positional names (``w0``, ``w1``, ...: Keras names change when a model is
    built twice in one process), so the optimizer trains them and the localizer saves and loads them.
    The network is called with ``training=`` following this module's mode (its Dropout/BatchNorm layers
    follow ``fit`` / evaluation). The user's model is not modified: ``fit`` trains a clone."""

    def __init__(self, model) -> None:
        super().__init__()
        self._keras = [model]  # a list: not a torch submodule (its own parameter names are unstable)
        for i, v in enumerate(model.weights):
            value = v.value
            if not isinstance(value, nn.Parameter):
                raise InputError("the Keras mask network does not run on the torch backend", parameter="backbone",
                                 expected="a keras.Model built with KERAS_BACKEND=torch", got=type(value).__name__,
                                 fix="set KERAS_BACKEND=torch before importing keras")
            self.register_parameter(f"w{i}", value)

    @classmethod
    def clone_of(cls, model) -> "KerasBackbone":
        import keras

        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return cls(clone)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._keras[0](x.movedim(1, -1), training=self.training)
        return out.movedim(-1, 1)


class PaperBackbone(nn.Sequential):
    """The localizer of dnn-locate's ECG example, rank-generic: Conv 32 → Dropout(0.2) → Conv 16 →
    ConvT 16 → Dropout(0.2) → ConvT 32 → ConvT ``out_channels`` (kernel 5, stride 1, 'same',
    ReLU between, a linear last layer)."""

    def __init__(self, rank: int, in_channels: int, out_channels: int, dropout: float = 0.2) -> None:
        conv, convt, drop = _CONV[rank], _CONVT[rank], nn.Dropout  # element-wise, as Keras' Dropout
        super().__init__(
            conv(in_channels, 32, 5, padding=2), nn.ReLU(), drop(dropout),
            conv(32, 16, 5, padding=2), nn.ReLU(),
            convt(16, 16, 5, padding=2), nn.ReLU(), drop(dropout),
            convt(16, 32, 5, padding=2), nn.ReLU(),
            convt(32, out_channels, 5, padding=2),
        )


#: the backbones known by name (``Localizer(backbone=...)``); 'paper' is dnn-locate's ECG network
BACKBONES = ("strided", "dilated", "unet", "paper")
#: the default (``backbone=None``, trust mode) for short inputs and for ``objective='preserve'``
DEFAULT_BACKBONE = "unet"
#: removal objectives on inputs at least this long on every axis get 'strided' by default: its logits
#: are made at 1/4 resolution, fine for a 187-sample beat (as good as the U-Net on the distractor task,
#: ~6x faster masks, benchmarks/bench_locate.py), coarse for MNIST-1D's 40 samples or a 28x28 image
STRIDED_MIN_SIZE = 128


def default_backbone_kind(mode: str, objective: str, spatial: tuple[int, ...] = ()) -> str:
    """The backbone ``Localizer(backbone=None)`` uses: 'paper' in paper mode; 'strided' for the removal
    objectives on inputs of at least :data:`STRIDED_MIN_SIZE` entries along every axis (beats of 187
    samples: ~6x faster ``locate``, the same localization on the distractor task); else
    :data:`DEFAULT_BACKBONE` ('unet': on short signals the light networks put less of a mask on the region,
    and with ``objective='preserve'`` ~0.87 where the U-Net puts ~0.92 on 96-sample tasks).

    Under DDP in float32 a 'strided' fit drifts further from the single-process fit than a 'unet' fit
    (masks 0.049 vs < 5e-3 apart after 3 epochs on the 96-sample DDP test task); in float64 both agree
    with it to rounding (tests/test_localizer_ddp.py): the drift is float32 rounding amplified by
    training, not a difference in what is computed."""
    if mode == "paper":
        return "paper"
    if objective != "preserve" and spatial and min(spatial) >= STRIDED_MIN_SIZE:
        return "strided"
    return DEFAULT_BACKBONE


def default_backbone(rank: int, in_channels: int, out_channels: int, width: int = 16, kind: str = DEFAULT_BACKBONE
                     ) -> nn.Module:
    if kind == "unet":
        return UNetBackbone(rank, in_channels, out_channels, width=width)
    if kind == "strided":
        return StridedBackbone(rank, in_channels, out_channels, width=width)
    return DilatedBackbone(rank, in_channels, out_channels, width=width)


def paper_backbone(rank: int, in_channels: int, out_channels: int) -> nn.Module:
    return PaperBackbone(rank, in_channels, out_channels)


def masks_from_probs(p: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """δ = tanh(relu(τ·p)) for softmax weights ``p`` ``(N, M, *spatial)`` and τ scalar or ``(N,)``.

    tanh rounds to exactly 1 in floating point once its argument is large (τ·p > ~9 in float32), so
    the result is capped at the largest number below 1 of ``p``'s dtype: every entry is < 1, as
    promised (saturated entries tie there, as they tie at 1 without the cap)."""
    if isinstance(tau, torch.Tensor) and tau.ndim == 1:
        tau = tau.reshape((-1,) + (1,) * (p.ndim - 1))
    below_one = 1.0 - torch.finfo(p.dtype).eps / 2
    return torch.tanh(torch.relu(tau * p)).clamp_max(below_one)


class MaskNet(nn.Module):
    """``g`` + BatchNorm + softmax: ``logits(x)`` gives ``z = BN(g(x))`` once, ``masks(z, τ)`` the mask
    ``δ_τ = tanh(relu(τ · softmax(z)))`` for any τ (``forward(x, τ)`` does both).

    Parameters
    ----------
    backbone : nn.Module
        ``(N, C, *spatial) -> (N, M, *spatial)`` logits.
    mask_channels : int
        ``M``: ``C`` (a mask per channel) or 1 (shared).
    budget : 'total' | 'per_channel'
        The softmax runs over all ``M x spatial`` entries, or over space for each mask channel.
    sink : bool
        Add one learned logit per budget group whose softmax share is thrown away.
    entries : int, optional
        Mask entries per budget group (sets the sink's starting value, ``log(entries)``).

    Every τ uses the same softmax weights, so the masks are nested: τ ≤ τ' ⇒ δ_τ ≤ δ_τ'.
    (A learned τ-dependent softmax temperature was tried and dropped: it let the masks of large
    τ flatten into a faint floor over the whole input, which spoiled their localization.)
    """

    def __init__(self, backbone: nn.Module, rank: int, mask_channels: int, budget: str = "total",
                 sink: bool = True, entries: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.rank = int(rank)
        self.mask_channels = int(mask_channels)
        self.budget = budget
        self.bn = _BN[min(self.rank, 3)](self.mask_channels)
        groups = 1 if budget == "total" else self.mask_channels
        self.groups = groups
        # the sink starts with the weight of all the entries of a flat map together: a mask with no
        # clear peak spends about half of tau, a peaked one can take (nearly) all of it
        start = math.log(max(1, int(entries))) if entries else 0.0
        self.sink = nn.Parameter(torch.full((groups,), start)) if sink else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(x)
        if z.shape[1] != self.mask_channels or z.shape[2:] != x.shape[2:]:
            raise InputError("the backbone's output does not have the mask's shape", parameter="backbone",
                             expected=f"(N, {self.mask_channels}, {', '.join(map(str, x.shape[2:]))})",
                             got=f"{tuple(z.shape)}",
                             fix="make the backbone return one logit map per mask channel at the input's size")
        return self.bn(z)

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """Softmax weights ``p`` (``z``'s shape): over each budget group, the sink's share dropped."""
        n = z.shape[0]
        flat = z.reshape(n, self.groups, -1)
        if self.sink is not None:
            flat = torch.cat([flat, self.sink.reshape(1, self.groups, 1).expand(n, self.groups, 1)], dim=2)
            p = torch.softmax(flat, dim=2)[..., :-1]
        else:
            p = torch.softmax(flat, dim=2)
        return p.reshape(z.shape)

    def masks(self, z: torch.Tensor, tau) -> torch.Tensor:
        """δ_τ from the logits ``z``."""
        return masks_from_probs(self.probs(z), tau)

    def forward(self, x: torch.Tensor, tau) -> torch.Tensor:
        return self.masks(self.logits(x), tau)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur along every spatial axis (reflect padding), any rank: the one blur,
    :func:`trustmap.baselines.gaussian_blur`."""
    from ..baselines import gaussian_blur

    return gaussian_blur(x, sigma)


def apply_mask(x: torch.Tensor, delta: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
    """x ⊙ (1 − δ) + δ ⊙ base (``base=None`` means zero, the paper's choice)."""
    if base is None:
        return x * (1 - delta)
    return x + delta * (base - x)


def check_sizes(spatial: Sequence[int]) -> None:
    if any(int(s) < 4 for s in spatial):
        raise InputError("inputs are too small for the localizer", parameter="X",
                         expected="every spatial size >= 4", got=tuple(spatial),
                         fix="use longer signals / larger images")
