"""Class activation maps: Grad-CAM, HiResCAM, Grad-CAM++, Score-CAM, Ablation-CAM, guided Grad-CAM.

A CAM is ``relu(Σ_k w_k A_k)`` over the channels ``A_k`` of one layer's output; the variants
differ only in the channel weights ``w`` (:meth:`CAM.channel_weights`; HiResCAM keeps one weight
per channel and position). The map is upsampled
along the spatial axes to the input's size (linear in 1D, bilinear in 2D) and returned with the
input's shape.

Per-channel maps (``per_channel``): a CAM has one value per position, not per input channel.
With ``per_channel=False`` (default) every input channel gets that same map. With
``per_channel=True`` the CAM value at each position is split among the input channels in
proportion to ``|∂score/∂x_c · x_c|`` (gradient × input) at that position, so the channel maps
sum to the CAM and show which channel (ECG lead, colour) the located evidence is in. Where
gradient × input is zero for every channel the split is even. Guided Grad-CAM
(``guided_gradcam``) is the other per-channel form: the CAM times guided backpropagation.

Gradient-weighted variants differentiate the pre-softmax score (``Model.logits_t``);
Score-CAM scores masked inputs by the target's softmax probability, as in its paper;
Ablation-CAM uses the drop of the pre-softmax score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import LayerError
from ..layout import resize_to
from ..models import Model
from .base import Explainer, chunk_rows, input_gradient, pick_scores, row_chunks
from .gradients import guided_gradients
from .registry import register

__all__ = ["CAM", "GradCAM", "HiResCAM", "GradCAMPlusPlus", "ScoreCAM", "AblationCAM", "GuidedGradCAM", "CamContext"]


@dataclass
class CamContext:
    """What a channel-weight function gets for one chunk of samples."""

    model: Model
    layer: str
    x: torch.Tensor                 # (n, C, *spatial) input rows
    act: torch.Tensor               # (n, K, *s) the layer's output (detached)
    grads: torch.Tensor | None      # (n, K, *s) d score / d act, when the variant asks for it
    targets: torch.Tensor           # (n,)
    logits: torch.Tensor            # (n, classes) at x
    state: dict                     # shared by the chunks of one explain call


class CAM(Explainer):
    """Base of the CAM family. Subclasses implement :meth:`channel_weights`.

    Parameters
    ----------
    layer : str, optional
        The layer whose output is weighted (``model.layers()`` lists the names); default the last
        convolution (with its BatchNorm/activation when they follow it).
    per_channel : bool
        ``False``: every input channel gets the same (spatial) CAM. ``True``: the CAM at each
        position is split among input channels in proportion to ``|gradient × input|`` there
        (channel maps sum to the CAM).
    relu : bool
        Keep only positive evidence (the published definition); ``False`` keeps the signed sum.
    """

    resolves_own_targets = True
    #: whether channel_weights needs d score / d activation
    uses_gradients: ClassVar[bool] = True

    def __init__(self, layer: str | None = None, per_channel: bool = False, relu: bool = True) -> None:
        self.layer = layer
        self.per_channel = per_channel
        self.relu = relu

    def channel_weights(self, ctx: CamContext) -> torch.Tensor:
        """``(n, K)`` weights of the layer's channels for the target class (or ``(n, K, *s)``, one
        weight per channel and position)."""
        raise NotImplementedError

    # ---- shared machinery --------------------------------------------------------------
    def _n_channels(self, model: Model, layer: str, x: torch.Tensor) -> int:
        with torch.inference_mode(), model.capture(layer) as cap:
            model.logits_t(x[:1])
        return _check_act(cap.activation, x, layer).shape[1]

    def _forward(self, model: Model, layer: str, x: torch.Tensor, targets: torch.Tensor | None,
                 want_input_grad: bool):
        """One forward (+ backward where needed): activation, its gradient, the input gradient, logits."""
        holder: dict[str, torch.Tensor] = {}

        def edit(a: torch.Tensor) -> torch.Tensor:
            if torch.is_grad_enabled() and not a.requires_grad:
                a = a.detach().requires_grad_(True)
            holder["a"] = a
            return a.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the captured tensor

        need_grad = self.uses_gradients or want_input_grad
        xi = x.detach().requires_grad_(want_input_grad)
        grad_act = grad_x = None
        if need_grad:
            with torch.enable_grad(), model.capture(layer, edit=edit):
                logits = model.logits_t(xi)
                scores, tg = pick_scores(logits, targets)
                act = _check_act(holder.get("a"), x, layer)
                wrt = ([act] if self.uses_gradients else []) + ([xi] if want_input_grad else [])
                grads = torch.autograd.grad(scores.sum(), wrt)
            if self.uses_gradients:
                grad_act = grads[0]
            if want_input_grad:
                grad_x = grads[-1]
            act = act.detach()
            logits = logits.detach()
        else:
            with torch.inference_mode(), model.capture(layer, edit=edit):
                logits = model.logits_t(xi)
            _, tg = pick_scores(logits, targets)
            act = _check_act(holder.get("a"), x, layer)
        return act, grad_act, grad_x, logits, tg

    def _cam_chunk(self, model: Model, layer: str, x: torch.Tensor, targets: torch.Tensor | None,
                   want_input_grad: bool, state: dict):
        act, grad_act, grad_x, logits, tg = self._forward(model, layer, x, targets, want_input_grad)
        ctx = CamContext(model, layer, x, act, grad_act, tg, logits, state)
        with torch.no_grad():
            w = self.channel_weights(ctx).to(act.dtype)
            if w.ndim == 2:  # (n, K) channel weights: a batched matrix product
                cam = torch.bmm(w.unsqueeze(1), act.flatten(2)).view(act.shape[0], 1, *act.shape[2:])
            else:
                cam = (w * act).sum(1, keepdim=True)
            if w.ndim > 2:  # per-position weights: report the channel weights as their spatial mean
                w = w.flatten(2).mean(2)
            if self.relu:
                cam = cam.clamp_min(0)
            up = resize_to(cam, x.shape[2:])
        return up, cam[:, 0], w, grad_x, tg

    def _chunk_size(self, model: Model, layer: str, t: torch.Tensor) -> int:
        return chunk_rows(model, t)

    def _compute(self, model, t, targets):
        layer = self.layer or model.default_layer()
        per_channel = bool(self.per_channel) and t.shape[1] > 1
        b = self._chunk_size(model, layer, t)
        maps = torch.empty_like(t)
        tg_all = torch.empty(len(t), dtype=torch.long, device=t.device)
        lowres, weights = [], []
        state: dict = {}
        for s in row_chunks(len(t), b):
            up, cam, w, grad_x, tg = self._cam_chunk(model, layer, t[s], None if targets is None else targets[s],
                                                     per_channel and self.uses_gradients, state)
            if per_channel:
                if grad_x is None:  # a gradient-free variant: one extra forward+backward for the split
                    grad_x, _ = input_gradient(model, t[s], tg)
                maps[s] = up * channel_share(grad_x, t[s])
            else:
                maps[s] = up.expand_as(t[s])
            tg_all[s] = tg
            lowres.append(cam.detach().cpu())
            weights.append(w.detach().cpu())
        extras = {"layer": layer, "cam": torch.cat(lowres).numpy(), "weights": torch.cat(weights).numpy()}
        if "ablation_batching" in state:
            extras["ablation_batching"] = state["ablation_batching"]
        return maps, tg_all.cpu().numpy(), extras


def channel_share(grad_x: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``|g·x|`` normalised over channels at each position (even split where it is all zero)."""
    s = (grad_x * x).abs()
    tot = s.sum(1, keepdim=True)
    even = torch.full_like(s, 1.0 / s.shape[1])
    return torch.where(tot > 0, s / torch.where(tot > 0, tot, torch.ones_like(tot)), even)


def _check_act(act: torch.Tensor | None, x: torch.Tensor, layer: str) -> torch.Tensor:
    if act is None:
        raise LayerError("the layer was not called in the forward pass", parameter="layer", got=layer,
                         fix="pick a layer on the path from input to output (model.layers() lists them)")
    if act.ndim != x.ndim:
        raise LayerError("the layer's output has no spatial axes matching the input", parameter="layer",
                         expected=f"an output with {x.ndim - 2} spatial axis/axes (a convolution or pooling layer)",
                         got=f"{layer} with output shape {tuple(act.shape[1:])}",
                         fix="pick a convolutional layer (model.layers() lists names and shapes)")
    return act


@register("gradcam")
class GradCAM(CAM):
    """Grad-CAM (Selvaraju et al., 2017): ``w_k`` = the spatial mean of ∂score/∂A_k.

    See :class:`CAM` for the parameters and the meaning of ``per_channel``.
    """

    def channel_weights(self, ctx):
        return ctx.grads.mean(dim=tuple(range(2, ctx.grads.ndim)))


@register("hirescam")
class HiResCAM(CAM):
    """HiResCAM (Draelos & Carin, 2020): ``Σ_k ∂score/∂A_k ⊙ A_k``, the gradient kept per position
    instead of averaged over positions as in Grad-CAM.

    For a model whose head is linear in the layer's output (``Flatten`` + ``Linear``, as in the
    MNIST-1D and Keras MNIST CNNs) this is exactly each position's contribution to the target's
    score, where Grad-CAM's position-averaged weights can cancel out.
    See :class:`CAM` for the parameters and the meaning of ``per_channel``.
    """

    def channel_weights(self, ctx):
        return ctx.grads


@register("gradcam_pp")
class GradCAMPlusPlus(CAM):
    """Grad-CAM++ (Chattopadhay et al., 2018): ``w_k = Σ_ij a_ij relu(g_ij)`` with
    ``a = g² / (2g² + Σ_ij A · g³)`` (the closed form for an exponential of the score).

    See :class:`CAM` for the parameters and the meaning of ``per_channel``.
    """

    def channel_weights(self, ctx):
        g, a = ctx.grads, ctx.act
        dims = tuple(range(2, g.ndim))
        # a = g² / (2g² + S g³) = 1 / (2 + S g) where g != 0, and only g > 0 counts (relu(g)):
        # w = Σ_{g>0} g / (2 + S g), with a zero term where the denominator vanishes
        s_ = a.sum(dims, keepdim=True)
        gp = g.clamp_min(0)
        if bool((s_ >= 0).all()):  # the usual case (post-ReLU activations): denominators >= 2
            d = gp * s_
            d.add_(2)
            return torch.div(gp, d, out=d).sum(dims)
        denom = 2 + s_ * gp
        return torch.where(denom != 0, gp / torch.where(denom != 0, denom, torch.ones_like(denom)),
                           torch.zeros_like(gp)).sum(dims)


def _masks(act: torch.Tensor, size) -> torch.Tensor:
    """Each channel upsampled to the input size and min-max normalised to [0, 1] (zero if flat)."""
    up = resize_to(act, size)
    flat = up.flatten(2)
    lo = flat.amin(2, keepdim=True)
    hi = flat.amax(2, keepdim=True)
    rng = hi - lo
    norm = torch.where(rng > 0, (flat - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)),
                       torch.zeros_like(flat))
    return norm.view_as(up)


@register("scorecam")
class ScoreCAM(CAM):
    """Score-CAM (Wang et al., 2020): ``w_k`` = the target's softmax probability when the input is
    multiplied by channel k's activation, upsampled and min-max normalised to [0, 1].

    The ``n × K`` masked inputs are run through the model in batches under the memory budget.
    See :class:`CAM` for the parameters and the meaning of ``per_channel``.
    """

    uses_gradients = False

    def _chunk_size(self, model, layer, t):
        k = self._n_channels(model, layer, t)
        return max(1, chunk_rows(model, t) // k)

    def channel_weights(self, ctx):
        x, model = ctx.x, ctx.model
        n, k = ctx.act.shape[:2]
        masks = _masks(ctx.act, x.shape[2:])  # (n, K, *spatial)
        out = torch.empty(n * k, dtype=x.dtype, device=x.device)
        si_all = torch.arange(n, device=x.device).repeat_interleave(k)
        ki_all = torch.arange(k, device=x.device).repeat(n)
        with torch.inference_mode():
            for rows in row_chunks(n * k, chunk_rows(model, x)):
                si, ki = si_all[rows], ki_all[rows]
                xr = x[si] * masks[si, ki].unsqueeze(1)
                out[rows] = torch.softmax(model.logits_t(xr), 1).gather(1, ctx.targets[si].view(-1, 1)).view(-1)
        return out.view(n, k)


@register("ablationcam")
class AblationCAM(CAM):
    """Ablation-CAM (Desai & Ramaswamy, 2020): ``w_k = y_c − y_c^(k)``, the drop of the target's
    pre-softmax score when channel k of the layer is set to zero.

    Channels are ablated through ``Model.capture(layer, edit=...)``, never by editing weights. All
    channels are batched: the layer's output for ``n`` samples is expanded to ``n × K`` rows
    (row ``(i, k)`` has channel k zeroed) so the layers below run once per sample; a model where
    that expansion does not fit (e.g. a skip connection around the layer) is run with the input
    repeated instead. The paper divides the drop by ``y_c``; that rescales each sample's map by
    a constant (and flips it when ``y_c < 0``), so the raw drop is used.
    See :class:`CAM` for the parameters and the meaning of ``per_channel``.
    """

    uses_gradients = False

    def _chunk_size(self, model, layer, t):
        k = self._n_channels(model, layer, t)
        return max(1, chunk_rows(model, t) // k)

    def channel_weights(self, ctx):
        x, model = ctx.x, ctx.model
        n, k = ctx.act.shape[:2]
        y = ctx.logits.gather(1, ctx.targets.view(-1, 1)).view(-1)
        budget = chunk_rows(model, x)
        blocks = [torch.arange(s.start, s.stop, device=x.device) for s in row_chunks(k, max(1, budget // n))]
        drops = torch.empty(n, k, dtype=x.dtype, device=x.device)
        for ks in blocks:
            ya = self._ablated_scores(model, ctx.layer, x, ks, ctx.targets, ctx.state)  # (n, len(ks))
            drops[:, ks] = y.view(-1, 1) - ya
        return drops

    def _ablated_scores(self, model, layer, x, ks, targets, state):
        n, m = len(x), len(ks)
        mode = state.get("ablation_batching")
        if mode != "repeat":
            try:
                out = self._run_expand(model, layer, x, ks)
                if out.shape[0] == n * m:
                    state["ablation_batching"] = "expand"
                    return out.gather(1, targets.repeat_interleave(m).view(-1, 1)).view(n, m)
            except Exception:  # the layers above the hook could not take the larger batch
                if mode == "expand":
                    raise
            state["ablation_batching"] = "repeat"
        return self._run_repeat(model, layer, x, ks, targets)

    @staticmethod
    def _keep(k_total: int, ks: torch.Tensor, dtype) -> torch.Tensor:
        keep = torch.ones(len(ks), k_total, dtype=dtype, device=ks.device)
        keep[torch.arange(len(ks), device=ks.device), ks] = 0
        return keep  # (m, K)

    def _run_expand(self, model, layer, x, ks):
        def edit(a: torch.Tensor) -> torch.Tensor:
            n, k = a.shape[:2]
            keep = self._keep(k, ks, a.dtype)
            rows = a.unsqueeze(1) * keep.view(1, *keep.shape, *([1] * (a.ndim - 2)))
            return rows.reshape(n * len(ks), *a.shape[1:])

        with torch.inference_mode(), model.capture(layer, edit=edit):
            return model.logits_t(x)

    def _run_repeat(self, model, layer, x, ks, targets):
        n, m = len(x), len(ks)
        si_all = torch.arange(n, device=x.device).repeat_interleave(m)
        out = torch.empty(n * m, dtype=x.dtype, device=x.device)
        for rows in row_chunks(n * m, chunk_rows(model, x)):
            si = si_all[rows]
            kj = ks.repeat(n)[rows]

            def edit(a: torch.Tensor, kj=kj) -> torch.Tensor:
                keep = torch.ones_like(a)
                keep[torch.arange(len(kj), device=a.device), kj] = 0
                return a * keep

            with torch.inference_mode(), model.capture(layer, edit=edit):
                out[rows] = pick_scores(model.logits_t(x[si]), targets[si])[0]
        return out.view(n, m)


@register("guided_gradcam")
class GuidedGradCAM(Explainer):
    """Guided Grad-CAM (Selvaraju et al., 2017): guided backpropagation times the upsampled
    Grad-CAM map. Per input channel natively (the guided gradient is per channel).

    Parameters
    ----------
    layer : str, optional
        The Grad-CAM layer (default: the last convolution).
    absolute : bool
        Return ``|map|``.
    """

    resolves_own_targets = True

    def __init__(self, layer: str | None = None, absolute: bool = False) -> None:
        self.layer = layer
        self.absolute = absolute

    def _compute(self, model, t, targets):
        gc = GradCAM(layer=self.layer, per_channel=False)
        cam_maps, tg, extras = gc._compute(model, t, targets)
        gbp, _, count = guided_gradients(model, t, torch.as_tensor(tg, device=t.device))
        maps = cam_maps * gbp
        extras["relus_replaced"] = int(count)
        return (maps.abs() if self.absolute else maps), tg, extras
