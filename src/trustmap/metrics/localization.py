"""Localization: does the map point at a known region (a synthetic task's ``Dataset.mask``, or
any region mask a user draws)?

Maps are ranked and normalized by the one convention of :mod:`trustmap.metrics.masking` (ranks
over all entries of a sample; with ``channels='mean'`` the map is averaged over channels and a
position counts as in the region when any channel's entry is). A region mask has the maps'
shape, or the maps' shape without the channel axis (one region for every channel). Per sample:

=====================  ========================================================================  ======
metric                 definition                                                                range
=====================  ========================================================================  ======
``pointing_game``      1 when the top-ranked entry lies in the region (dilated by                {0, 1}
                       ``tolerance`` positions along each spatial axis), else 0
``mass_inside``        share of the map's positive mass inside the region (relevance             [0, 1]
                       mass accuracy, Arras et al. 2022); NaN when the map has no
                       positive mass (use ``normalize='abs'`` or ``'minmax'`` for signed maps)
``topk_iou``           IoU of the map's top ``k`` entries with the region; ``k`` = the           [0, 1]
                       region's size (relevance rank accuracy's choice) or ``frac`` of M
``auprc``              average precision of the map's values as scores for region                [0, 1]
                       membership (ties grouped as in scikit-learn)
=====================  ========================================================================  ======

A sample whose region is empty (e.g. a null class) gets NaN and is left out of the mean.
Higher is better for all four.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..attribution import Attribution
from ..errors import InputError, ShapeError
from ..layout import Layout, as_layout
from ..models.base import check_array
from .masking import Masking, MetricResult, budget_count, check_frac, importance, make_masking, rank_entries

__all__ = ["pointing_game", "mass_inside", "topk_iou", "auprc", "prepare_region"]


def _maps_and_layout(maps, layout) -> tuple[np.ndarray, Layout, str | None]:
    if isinstance(maps, Attribution):
        return np.asarray(maps.internal(), dtype=np.float64), Layout(maps.layout), maps.method
    arr = check_array(maps, "maps")
    arr = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr
    lay = as_layout(layout)
    if lay is None:
        from ..data.loaders import guess_layout

        lay = guess_layout(arr.shape)
    return np.asarray(lay.to_internal(arr), dtype=np.float64), lay, None


def prepare_region(maps, mask, layout=None) -> tuple[np.ndarray, np.ndarray, str | None]:
    """``(maps, region)`` as internal ``(N, C, *spatial)`` arrays (float64, bool)."""
    m, lay, method = _maps_and_layout(maps, layout)
    if mask is None:
        raise InputError("a ground-truth region is needed", parameter="mask",
                         expected="a boolean array with the maps' shape", got=None,
                         fix="pass mask=dataset.mask (synthetic tasks) or your own region mask")
    g = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if g.dtype == object or g.dtype.kind not in "biuf":
        raise InputError("mask must be boolean or 0/1", parameter="mask", expected="a bool array", got=str(g.dtype),
                         fix="pass mask.astype(bool)")
    if g.dtype.kind != "b":
        if not np.isin(g, (0, 1)).all():
            raise InputError("mask must be boolean or 0/1", parameter="mask", expected="values 0 and 1",
                             got="other values", fix="threshold it: mask > 0")
        g = g.astype(bool)
    caller = lay.from_internal(m) if lay.channel_pos is not None or m.shape[1] == 1 else None
    caller_shape = tuple(caller.shape) if caller is not None else None
    if caller_shape is not None and tuple(g.shape) == caller_shape:
        gi = np.asarray(lay.to_internal(g))
    elif tuple(g.shape) == (m.shape[0],) + tuple(m.shape[2:]):  # one region for every channel
        gi = np.broadcast_to(g[:, None], m.shape)
    else:
        raise ShapeError("the region mask does not match the maps", parameter="mask",
                         expected=f"shape {caller_shape} (the maps') or {(m.shape[0],) + tuple(m.shape[2:])} "
                                  "(one region for all channels)",
                         got=f"shape {tuple(g.shape)}", fix="pass one region mask per map, in the maps' layout")
    return m, np.ascontiguousarray(gi), method


def _collapse(m: np.ndarray, g: np.ndarray, mk: Masking) -> tuple[np.ndarray, np.ndarray]:
    """``channels='mean'``: one map (the channel mean) and one region (any channel) per position."""
    if mk.channels == "mean" and m.shape[1] > 1:
        return m.mean(1, keepdims=True), g.any(1, keepdims=True)
    return m, g


def _ranks(m: np.ndarray, mk: Masking) -> np.ndarray:
    """Ranks over all entries of each sample (0 = most important), by the convention's importance."""
    total = Masking(normalize=mk.normalize, budget="total", seed=mk.seed)
    return rank_entries(importance(torch.from_numpy(m), total), total).numpy()


def _empty_nan(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    empty = ~region.reshape(len(region), -1).any(1)
    values = values.astype(np.float64)
    values[empty] = np.nan
    return values


def _result(name: str, per: np.ndarray, params: dict, mk: Masking, extras: dict | None = None) -> MetricResult:
    value = float(np.nanmean(per)) if np.isfinite(per).any() else math.nan
    ex = {"n_defined": int(np.isfinite(per).sum())}
    ex.update(extras or {})
    return MetricResult(name, value, per, True, params, mk.record(), ex)


def _dilate(region: np.ndarray, tolerance: int) -> np.ndarray:
    if tolerance <= 0:
        return region
    t = torch.from_numpy(region.astype(np.float32))
    n, c = t.shape[:2]
    out = t
    for ax in range(2, t.ndim):  # separable max filter, one spatial axis at a time
        moved = out.movedim(ax, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        flat = torch.nn.functional.max_pool1d(flat, 2 * tolerance + 1, stride=1, padding=tolerance)
        out = flat.reshape(shape).movedim(-1, ax)
    return out.numpy() > 0.5


def pointing_game(maps, mask, *, tolerance: int = 0, layout=None, masking: Masking | None = None,
                  normalize: str | None = None, channels: str = "each", seed: int = 0) -> MetricResult:
    """Hit rate of the map's top entry in the region (1 per hit); see the module docstring.

    Parameters
    ----------
    maps : Attribution or array
        One map per sample; an array is read in ``layout`` (guessed from its shape when ``None``).
    mask : bool or 0/1 array
        The known region: the maps' shape, or their shape without the channel axis (one region
        for every channel), e.g. ``dataset.mask``.
    tolerance : int, default 0
        Dilate the region by this many positions along each spatial axis before testing the hit.
    layout : str or Layout, optional
        Layout of an array ``maps`` and of ``mask``.
    masking : Masking, optional
        The whole ranking convention; wins over ``normalize``, ``channels`` and ``seed``.
    normalize : {None, 'abs', 'minmax', ...}, optional
        How map values become importance (``None``: the signed value).
    channels : {'each', 'mean'}, default 'each'
        ``'mean'`` ranks the channel-mean map; a position is in the region when any channel's is.
    seed : int, default 0
        Seed of the random tie-break.

    Returns
    -------
    MetricResult
        ``value`` is the mean hit rate in [0, 1] over samples with a non-empty region; ``per_sample``
        holds 1, 0 or NaN (empty region).

    Raises
    ------
    InputError
        ``tolerance`` is not an int >= 0, ``mask`` is missing or not boolean / 0-1.
    ShapeError
        ``mask`` does not match the maps.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import pointing_game
    >>> maps = np.array([[0.0, 0.0, 3.0, 2.0, 0.0, 0.0]])
    >>> mask = np.array([[0, 0, 1, 1, 0, 0]], dtype=bool)
    >>> pointing_game(maps, mask).value
    1.0
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise InputError("tolerance must be an int >= 0", parameter="tolerance", expected="an int >= 0",
                         got=tolerance, fix="e.g. tolerance=2 (positions)")
    mk = make_masking(masking, normalize=normalize, channels=channels, seed=seed)
    m, g, method = prepare_region(maps, mask, layout)
    m, g = _collapse(m, g, mk)
    top = _ranks(m, mk) == 0
    hits = (top & _dilate(g, int(tolerance))).reshape(len(m), -1).any(1)
    return _result("pointing_game", _empty_nan(hits, g), {"tolerance": int(tolerance), "method": method}, mk)


def mass_inside(maps, mask, *, layout=None, masking: Masking | None = None, normalize: str | None = None,
                channels: str = "each") -> MetricResult:
    """Share of the map's positive mass inside the region; see the module docstring.

    Parameters
    ----------
    maps : Attribution or array
        One map per sample; an array is read in ``layout`` (guessed from its shape when ``None``).
    mask : bool or 0/1 array
        The known region, in the maps' shape or without their channel axis.
    layout : str or Layout, optional
        Layout of an array ``maps`` and of ``mask``.
    masking : Masking, optional
        The whole convention; wins over ``normalize`` and ``channels``.
    normalize : {None, 'abs', 'minmax', ...}, optional
        How map values become importance; use ``'abs'`` or ``'minmax'`` for signed maps.
    channels : {'each', 'mean'}, default 'each'
        ``'mean'`` scores the channel-mean map against the any-channel region.

    Returns
    -------
    MetricResult
        ``value`` is the mean share in [0, 1]; a sample without positive mass or with an empty
        region is NaN and left out (``extras['n_no_positive_mass']`` counts the former).

    Raises
    ------
    InputError
        ``mask`` is missing or not boolean / 0-1.
    ShapeError
        ``mask`` does not match the maps.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import mass_inside
    >>> maps = np.array([[0.0, 1.0, 3.0, 0.0]])
    >>> mass_inside(maps, np.array([[0, 0, 1, 1]], dtype=bool)).value
    0.75
    """
    mk = make_masking(masking, normalize=normalize, channels=channels)
    m, g, method = prepare_region(maps, mask, layout)
    m, g = _collapse(m, g, mk)
    v = importance(torch.from_numpy(m), mk).clamp_min(0).numpy().reshape(len(m), -1)
    gf = g.reshape(len(g), -1)
    total = v.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, (v * gf).sum(1) / np.where(total > 0, total, 1.0), np.nan)
    share = _empty_nan(share, g)
    return _result("mass_inside", share, {"method": method}, mk, {"n_no_positive_mass": int((total <= 0).sum())})


def topk_iou(maps, mask, *, k: int | None = None, frac: float | None = None, layout=None,
             masking: Masking | None = None, normalize: str | None = None, channels: str = "each",
             seed: int = 0) -> MetricResult:
    """IoU of the top ``k`` entries with the region (``k``: the region's size per sample unless
    ``k`` or ``frac`` is given); see the module docstring.

    Parameters
    ----------
    maps : Attribution or array
        One map per sample; an array is read in ``layout`` (guessed from its shape when ``None``).
    mask : bool or 0/1 array
        The known region, in the maps' shape or without their channel axis.
    k : int, optional
        Number of top entries, in ``[1, entries per sample]``.
    frac : float, optional
        Share of the entries instead of ``k`` (give at most one of the two).
    layout, masking, normalize, channels, seed
        As in :func:`pointing_game`.

    Returns
    -------
    MetricResult
        ``value`` is the mean IoU in [0, 1] over samples with a non-empty region.

    Raises
    ------
    InputError
        Both ``k`` and ``frac`` are given, ``k`` is out of range, ``frac`` is not in (0, 1], or
        ``mask`` is missing or not boolean / 0-1.
    ShapeError
        ``mask`` does not match the maps.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import topk_iou
    >>> maps = np.array([[0.0, 0.0, 3.0, 2.0, 0.0, 0.0]])
    >>> mask = np.array([[0, 0, 1, 1, 0, 0]], dtype=bool)
    >>> topk_iou(maps, mask).value
    1.0
    >>> topk_iou(maps, mask, k=1).value
    0.5
    """
    if k is not None and frac is not None:
        raise InputError("give k or frac, not both", parameter="k/frac", expected="one of them (or neither)",
                         got=f"k={k!r}, frac={frac!r}", fix="drop one")
    mk = make_masking(masking, normalize=normalize, channels=channels, seed=seed)
    m, g, method = prepare_region(maps, mask, layout)
    m, g = _collapse(m, g, mk)
    ranks = _ranks(m, mk)
    n = len(m)
    rf, gf = ranks.reshape(n, -1), g.reshape(n, -1)
    size = rf.shape[1]
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= size:
            raise InputError("k must be an int in [1, entries]", parameter="k", expected=f"1 <= k <= {size}", got=k,
                             fix="pass k=None to use the region's size")
        kk = np.full(n, int(k))
    elif frac is not None:
        kk = np.full(n, budget_count(check_frac(frac), size))
    else:
        kk = gf.sum(1)
    top = rf < kk[:, None]
    inter = (top & gf).sum(1)
    union = (top | gf).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    params: dict[str, Any] = {"k": None if k is None else int(k), "frac": frac, "method": method}
    return _result("topk_iou", _empty_nan(iou, g), params, mk)


def average_precision_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average precision per row (scikit-learn's definition: tied scores form one threshold).

    NaN for a row without positives.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n, m = s.shape
    order = np.argsort(-s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, 1)
    ys = np.take_along_axis(y, order, 1).astype(np.float64)
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = ss[:, 1:] != ss[:, :-1]
    run = np.cumsum(starts.ravel()) - 1                       # global run id per entry
    ends = np.zeros((n, m), dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    ends[:, -1] = True
    cum_tp = np.cumsum(ys, axis=1)
    count = np.broadcast_to(np.arange(1, m + 1), (n, m))
    prec_end = (cum_tp / count)[ends]                         # precision at each run's end, by run id
    contrib = ys.ravel() * prec_end[run]
    pos = ys.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = contrib.reshape(n, m).sum(1) / pos
    ap[pos == 0] = np.nan
    return ap


def auprc(maps, mask, *, layout=None, masking: Masking | None = None, normalize: str | None = None,
          channels: str = "each") -> MetricResult:
    """Average precision of the map as a detector of the region; see the module docstring.

    Parameters
    ----------
    maps : Attribution or array
        One map per sample; an array is read in ``layout`` (guessed from its shape when ``None``).
    mask : bool or 0/1 array
        The known region, in the maps' shape or without their channel axis.
    layout, masking, normalize, channels
        As in :func:`mass_inside`.

    Returns
    -------
    MetricResult
        ``value`` is the mean average precision in [0, 1]; ``extras['chance']`` is the mean region
        share (the score of a random map).

    Raises
    ------
    InputError
        ``mask`` is missing or not boolean / 0-1.
    ShapeError
        ``mask`` does not match the maps.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import auprc
    >>> maps = np.array([[0.0, 0.0, 3.0, 2.0, 0.0, 0.0]])
    >>> auprc(maps, np.array([[0, 0, 1, 1, 0, 0]], dtype=bool)).value
    1.0
    """
    mk = make_masking(masking, normalize=normalize, channels=channels)
    m, g, method = prepare_region(maps, mask, layout)
    m, g = _collapse(m, g, mk)
    v = importance(torch.from_numpy(m), mk).numpy().reshape(len(m), -1)
    ap = average_precision_rows(v, g.reshape(len(g), -1))
    base = g.reshape(len(g), -1).mean(1)
    return _result("auprc", _empty_nan(ap, g), {"method": method}, mk,
                   {"chance": float(np.nanmean(np.where(base > 0, base, np.nan))) if (base > 0).any() else math.nan})
