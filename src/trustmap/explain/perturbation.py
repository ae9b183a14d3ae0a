"""Occlusion: slide a window over the input, replace it by a baseline, record the score drop.

Forward passes only, so it works for every model kind (ONNX included). All samples × windows are
planned as one list of rows; each model call takes a chunk of rows bounded by the model's memory
budget (``Model.max_batch`` or ``budget_bytes``), whatever mix of samples it holds.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..errors import InputError, ShapeError
from .base import Explainer, check_choice, check_number, chunk_rows, row_chunks
from .registry import register
from .segments import SCORES, check_baseline_param, full_scores, progress_bar, resolve_baseline, scores_of

__all__ = ["Occlusion", "window_plan"]


def _axis_tuple(value, nsp: int, parameter: str, sizes: tuple[int, ...]) -> tuple[int, ...]:
    vals = (value,) * nsp if np.isscalar(value) else tuple(value)
    if len(vals) != nsp:
        raise ShapeError(f"{parameter} has the wrong number of axes", parameter=parameter,
                         expected=f"an int or {nsp} ints (one per spatial axis of the input)", got=value,
                         fix=f"pass {parameter}={vals[0] if vals else 1}")
    for v, s in zip(vals, sizes):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"invalid {parameter}", parameter=parameter, expected="ints >= 1", got=value,
                             fix=f"pass {parameter}=1")
        if parameter == "window" and v > s:
            raise ShapeError("window is larger than the input", parameter=parameter,
                             expected=f"at most {sizes} along the spatial axes", got=value,
                             fix="pass a smaller window")
    return tuple(int(v) for v in vals)


def window_plan(sizes: tuple[int, ...], window: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """Start positions ``(W, rank)`` of the windows; the last window of each axis ends at the edge, so
    every position is covered."""
    per_axis = []
    for s, w, st in zip(sizes, window, stride):
        starts = list(range(0, s - w + 1, st))
        if starts[-1] != s - w:
            starts.append(s - w)
        per_axis.append(starts)
    return np.array(list(itertools.product(*per_axis)), dtype=np.int64).reshape(-1, len(sizes))


@register("occlusion")
class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus, 2014): ``map[e] =`` mean over the windows covering entry ``e`` of
    ``score(x) − score(x with the window replaced by the baseline)``.

    Parameters
    ----------
    window : int or tuple, optional
        Window size along each spatial axis (a tuple of the input's rank). Default: a tenth of each
        axis (rounded up).
    stride : int or tuple, optional
        Step between windows along each axis. Default: the window (non-overlapping windows; the last
        window on each axis is moved back to end at the edge).
    per_channel : bool
        ``False``: a window covers all channels at once (one map shared by the channels).
        ``True``: each channel is occluded on its own (C times the passes; maps differ per channel).
    baseline : 'zero' | 'mean' | 'blur' | 'noise' | float | array
        What replaces the window; the names are those of ``integrated_gradients``. An array is one
        sample (or the batch), in internal, channels-last or spatial-only shape.
    score : 'logit' | 'prob'
        The explained score: the pre-softmax score of the target class, or its probability.
    seed : int
        For ``baseline='noise'``.
    progress : bool
        A tqdm bar on stderr counting model rows (off by default).

    With ``window=1`` and ``per_channel=True`` a linear model's map is ``w · (x − baseline)``.
    ``extras``: ``score`` (the explained score of ``x``), ``n_windows``.
    """

    name = "occlusion"
    needs_gradients = False
    resolves_own_targets = True

    def __init__(self, window: int | tuple[int, ...] | None = None, stride: int | tuple[int, ...] | None = None,
                 per_channel: bool = False, baseline="zero", score: str = "logit", blur_sigma: float = 0.1,
                 seed: int = 0, progress: bool = False) -> None:
        self.window = window
        self.stride = stride
        self.per_channel = per_channel
        self.baseline = baseline
        self.score = score
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress

    def _validate(self):
        check_baseline_param(self.baseline)
        check_choice(self.score, SCORES, "score")
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    def _compute(self, model, t, targets):
        n, c, sp = t.shape[0], t.shape[1], tuple(t.shape[2:])
        nsp = len(sp)
        win = _axis_tuple(self.window if self.window is not None else tuple(-(-s // 10) for s in sp), nsp,
                          "window", sp)
        stride = _axis_tuple(self.stride if self.stride is not None else win, nsp, "stride", sp)
        starts = window_plan(sp, win, stride)  # (Ws, nsp)
        chans = np.arange(c) if self.per_channel else np.array([-1])
        n_win = len(starts) * len(chans)
        base = resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))
        fx, tg = full_scores(model, t, targets, self.score)
        dev = t.device
        starts_t = torch.as_tensor(starts, device=dev)
        chans_t = torch.as_tensor(chans, device=dev)
        win_t = torch.as_tensor(win, device=dev)
        pos = [torch.arange(s, device=dev) for s in sp]

        def masks(wi: torch.Tensor) -> torch.Tensor:
            """(rows, C or 1, *sp) bool windows for window indices ``wi``."""
            st = starts_t[wi // len(chans)]
            m = torch.ones((len(wi), 1, *([1] * nsp)), dtype=torch.bool, device=dev)
            for ax in range(nsp):
                inside = (pos[ax][None] >= st[:, ax:ax + 1]) & (pos[ax][None] < st[:, ax:ax + 1] + win_t[ax])
                shape = [len(wi), 1] + [1] * nsp
                shape[2 + ax] = sp[ax]
                m = m & inside.view(shape)
            if self.per_channel:
                ch = chans_t[wi % len(chans)]
                m = m & (torch.arange(c, device=dev)[None] == ch[:, None]).view(len(wi), c, *([1] * nsp))
            return m

        count = torch.zeros((1, c, *sp), dtype=t.dtype, device=dev)
        for rows in row_chunks(n_win, 4096):
            count += masks(torch.arange(rows.start, rows.stop, device=dev)).to(t.dtype).sum(0, keepdim=True)
        acc = torch.zeros_like(t, dtype=torch.float64)
        total = n * n_win
        bar = progress_bar(bool(self.progress), total, "occlusion")
        try:
            with torch.inference_mode():
                for rows in row_chunks(total, chunk_rows(model, t)):
                    r = torch.arange(rows.start, rows.stop, device=dev)
                    si, wi = r // n_win, r % n_win
                    m = masks(wi)
                    xr = torch.where(m, base[si], t[si])
                    s, _ = scores_of(model, xr, tg[si], self.score)
                    diff = (fx[si] - s).view(-1, *([1] * (t.ndim - 1)))
                    acc.index_add_(0, si, (diff * m).expand(-1, c, *sp))
                    bar.update(len(r))
        finally:
            bar.close()
        maps = (acc / count.double()).to(t.dtype)
        return maps, tg.cpu().numpy(), {"score": fx.cpu().numpy(), "n_windows": int(n_win)}
