"""Feature ablation and Shapley value sampling on interpretable features (segments, superpixels, a
caller's labels: :mod:`trustmap.explain.segments`), as Captum's ``FeatureAblation`` and
``ShapleyValueSampling`` define them, batched: the rows of all samples (and all permutations) form one
plan, and each model call takes a chunk of rows under the model's memory budget, whatever mix of
samples and permutations it holds. Forward passes only (they run on ONNX models too).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..models import Model
from .base import Explainer, check_choice, check_number, chunk_rows, row_chunks, sample_seeds
from .lime import SPREADS
from .registry import register
from .segments import (SCORES, SEGMENTATIONS, Segmentation, check_baseline_param, full_scores, progress_bar,
                       resolve_baseline, scores_of, segment)

__all__ = ["FeatureAblation", "ShapleySampling", "score_coalitions", "spread_features"]


def score_coalitions(model: Model, t: torch.Tensor, base: torch.Tensor, seg: Segmentation, tg: torch.Tensor,
                     score: str, sample_idx: torch.Tensor, on_fn: Callable[[slice], torch.Tensor], bar=None
                     ) -> torch.Tensor:
    """Scores (float64) of rows where sample ``sample_idx[r]`` keeps the features ``on_fn(rows)[r]``
    (bool ``(rows, F_max)``) and has the others replaced by ``base``; computed in chunks."""
    n = len(t)
    flat_t, flat_b = t.reshape(n, -1), base.reshape(n, -1)
    out = torch.empty(len(sample_idx), dtype=torch.float64, device=t.device)
    with torch.inference_mode():
        for rows in row_chunks(len(sample_idx), chunk_rows(model, t)):
            si = sample_idx[rows]
            on = torch.gather(on_fn(rows), 1, seg.rows(si))
            xr = torch.where(on, flat_t[si], flat_b[si]).view(len(si), *t.shape[1:])
            out[rows] = scores_of(model, xr, tg[si], score)[0]
            if bar is not None:
                bar.update(len(si))
    return out


def spread_features(values: torch.Tensor, seg: Segmentation, like: torch.Tensor, spread: str) -> torch.Tensor:
    """Per-feature values ``(N, F_max)`` onto the input entries of each feature (``copy`` or ``split``)."""
    n = len(like)
    labels = seg.rows(torch.arange(n, device=like.device))
    vals = torch.gather(torch.nan_to_num(values, nan=0.0), 1, labels)
    if spread == "split":
        sizes = torch.zeros_like(values, dtype=torch.float64)
        sizes.scatter_add_(1, labels, torch.ones_like(vals, dtype=torch.float64))
        vals = vals / torch.gather(sizes, 1, labels).to(vals.dtype)
    return vals.to(like.dtype).view_as(like)


class _FeatureMethod(Explainer):
    needs_gradients = False
    resolves_own_targets = True

    def _validate_common(self):
        seg = self.segmentation
        if isinstance(seg, str):
            check_choice(seg, SEGMENTATIONS, "segmentation", "pass segmentation='auto' or an integer label array")
        check_baseline_param(self.baseline)
        check_choice(self.score, SCORES, "score")
        check_choice(self.spread, SPREADS, "spread")
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    def _setup(self, model, t, targets):
        seg = segment(t, self.segmentation, self.segment_size, bool(self.per_channel), self.segment_params)
        base = resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))
        fx, tg = full_scores(model, t, targets, self.score)
        return seg, base, fx, tg

    def _extras(self, seg, fx, values, **more):
        ex = {"coefficients": values.cpu().numpy(), "n_features": seg.n_features.copy(), "score": fx.cpu().numpy()}
        ex.update({k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in more.items()})
        if seg.spatial is not None:
            ex["segments"] = seg.spatial
        return ex


_DOC = """
    segmentation : 'auto' | 'fixed' | 'quickshift' | 'slic' | int array
        The features, as for ``lime``: ``'auto'`` is ``'fixed'`` blocks of ``segment_size`` in 1D and
        quickshift superpixels in 2D; an integer array is your own feature mask (one sample's shape or
        the batch's).
    segment_size : int or tuple
        Block size for ``'fixed'``.
    per_channel : bool
        Every (channel, segment) pair is its own feature.
    baseline : 'zero' | 'mean' | 'blur' | 'noise' | float | array
        The value of a removed feature (names as for ``integrated_gradients``).
    score : 'logit' | 'prob'
        The explained score of the target class.
    spread : 'copy' | 'split'
        Every entry of a feature gets its value (``copy``, Captum's convention) or an equal share.
    progress : bool
        A tqdm bar on stderr counting model rows."""


@register("feature_ablation")
class FeatureAblation(_FeatureMethod):
    """Feature ablation (Captum's ``FeatureAblation``): a feature's value is ``score(x) − score(x with
    that feature replaced by the baseline)``. One model row per feature and sample.
    """ + _DOC + """

    ``extras``: ``coefficients`` ``(N, F)`` (NaN-padded), ``score``, ``n_features``, ``segments``.
    """

    name = "feature_ablation"

    def __init__(self, segmentation="auto", segment_size: int | tuple[int, ...] = 4, per_channel: bool = False,
                 baseline="zero", score: str = "logit", spread: str = "copy", segment_params: dict | None = None,
                 blur_sigma: float = 0.1, seed: int = 0, progress: bool = False) -> None:
        self.segmentation = segmentation
        self.segment_size = segment_size
        self.per_channel = per_channel
        self.baseline = baseline
        self.score = score
        self.spread = spread
        self.segment_params = segment_params
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress

    def _validate(self):
        self._validate_common()

    def _compute(self, model, t, targets):
        seg, base, fx, tg = self._setup(model, t, targets)
        n, dev = len(t), t.device
        nf = seg.n_features
        f_max = int(nf.max())
        si_np = np.repeat(np.arange(n), nf)
        fi_np = np.concatenate([np.arange(f) for f in nf])
        si, fi = torch.as_tensor(si_np, device=dev), torch.as_tensor(fi_np, device=dev)
        feats = torch.arange(f_max, device=dev)
        bar = progress_bar(bool(self.progress), len(si), self.name)
        try:
            s = score_coalitions(model, t, base, seg, tg, self.score, si,
                                 lambda rows: feats[None] != fi[rows][:, None], bar)
        finally:
            bar.close()
        values = torch.full((n, f_max), float("nan"), dtype=torch.float64, device=dev)
        values[si, fi] = fx[si] - s
        return spread_features(values, seg, t, self.spread), tg.cpu().numpy(), self._extras(seg, fx, values)


@register("shapley_sampling")
class ShapleySampling(_FeatureMethod):
    """Shapley value sampling (Castro et al., 2009; Captum's ``ShapleyValueSampling``): for random
    permutations of the features, switch them on one by one from the baseline and credit each feature
    with the score change it causes; average over permutations. The values of a sample sum to
    ``score(x) − score(baseline)`` for any number of permutations (efficiency) and converge to the
    exact Shapley values. Model rows per sample: ``n_permutations × (F − 1)`` plus the baseline.

    Parameters
    ----------
    n_permutations : int
        Permutations per sample (Captum's ``n_samples``).
    seed : int
        Permutations come from ``seed`` and each sample's values: the same alone or in a batch.
    """ + _DOC + """

    ``extras``: ``coefficients`` (the Shapley values ``(N, F)``, NaN-padded), ``score``,
    ``baseline_score``, ``n_features``, ``segments``.
    """

    name = "shapley_sampling"
    stochastic = True

    def __init__(self, segmentation="auto", segment_size: int | tuple[int, ...] = 4, per_channel: bool = False,
                 n_permutations: int = 25, baseline="zero", score: str = "logit", spread: str = "copy",
                 segment_params: dict | None = None, blur_sigma: float = 0.1, seed: int = 0,
                 progress: bool = False) -> None:
        self.segmentation = segmentation
        self.segment_size = segment_size
        self.per_channel = per_channel
        self.n_permutations = n_permutations
        self.baseline = baseline
        self.score = score
        self.spread = spread
        self.segment_params = segment_params
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress

    def _validate(self):
        self._validate_common()
        check_number(self.n_permutations, "n_permutations", minimum=1, integer=True)

    def _compute(self, model, t, targets):
        seg, base, fx, tg = self._setup(model, t, targets)
        n, dev, p_ = len(t), t.device, int(self.n_permutations)
        nf = seg.n_features
        f_max = int(nf.max())
        fb = full_scores(model, base, tg, self.score)[0]
        # rank[i, p, f]: the position of feature f in sample i's permutation p (f_max for padding)
        rank = np.full((n, p_, f_max), f_max, dtype=np.int64)
        for i, sd in enumerate(sample_seeds(t, int(self.seed))):
            r = np.random.default_rng(sd)
            f = int(nf[i])
            rank[i, :, :f] = np.argsort(r.random((p_, f)), axis=1).argsort(1)
        rank_t = torch.as_tensor(rank, device=dev)
        # rows (i, p, k) for k = 0 .. F_i - 2: the first k + 1 features of the permutation switched on
        steps = np.maximum(nf - 1, 0)
        si_np = np.repeat(np.arange(n), steps * p_)
        pi_np = np.concatenate([np.repeat(np.arange(p_), s) for s in steps])
        ki_np = np.concatenate([np.tile(np.arange(s), p_) for s in steps])
        si, pi, ki = (torch.as_tensor(a, device=dev, dtype=torch.long) for a in (si_np, pi_np, ki_np))
        bar = progress_bar(bool(self.progress), len(si), self.name)
        try:
            s = score_coalitions(model, t, base, seg, tg, self.score, si,
                                 lambda rows: rank_t[si[rows], pi[rows]] <= ki[rows][:, None], bar)
        finally:
            bar.close()
        # S[i, p, k]: score with the first k+1 features on; k = F_i - 1 is the input itself; k = -1 the baseline
        S = torch.empty((n, p_, f_max + 1), dtype=torch.float64, device=dev)
        S[:, :, 0] = fb[:, None]
        S[si, pi, ki + 1] = s
        last = torch.as_tensor(nf, device=dev)
        S[torch.arange(n, device=dev)[:, None], torch.arange(p_, device=dev)[None], last[:, None]] = fx[:, None]
        r_c = rank_t.clamp(max=f_max - 1)
        gain = torch.gather(S, 2, r_c + 1) - torch.gather(S, 2, r_c)
        values = gain.mean(1)
        values[torch.arange(f_max, device=dev)[None] >= last[:, None]] = float("nan")
        maps = spread_features(values, seg, t, self.spread)
        return maps, tg.cpu().numpy(), self._extras(seg, fx, values, baseline_score=fb)
