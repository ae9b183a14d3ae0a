"""Temporal saliency rescaling (Ismail et al., NeurIPS 2020), batched.

The reference implementation (and TSInterpret's) calls the base method ``T`` times to score the time
steps and then ``C`` times per relevant time step to score the channels, one sample at a time. Here
all masked copies of all samples form one plan and the base method runs over chunks of that plan.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .base import Explainer, check_choice, check_number, chunk_rows, row_chunks
from .perturbation import _axis_tuple, window_plan
from .registry import REGISTRY, get_explainer, register
from .segments import check_baseline_param, resolve_baseline

__all__ = ["TSR"]


def _minmax(v: torch.Tensor, dim: int) -> torch.Tensor:
    lo, hi = v.amin(dim, keepdim=True), v.amax(dim, keepdim=True)
    rng = hi - lo
    return torch.where(rng > 0, (v - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), torch.zeros_like(v))


@register("tsr")
class TSR(Explainer):
    """Temporal saliency rescaling: ``map[c, t] = time_score[t] · channel_score[c, t]``.

    1. The base method's map ``R`` of the input.
    2. Time score: for each time window (all channels replaced by the baseline), the total change
       ``Σ |R − R_masked|`` of the base map, min-max scaled over the windows of the sample.
    3. For windows whose time score is above its ``quantile`` (0.55 in the paper's code), the channel
       score: the same change with only channel ``c`` of that window masked, min-max scaled over the
       channels; other windows get ``0.1`` (as the reference code). With one channel the channel
       score is 1 (min-max scaling of a single value is undefined).

    Rank-generic: on 2D inputs the "time windows" are windows along both axes. Works over any
    registered base method (gradient or perturbation); on ONNX models the base must be forward-only.

    Parameters
    ----------
    base : str
        The base method (``'saliency'``, ``'integrated_gradients'``, ``'occlusion'``, ...).
    base_params : dict, optional
        Its parameters.
    window : int or tuple
        Time steps per window (per spatial axis); 1 is the paper's per-step rescaling.
    quantile : float
        Windows above this quantile of the time scores get channel scores.
    baseline : 'zero' | 'mean' | 'blur' | 'noise' | float | array
        The masking value (the reference code uses the input's first value; ``'zero'`` here).

    ``extras``: ``time_score`` ``(N, windows)``, ``selected`` (which windows got channel scores),
    ``n_windows``.
    """

    name = "tsr"

    def __init__(self, base: str = "saliency", base_params: dict | None = None, window: int | tuple[int, ...] = 1,
                 quantile: float = 0.55, baseline="zero", blur_sigma: float = 0.1, seed: int = 0) -> None:
        self.base = base
        self.base_params = base_params
        self.window = window
        self.quantile = quantile
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.seed = seed

    def _validate(self):
        check_choice(self.base, sorted(k for k in REGISTRY if k not in ("tsr", "activation_max")), "base",
                     "pass base='saliency' (or another registered method)")
        if self.base_params is not None and not isinstance(self.base_params, dict):
            raise InputError("base_params must be a dict", parameter="base_params", expected="a dict",
                             got=type(self.base_params).__name__, fix="e.g. base_params={'n_steps': 20}")
        check_number(self.quantile, "quantile", minimum=0, maximum=1)
        check_baseline_param(self.baseline)
        check_number(self.seed, "seed", integer=True)
        self._base = get_explainer(self.base, **(self.base_params or {}))
        self._base._validate()
        self.needs_gradients = type(self._base).needs_gradients  # forward-only bases run on ONNX models

    def _base_maps(self, model, xs: torch.Tensor, tg: torch.Tensor) -> torch.Tensor:
        return self._base._compute(model, xs, tg)[0].to(xs.dtype)

    def _compute(self, model, t, targets):
        n, c, sp = t.shape[0], t.shape[1], tuple(t.shape[2:])
        nsp, dev = len(sp), t.device
        win = _axis_tuple(self.window, nsp, "window", sp)
        starts = torch.as_tensor(window_plan(sp, win, win), device=dev)  # (W, nsp)
        n_w = len(starts)
        pos = [torch.arange(s, device=dev) for s in sp]
        boxes = torch.ones((n_w, *sp), dtype=torch.bool, device=dev)
        for ax in range(nsp):
            inside = (pos[ax][None] >= starts[:, ax:ax + 1]) & (pos[ax][None] < starts[:, ax:ax + 1] + win[ax])
            shape = [n_w] + [1] * nsp
            shape[1 + ax] = sp[ax]
            boxes = boxes & inside.view(shape)
        base = resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))
        rows_per = chunk_rows(model, t)
        r0 = self._base_maps(model, t, targets)
        # step 1: every window of every sample masked across all channels
        dt = torch.empty((n, n_w), dtype=torch.float64, device=dev)
        for rows in row_chunks(n * n_w, rows_per):
            r = torch.arange(rows.start, rows.stop, device=dev)
            si, wi = r // n_w, r % n_w
            xr = torch.where(boxes[wi][:, None], base[si], t[si])
            dt[si, wi] = (self._base_maps(model, xr, targets[si]) - r0[si]).abs().flatten(1).double().sum(1)
        tc = _minmax(dt, 1)
        thr = torch.quantile(tc, float(self.quantile), dim=1, keepdim=True)
        sel = tc > thr
        # step 2: each channel of each selected window
        fc = torch.full((n, n_w, c), 0.1, dtype=torch.float64, device=dev)
        pairs = sel.nonzero()  # (P, 2)
        if c == 1:
            fc[sel] = 1.0
        elif len(pairs):
            df = torch.empty((len(pairs), c), dtype=torch.float64, device=dev)
            chans = torch.arange(c, device=dev)
            for rows in row_chunks(len(pairs) * c, rows_per):
                r = torch.arange(rows.start, rows.stop, device=dev)
                pi, ci = r // c, r % c
                si, wi = pairs[pi, 0], pairs[pi, 1]
                m = boxes[wi][:, None] & (chans[None] == ci[:, None]).view(len(r), c, *([1] * nsp))
                xr = torch.where(m, base[si], t[si])
                df[pi, ci] = (self._base_maps(model, xr, targets[si]) - r0[si]).abs().flatten(1).double().sum(1)
            fc[pairs[:, 0], pairs[:, 1]] = _minmax(df, 1)
        vals = tc[..., None] * fc  # (n, W, c)
        cover = boxes.to(torch.float64).flatten(1)  # (W, P)
        count = cover.sum(0).clamp_min(1)
        maps = torch.einsum("nwc,wp->ncp", vals, cover) / count
        extras = {"time_score": tc.cpu().numpy(), "selected": sel.cpu().numpy(), "n_windows": int(n_w)}
        return maps.to(t.dtype).view_as(t), targets.cpu().numpy(), extras
