"""Interpretable features for the perturbation explainers (LIME, KernelSHAP), and the shared input
handling of occlusion, LIME and KernelSHAP (baselines, shape matching, scoring, progress).

A *segmentation* assigns every input entry ``(c, *position)`` of a sample to one feature
``0..F-1``. Features are switched on (the input's values) or off (the baseline's values).

* ``'fixed'``: a grid of blocks of ``segment_size`` positions along each spatial axis (1D:
  consecutive segments; 2D: patches), the same for every sample.
* ``'quickshift'`` / ``'slic'``: scikit-image superpixels computed per sample on the sample
  scaled to [0, 1] (2D inputs only).
* an integer array: the caller's own labels, shaped like one sample (internal ``(C, *spatial)``,
  channels-last ``(*spatial, C)``, or ``(*spatial)`` for all channels) or like the whole batch.

``per_channel=True`` makes every (channel, spatial feature) pair its own feature, so the maps
differ between channels; ``False`` switches all channels of a spatial feature together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DependencyError, InputError, ShapeError
from ..models import Model
from .base import pick_scores, row_chunks, chunk_rows
from .. import baselines as _baselines
from .gradients import IG_BASELINES

__all__ = ["Segmentation", "segment", "SEGMENTATIONS", "SCORES", "resolve_baseline", "match_sample_array",
           "full_scores", "progress_bar", "DEFAULT_QUICKSHIFT", "DEFAULT_SLIC"]

SEGMENTATIONS = ("auto", "fixed", "quickshift", "slic")
SCORES = ("prob", "logit")
#: quickshift defaults for small images scaled to [0, 1] (lime's 4 / 200 / 0.2 assume 0-255 photos and give
#: one segment on a 28x28 digit); about 15-20 superpixels on 28x28 / 32x32 inputs
DEFAULT_QUICKSHIFT = {"kernel_size": 1, "max_dist": 3, "ratio": 0.5}
DEFAULT_SLIC = {"n_segments": 50, "compactness": 0.1}


@dataclass
class Segmentation:
    """Feature labels of a batch.

    ``labels`` is ``(1, numel)`` (shared by all samples) or ``(N, numel)`` int64 with values
    ``0..n_features[i]-1`` over the flattened ``(C, *spatial)`` sample; ``spatial`` holds the
    spatial labels ``(N, *spatial)`` for the extras, or ``None`` when labels differ across channels.
    """

    labels: torch.Tensor
    n_features: np.ndarray
    spatial: np.ndarray | None

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Labels for the samples ``idx`` (one row per index)."""
        if self.labels.shape[0] == 1:
            return self.labels.expand(len(idx), -1)
        return self.labels[idx]


def match_sample_array(arr, t: torch.Tensor, parameter: str, what: str) -> np.ndarray:
    """An array given for one sample or the batch, brought to ``(N or 1, C, *spatial)`` (internal order).

    Accepted shapes: ``(C, *spatial)``, ``(*spatial, C)``, ``(*spatial)`` (every channel), each with an
    optional leading batch axis of ``N``.
    """
    a = np.asarray(arr)
    n, c, sp = t.shape[0], t.shape[1], tuple(t.shape[2:])
    forms = []
    for lead in ((), (n,)):
        k = len(lead)
        if a.shape == lead + (c, *sp):
            forms.append(lambda a=a, k=k: a if k else a[None])
        elif a.shape == lead + (*sp, c):
            forms.append(lambda a=a, k=k: np.moveaxis(a if k else a[None], -1, 1))
        elif a.shape == lead + sp:
            forms.append(lambda a=a, k=k: np.broadcast_to((a if k else a[None])[:, None], (k and n or 1, c, *sp)))
    if not forms:
        expected = f"{what} of shape {(c, *sp)}, {(*sp, c)} or {sp} (optionally with a leading axis of {n})"
        raise ShapeError(f"{parameter} does not match the input's shape", parameter=parameter, expected=expected,
                         got=f"shape {a.shape}", fix=f"give one {what} per input entry, shaped like one sample")
    return np.ascontiguousarray(forms[0]())


def resolve_baseline(t: torch.Tensor, baseline, *, blur_sigma: float, seed: int) -> torch.Tensor:
    """Baseline tensor ``(N, C, *spatial)`` (:func:`trustmap.baselines.resolve_baseline`): a name, a
    finite number, or an array or tensor that broadcasts to the input (one sample or the batch)."""
    return _baselines.resolve_baseline(t, baseline, blur_sigma=blur_sigma, seed=seed).expand_as(t).clone()


def check_baseline_param(baseline) -> None:
    _baselines.check_baseline(baseline, IG_BASELINES)


def _relabel(lab: np.ndarray) -> tuple[np.ndarray, int]:
    u, inv = np.unique(lab, return_inverse=True)
    return inv.reshape(lab.shape).astype(np.int64), len(u)


def _fixed_spatial(sp: tuple[int, ...], size) -> np.ndarray:
    sizes = (size,) * len(sp) if np.isscalar(size) else tuple(size)
    if len(sizes) != len(sp):
        raise ShapeError("segment_size has the wrong number of axes", parameter="segment_size",
                         expected=f"an int or {len(sp)} ints (one per spatial axis)", got=size,
                         fix=f"pass segment_size={sizes[0]}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise InputError("invalid segment size", parameter="segment_size", expected="ints >= 1", got=size,
                             fix="pass segment_size=4")
    idx = np.zeros(sp, dtype=np.int64)
    mult = 1
    for ax in reversed(range(len(sp))):
        block = np.arange(sp[ax]) // int(sizes[ax])
        shape = [1] * len(sp)
        shape[ax] = sp[ax]
        idx = idx + block.reshape(shape) * mult
        mult *= int(-(-sp[ax] // int(sizes[ax])))
    return _relabel(idx)[0]


def _superpixels(t: torch.Tensor, kind: str, params: dict | None) -> np.ndarray:
    if t.ndim != 4:
        raise InputError(f"{kind} superpixels need 2D inputs", parameter="segmentation",
                         expected="'fixed' or a label array for 1D inputs", got=kind,
                         fix="pass segmentation='fixed' (segments of segment_size positions)")
    try:
        from skimage.segmentation import quickshift, slic
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise DependencyError("scikit-image is needed for superpixels", parameter="segmentation",
                              fix="pip install scikit-image, or use segmentation='fixed'") from exc
    opts = dict(DEFAULT_QUICKSHIFT if kind == "quickshift" else DEFAULT_SLIC)
    opts.update(params or {})
    convert = bool(opts.pop("convert2lab", False)) and t.shape[1] == 3
    arr = t.detach().cpu().double().numpy()
    out = np.empty((arr.shape[0], *arr.shape[2:]), dtype=np.int64)
    for i, x in enumerate(arr):
        img = np.moveaxis(x, 0, -1)
        lo, hi = img.min(), img.max()
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        try:
            if kind == "quickshift":
                lab = quickshift(img, convert2lab=convert, **opts)
            else:
                lab = slic(img, channel_axis=-1, start_label=0, **opts)
        except TypeError as exc:
            raise InputError(f"invalid {kind} parameter", parameter="segment_params", expected=f"arguments of "
                             f"skimage.segmentation.{kind}", got=opts, fix=str(exc)) from exc
        out[i] = _relabel(lab)[0]
    return out


def segment(t: torch.Tensor, segmentation, segment_size, per_channel: bool, segment_params: dict | None
            ) -> Segmentation:
    """Feature labels of the internal batch ``t``; see the module docstring."""
    n, c, sp = t.shape[0], t.shape[1], tuple(t.shape[2:])
    p = int(np.prod(sp))
    if isinstance(segmentation, str):
        kind = "fixed" if segmentation == "auto" and t.ndim == 3 else segmentation
        kind = "quickshift" if kind == "auto" else kind
        if kind == "fixed":
            sp_lab = _fixed_spatial(sp, segment_size)[None]  # (1, *sp)
        else:
            sp_lab = _superpixels(t, kind, segment_params)
        n_sp = sp_lab.reshape(len(sp_lab), -1).max(1) + 1
        if per_channel:
            lab = sp_lab.reshape(len(sp_lab), 1, p) + (np.arange(c) * n_sp[:, None])[..., None]
            nf = n_sp * c
        else:
            lab = np.broadcast_to(sp_lab.reshape(len(sp_lab), 1, p), (len(sp_lab), c, p))
            nf = n_sp
        spatial = np.broadcast_to(sp_lab, (n, *sp)).copy()
        nf = np.broadcast_to(nf, (n,)).astype(np.int64)
    else:
        a = np.asarray(segmentation.detach().cpu() if isinstance(segmentation, torch.Tensor) else segmentation)
        if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0)):
            raise InputError("segmentation labels must be integers", parameter="segmentation",
                             expected="'auto', 'fixed', 'quickshift', 'slic' or an integer label array",
                             got=f"array of {a.dtype}", fix="pass integer feature labels")
        full = match_sample_array(a.astype(np.int64), t, "segmentation", "feature label")
        if per_channel:
            full = full + (full.reshape(len(full), -1).max(1).reshape(-1, 1, *([1] * len(sp))) + 1) * \
                np.arange(c).reshape(1, c, *([1] * len(sp)))
        lab = np.empty((len(full), c, p), dtype=np.int64)
        nf = np.empty(len(full), dtype=np.int64)
        for i, f in enumerate(full):
            lab[i], nf[i] = _relabel(f.reshape(c, p))
        same = bool((full == full[:, :1]).all())
        spatial = np.broadcast_to(full[:, 0], (n, *sp)).copy() if same else None
        nf = np.broadcast_to(nf, (n,)).astype(np.int64)
    labels = torch.as_tensor(np.array(lab.reshape(len(lab), c * p), dtype=np.int64, copy=True), device=t.device)
    return Segmentation(labels, nf.copy(), spatial)


# ---- scoring -------------------------------------------------------------------------
def scores_of(model: Model, x: torch.Tensor, targets: torch.Tensor | None, score: str
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The explained score of the target class per row (float64), and the targets."""
    logits = model.logits_t(x)
    if score == "prob":
        logits = torch.softmax(logits, dim=1)
    s, tg = pick_scores(logits, targets)
    return s.double(), tg


def full_scores(model: Model, t: torch.Tensor, targets: torch.Tensor | None, score: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of ``t`` (float64, ``(N,)``) and resolved targets, in chunks, without gradients."""
    out = torch.empty(len(t), dtype=torch.float64, device=t.device)
    tg = torch.empty(len(t), dtype=torch.long, device=t.device)
    with torch.inference_mode():
        for s in row_chunks(len(t), chunk_rows(model, t)):
            out[s], tg[s] = scores_of(model, t[s], None if targets is None else targets[s], score)
    return out, tg


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def progress_bar(show: bool, total: int, desc: str):
    """A tqdm bar on stderr counting model rows when ``show`` is true, else a no-op."""
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=int(total), desc=desc, unit="row", file=sys.stderr, unit_scale=True, leave=False)
