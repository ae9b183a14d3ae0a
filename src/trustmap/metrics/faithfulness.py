"""Faithfulness: does the model's output follow what the map says matters?

All metrics mask inputs by the one convention of :mod:`trustmap.metrics.masking` (per-channel
maps, raw values unless ``normalize=`` is asked for, ties broken by a fixed random order,
removed entries set to the recorded baseline) and return a :class:`MetricResult` with the
per-sample values.

=============================  ==============================================================  ========
metric                         definition (per sample; ``Y`` = target score on ``x``)          better
=============================  ==============================================================  ========
``average_drop``               keep the top ``frac`` of the map, the rest -> baseline; score   lower
                               ``O``: ``100 * max(0, Y - O) / Y`` (Chattopadhay et al. 2018)
``increase_in_confidence``     ``100 * [O > Y]`` on the same input                             higher
``deletion``                   remove entries in map order (most important first) in           lower
                               ``steps`` equal shares; area under score vs removed fraction
``insertion``                  start from the baseline, insert entries in map order; area      higher
``faithfulness_correlation``   Pearson correlation, over ``n_runs`` random subsets ``S``       higher
                               (``subset`` of the entries), of ``sum(map[S])`` with
                               ``Y - score(x with S -> baseline)`` (Bhatt et al. 2020)
``r2_at_budget``               the TRUST localizer's generalized partial R² of the map used    higher
                               as a mask: ``1 - mean risk(x) / mean risk(x with the top k
                               entries -> baseline)``; ``k`` from ``tau`` (the localizer's
                               budget) or ``frac``; ``soft=True`` uses a [0, 1] map as δ
=============================  ==============================================================  ========

Scores are softmax probabilities of the target (``output='prob'``, the definitions' own) except
for the faithfulness correlation, whose default is the pre-softmax score (``output='logit'``;
for a linear model the oracle map then correlates exactly 1). AUCs are trapezoids over the
removed (inserted) fraction in [0, 1], so they lie in the score's range.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import InputError, TargetError
from .masking import (Masking, MetricResult, baseline_like, budget_count, check_frac, check_int, check_output, chunks,
                      group_size, importance, make_masking, perturbed_scores, prepare, rank_entries, target_scores)

__all__ = ["average_drop", "increase_in_confidence", "drop_increase", "deletion", "insertion",
           "faithfulness_correlation", "r2_at_budget"]


def _setup(model, X, maps, target, layout, masking, baseline, normalize, budget, channels, seed, blur_sigma,
           reference, need_ranks: bool = True):
    mk = make_masking(masking, baseline=baseline, normalize=normalize, budget=budget, channels=channels, seed=seed,
                      blur_sigma=blur_sigma)
    p = prepare(model, X, maps, target=target, layout=layout)
    base, base_vals = baseline_like(p.x, mk, reference, p.layout, p.model)
    imp = importance(p.maps, mk)
    ranks = rank_entries(imp, mk) if need_ranks else None
    return p, mk, base, base_vals, imp, ranks


def _check_int(v, parameter: str, minimum: int) -> int:
    return check_int(v, parameter, minimum, example=20)


# ---- drop / increase -------------------------------------------------------------------------------
def drop_increase(model, X, maps, *, frac: float = 0.3, target=None, layout=None, output: str = "prob",
                  relative: bool = True, tolerance: float | None = None, masking: Masking | None = None,
                  baseline: Any = "zero", normalize: str | None = None, budget: str = "total", channels: str = "each",
                  seed: int = 0, blur_sigma: float | None = None, reference=None
                  ) -> tuple[MetricResult, MetricResult]:
    """Average drop (%) and increase in confidence (%) from one masked forward pass.

    The top ``frac`` of each map's entries are kept, the rest set to the baseline (the seeds'
    protocol: ``frac=0.3`` on MNIST-1D, zero baseline). ``relative=False`` reports the absolute
    drop ``100 * max(0, Y - O)`` (in percentage points of the score) instead of the relative one.
    Scores are computed in float64 from the model's logits; an increase smaller than 4 ulps of
    the model's dtype (e.g. ``1 - 1e-9`` against ``1 - 1e-8`` for a saturated float32 softmax)
    is rounding and does not count; ``tolerance`` sets that number of ulps (0: any increase).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    frac : float, default 0.3
        Share of each map's entries kept, in (0, 1].
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` (and of an array ``maps``) when the shape is ambiguous.
    output : {'prob', 'logit'}, default 'prob'
    relative : bool, default True
    tolerance : float, optional
        Ulps of the model's dtype below which an increase does not count (default 4).
    masking : Masking, optional
        The whole masking convention; wins over the keywords below.
    baseline, normalize, budget, channels, seed, blur_sigma, reference
        The masking convention of :mod:`trustmap.metrics.masking` (``baseline='zero'``,
        ``normalize=None``, ``budget='total'``, ``channels='each'``, ``seed=0``).

    Returns
    -------
    (MetricResult, MetricResult)
        Average drop (lower is better) and increase in confidence (higher is better); ``extras``
        hold ``clean_score``, ``masked_score`` and ``targets``.

    Raises
    ------
    InputError
        ``frac``, ``output``, ``tolerance`` or a masking keyword out of range.
    ShapeError, LayoutError
        ``X`` does not fit the model or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import drop_increase
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> drop, inc = drop_increase(model, X, np.array([[[0.0, 0, 3, 2, 0, 0]]]), frac=1 / 3)
    >>> drop.value, inc.value  # keeping positions 2 and 3 keeps the score
    (0.0, 0.0)
    """
    frac = check_frac(frac)
    output = check_output(output)
    if tolerance is not None and (not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool)
                                  or not float(tolerance) >= 0):
        raise InputError("tolerance must be >= 0", parameter="tolerance", expected="a number of ulps >= 0",
                         got=tolerance, fix="tolerance=None (4 ulps) or 0 (count any increase)")
    p, mk, base, base_vals, _imp, ranks = _setup(model, X, maps, target, layout, masking, baseline, normalize,
                                                 budget, channels, seed, blur_sigma, reference)
    k = budget_count(frac, group_size(tuple(p.x.shape), mk))
    y_clean = target_scores(p.model, p.x, p.targets, output)
    o = perturbed_scores(p.model, p.x, base, p.targets, 1, lambda i, j: ranks[i] >= k, output)[:, 0]
    if relative:
        drop = 100.0 * np.maximum(0.0, y_clean - o) / np.maximum(np.abs(y_clean), np.finfo(np.float64).tiny)
    else:
        drop = 100.0 * np.maximum(0.0, y_clean - o)
    # an "increase" below the model's floating-point resolution (4 ulps of its dtype) is rounding, not evidence
    ulps = 4.0 if tolerance is None else float(tolerance)
    tol = ulps * float(torch.finfo(p.model.dtype).eps) * np.maximum(np.abs(y_clean), np.abs(o))
    inc = 100.0 * ((o - y_clean) > tol).astype(np.float64)
    params = {"frac": frac, "k": k, "output": output, "relative": bool(relative), "tolerance_ulps": ulps,
              "method": p.method}
    rec = mk.record(base_vals)
    extras = {"clean_score": y_clean, "masked_score": o, "targets": p.targets}
    return (MetricResult("average_drop", float(drop.mean()), drop, False, params, rec, extras),
            MetricResult("increase_in_confidence", float(inc.mean()), inc, True, params, rec, extras))


def average_drop(model, X, maps, *, frac: float = 0.3, **kw) -> MetricResult:
    """Average drop in % (lower is better); see :func:`drop_increase` for the parameters.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    frac : float, default 0.3
        Share of each map's entries kept, in (0, 1].
    **kw
        The other keywords of :func:`drop_increase`: ``target``, ``layout``, ``output``,
        ``relative``, ``tolerance``, ``masking``, ``baseline``, ``normalize``, ``budget``,
        ``channels``, ``seed``, ``blur_sigma``, ``reference``.

    Returns
    -------
    MetricResult
        ``value``: the mean of ``100 * max(0, Y - O) / Y`` over samples.

    Raises
    ------
    InputError, ShapeError, LayoutError, TargetError, ModelLoadError
        As :func:`drop_increase`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import average_drop
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> average_drop(model, X, np.array([[[0.0, 0, 3, 2, 0, 0]]]), frac=1 / 3).value
    0.0
    >>> round(average_drop(model, X, np.array([[[3.0, 2, 0, 0, 0, 1]]]), frac=1 / 3).value)  # p: 1 -> 0.5
    50
    """
    return drop_increase(model, X, maps, frac=frac, **kw)[0]


def increase_in_confidence(model, X, maps, *, frac: float = 0.3, **kw) -> MetricResult:
    """Increase in confidence in % of samples (higher is better); see :func:`drop_increase`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    frac : float, default 0.3
        Share of each map's entries kept, in (0, 1].
    **kw
        The other keywords of :func:`drop_increase`: ``target``, ``layout``, ``output``,
        ``relative``, ``tolerance``, ``masking``, ``baseline``, ``normalize``, ``budget``,
        ``channels``, ``seed``, ``blur_sigma``, ``reference``.

    Returns
    -------
    MetricResult
        ``value``: the share (in %) of samples whose kept-top-``frac`` score beats the clean one.

    Raises
    ------
    InputError, ShapeError, LayoutError, TargetError, ModelLoadError
        As :func:`drop_increase`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import increase_in_confidence
    >>> lin = torch.nn.Linear(6, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> increase_in_confidence(model, X, np.array([[[0.0, 0, 3, 2, 0, 0]]]), frac=1 / 3).value
    0.0
    """
    return drop_increase(model, X, maps, frac=frac, **kw)[1]


# ---- deletion / insertion --------------------------------------------------------------------------
def _steps(steps, m: int) -> int:
    if isinstance(steps, str) and steps == "auto":
        return int(min(m, 100))
    return _check_int(steps, "steps", 1)


def _curve(kind: str, model, X, maps, *, steps, target, layout, output, masking, baseline, normalize, budget,
           channels, seed, blur_sigma, reference) -> MetricResult:
    output = check_output(output)
    p, mk, base, base_vals, _imp, ranks = _setup(model, X, maps, target, layout, masking, baseline, normalize,
                                                 budget, channels, seed, blur_sigma, reference)
    m = group_size(tuple(p.x.shape), mk)
    s = _steps(steps, m)
    counts = torch.as_tensor(np.round(np.linspace(0, m, s + 1)).astype(np.int64), device=p.x.device)
    fractions = counts.cpu().numpy() / m
    shape = (-1,) + (1,) * (p.x.ndim - 1)
    if kind == "deletion":
        def removed(i, j):
            return ranks[i] < counts[j].reshape(shape)
    else:
        def removed(i, j):
            return ranks[i] >= counts[j].reshape(shape)
    curves = perturbed_scores(p.model, p.x, base, p.targets, s + 1, removed, output)
    auc = np.trapezoid(curves, fractions, axis=1) if hasattr(np, "trapezoid") else np.trapz(curves, fractions, axis=1)
    params = {"steps": s, "output": output, "method": p.method}
    extras = {"fractions": fractions, "curves": curves, "mean_curve": curves.mean(0), "targets": p.targets}
    return MetricResult(kind, float(auc.mean()), auc, kind == "insertion", params, mk.record(base_vals), extras)


def deletion(model, X, maps, *, steps: int | str = "auto", target=None, layout=None, output: str = "prob",
             masking: Masking | None = None, baseline: Any = "zero", normalize: str | None = None,
             budget: str = "total", channels: str = "each", seed: int = 0, blur_sigma: float | None = None,
             reference=None) -> MetricResult:
    """Deletion curve and its AUC (lower is better).

    The entries are removed (set to the baseline) in map order, most important first, in
    ``steps`` equal shares (``'auto'``: one entry per step up to 100 steps); the curve is the
    target's score after each step, from the intact input (fraction 0) to the all-baseline
    input (fraction 1). ``extras``: ``fractions``, per-sample ``curves`` ``(N, steps + 1)``,
    ``mean_curve``.

    Parameters
    ----------
    model, X, maps
        As :func:`drop_increase`.
    steps : int or 'auto', default 'auto'
    target, layout, output, masking, baseline, normalize, budget, channels, seed, blur_sigma, reference
        As :func:`drop_increase`.

    Returns
    -------
    MetricResult
        ``value``: the mean area under the curve, in the score's range.

    Raises
    ------
    InputError
        ``steps`` is not ``'auto'`` or an int >= 1, or ``output`` / a masking keyword is unknown.
    ShapeError, LayoutError, TargetError, ModelLoadError
        As :func:`drop_increase`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import deletion
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> good, bad = np.array([[[0.0, 0, 3, 2, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> round(deletion(model, X, good).value, 3), round(deletion(model, X, bad).value, 3)
    (0.624, 0.874)
    """
    return _curve("deletion", model, X, maps, steps=steps, target=target, layout=layout, output=output,
                  masking=masking, baseline=baseline, normalize=normalize, budget=budget, channels=channels,
                  seed=seed, blur_sigma=blur_sigma, reference=reference)


def insertion(model, X, maps, *, steps: int | str = "auto", target=None, layout=None, output: str = "prob",
              masking: Masking | None = None, baseline: Any = "zero", normalize: str | None = None,
              budget: str = "total", channels: str = "each", seed: int = 0, blur_sigma: float | None = None,
              reference=None) -> MetricResult:
    """Insertion curve and its AUC (higher is better): from the all-baseline input, the entries
    are put back in map order, most important first. Same parameters as :func:`deletion`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    steps : int or 'auto', default 'auto'
        Number of equal shares the entries are put back in (``'auto'``: one entry per step, up to 100).
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` (and of an array ``maps``) when the shape is ambiguous.
    output : {'prob', 'logit'}, default 'prob'
    masking : Masking, optional
        The whole masking convention; wins over the keywords below.
    baseline, normalize, budget, channels, seed, blur_sigma, reference
        The masking convention of :mod:`trustmap.metrics.masking` (``baseline='zero'``,
        ``normalize=None``, ``budget='total'``, ``channels='each'``, ``seed=0``).

    Returns
    -------
    MetricResult
        ``value``: the mean area under the curve; ``extras`` as :func:`deletion`'s.

    Raises
    ------
    InputError, ShapeError, LayoutError, TargetError, ModelLoadError
        As :func:`deletion`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import insertion
    >>> lin = torch.nn.Linear(6, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> round(insertion(model, X, np.array([[[0.0, 0, 3, 2, 0, 0]]])).value, 3)
    0.957
    """
    return _curve("insertion", model, X, maps, steps=steps, target=target, layout=layout, output=output,
                  masking=masking, baseline=baseline, normalize=normalize, budget=budget, channels=channels,
                  seed=seed, blur_sigma=blur_sigma, reference=reference)


# ---- faithfulness correlation ----------------------------------------------------------------------
def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / den
    scale = np.maximum(np.abs(a).max(1), 1e-300) * np.maximum(np.abs(b).max(1), 1e-300)
    r[~(den > 1e-12 * scale * a.shape[1])] = np.nan  # a constant row has no correlation
    return np.clip(r, -1.0, 1.0)


def faithfulness_correlation(model, X, maps, *, n_runs: int = 100, subset: float = 0.1, target=None, layout=None,
                             output: str = "logit", masking: Masking | None = None, baseline: Any = "zero",
                             normalize: str | None = None, channels: str = "each", seed: int = 0,
                             blur_sigma: float | None = None, reference=None) -> MetricResult:
    """Faithfulness correlation (Bhatt et al. 2020), higher is better.

    ``n_runs`` random subsets of ``subset`` (a share of the entries; of the positions with
    ``channels='mean'``) are drawn once from ``seed`` and used for every sample (and every
    method: common random numbers make comparisons paired). Per sample: the Pearson
    correlation between the map's sum over each subset and the score's drop when the subset is
    set to the baseline. NaN for a sample whose map sums do not vary.

    Parameters
    ----------
    model, X, maps
        As :func:`drop_increase`.
    n_runs : int, default 100
        Random subsets per sample.
    subset : float, default 0.1
        Share of the entries in each subset, in (0, 1].
    output : {'logit', 'prob'}, default 'logit'
    target, layout, masking, baseline, normalize, channels, seed, blur_sigma, reference
        As :func:`drop_increase`.

    Returns
    -------
    MetricResult
        ``value``: the mean correlation over samples where it is defined; ``extras`` hold the
        ``subsets``, ``map_sums`` and ``score_drops``.

    Raises
    ------
    InputError
        ``n_runs`` or ``subset`` out of range, or an unknown ``output`` / masking keyword.
    ShapeError, LayoutError, TargetError, ModelLoadError
        As :func:`drop_increase`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import faithfulness_correlation
    >>> lin = torch.nn.Linear(6, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle = np.array([[[0.0, 0, 5, 5, 0, 0]]])  # the linear model's own contributions
    >>> round(faithfulness_correlation(model, X, oracle, n_runs=20, subset=0.5).value, 6)
    1.0
    """
    n_runs = _check_int(n_runs, "n_runs", 2)
    subset = check_frac(subset, "subset")
    output = check_output(output)
    p, mk, base, base_vals, imp, _ = _setup(model, X, maps, target, layout, masking, baseline, normalize, "total",
                                            channels, seed, blur_sigma, reference, need_ranks=False)
    n, c = p.x.shape[:2]
    positions = mk.channels == "mean" and c > 1
    m = int(np.prod(p.x.shape[2:])) if positions else int(np.prod(p.x.shape[1:]))
    k = budget_count(subset, m)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + 17)
    keys = torch.rand((n_runs, m), generator=gen)
    chosen = torch.zeros((n_runs, m), dtype=torch.bool)
    chosen.scatter_(1, torch.topk(keys, k, dim=1).indices, True)
    chosen = chosen.to(p.x.device)
    if positions:
        sub_shape = (n_runs, 1) + tuple(p.x.shape[2:])
        masks = chosen.reshape(sub_shape).expand((n_runs,) + tuple(p.x.shape[1:]))
        flat_imp = imp[:, :1].reshape(n, -1)
    else:
        masks = chosen.reshape((n_runs,) + tuple(p.x.shape[1:]))
        flat_imp = imp.reshape(n, -1)
    sums = (flat_imp @ chosen.to(flat_imp.dtype).T).cpu().numpy()            # (N, runs)
    y_clean = target_scores(p.model, p.x, p.targets, output)
    pert = perturbed_scores(p.model, p.x, base, p.targets, n_runs, lambda i, j: masks[j], output)
    r = _pearson_rows(sums, y_clean[:, None] - pert)
    value = float(np.nanmean(r)) if np.isfinite(r).any() else math.nan
    params = {"n_runs": n_runs, "subset": subset, "subset_size": k, "output": output, "method": p.method}
    return MetricResult("faithfulness_correlation", value, r, True, params, mk.record(base_vals),
                        {"n_defined": int(np.isfinite(r).sum()), "targets": p.targets,
                         "subsets": masks.cpu().numpy().copy(), "map_sums": sums, "score_drops": y_clean[:, None] - pert})


# ---- R² at a budget --------------------------------------------------------------------------------
def r2_at_budget(model, X, y, maps, *, tau: float | None = None, frac: float | None = None, soft: bool = False,
                 r_metric: str = "prob", level: float = 0.95, n_boot: int = 2000, layout=None,
                 masking: Masking | None = None, baseline: Any = "zero", normalize: str | None = None,
                 budget: str = "total", channels: str = "each", seed: int = 0, blur_sigma: float | None = None,
                 reference=None) -> MetricResult:
    """The TRUST localizer's generalized partial R² for any map used as a mask (higher is better).

    ``R² = 1 - mean(c) / mean(m)`` with per-sample risks (``1 - p`` of the label for
    ``r_metric='prob'``, the default and the localizer's; 0/1 error for ``'acc'``; cross-entropy for
    ``'loss'``; against the labels ``y``) on the clean inputs ``c`` and on the
    inputs with the map's top ``k`` entries set to the baseline ``m``. The budget is the
    localizer's: ``tau`` (mask mass: ``k = round(tau)`` entries, per sample, or per channel
    with ``budget='per_channel'``), or ``frac`` of the entries; give one. ``soft=True`` uses the
    map itself as the mask δ (values in [0, 1], e.g. a localizer's), ``x + δ (baseline - x)``.
    The interval is the localizer's paired percentile bootstrap (``n_boot`` resamples, ``level``).
    Computed with :mod:`trustmap.localizer.r2`.

    Parameters
    ----------
    model, X, maps
        As :func:`drop_increase`.
    y : array (N,) of class indices
        The true labels.
    tau : float, optional
        Mask mass (entries removed per sample), e.g. a localizer's ``tau_``.
    frac : float, optional
        Share of the entries removed instead of ``tau``.
    soft : bool, default False
        Use the map (values in [0, 1]) as the mask itself; no budget then.
    r_metric : {'prob', 'acc', 'loss'}, default 'prob'
    level : float, default 0.95
    n_boot : int, default 2000
    layout, masking, baseline, normalize, budget, channels, seed, blur_sigma, reference
        As :func:`drop_increase`.

    Returns
    -------
    MetricResult
        ``value``: R²; ``extras`` hold the interval and the per-sample clean and masked risks.

    Raises
    ------
    InputError
        Unknown ``r_metric``, ``level`` outside (0, 1), no ``y``, not exactly one of ``tau`` /
        ``frac``, ``tau`` not positive, or a soft map outside [0, 1].
    TargetError, LabelError
        ``y`` is not class indices of the model.
    ShapeError, LayoutError, ModelLoadError
        As :func:`drop_increase`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import r2_at_budget
    >>> lin = torch.nn.Linear(6, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((2, 1, 6), np.float32)
    >>> maps = np.array([[[0.0, 0, 3, 2, 0, 0]]] * 2)
    >>> round(r2_at_budget(model, X, [1, 1], maps, frac=1 / 3).value, 3)  # removing 2 and 3 explains it all
    1.0
    """
    from ..localizer import r2 as _r2

    if r_metric not in _r2.METRICS:
        raise InputError("unknown r_metric", parameter="r_metric", expected="'prob', 'acc' or 'loss'",
                         got=r_metric, fix="r_metric='prob' (1 - probability of the label; the localizer's "
                         "default), 'acc' (error rate) or 'loss' (cross-entropy)")
    if not isinstance(level, (int, float)) or not 0 < float(level) < 1:
        raise InputError("level must be in (0, 1)", parameter="level", expected="0 < level < 1", got=level,
                         fix="e.g. level=0.95")
    n_boot = _check_int(n_boot, "n_boot", 100)
    if y is None:
        raise InputError("R² needs the labels", parameter="y", expected="one class index per sample", got=None,
                         fix="pass the true labels y")
    if not soft and (tau is None) == (frac is None):
        raise InputError("give exactly one budget", parameter="tau/frac",
                         expected="tau= (mask mass, e.g. a localizer's tau_) or frac= (share of entries)",
                         got=f"tau={tau!r}, frac={frac!r}", fix="pass tau=loc.tau_ or frac=0.1")
    if frac is not None:
        frac = check_frac(frac)
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating))
                            or not math.isfinite(float(tau)) or float(tau) <= 0):
        raise InputError("tau must be positive", parameter="tau", expected="a number > 0", got=tau,
                         fix="pass the localizer's budget, e.g. tau=loc.tau_")
    p, mk, base, base_vals, imp, ranks = _setup(model, X, maps, None, layout, masking, baseline, normalize, budget,
                                                channels, seed, blur_sigma, reference, need_ranks=not soft)
    try:
        yt = torch.as_tensor(p.model.resolve_targets(np.asarray(y), n=len(p.x)), device=p.x.device)
    except TargetError as exc:
        raise TargetError(exc.what, parameter="y", expected=exc.expected, got=exc.got, fix=exc.fix) from None
    m = group_size(tuple(p.x.shape), mk)
    if soft:
        d = p.maps
        if float(d.min()) < 0 or float(d.max()) > 1:
            raise InputError("a soft mask needs values in [0, 1]", parameter="maps",
                             expected="0 <= map <= 1 (e.g. a localizer's masks)",
                             got=f"values in [{float(d.min()):.3g}, {float(d.max()):.3g}]",
                             fix="pass soft=False to use the map's top entries at a budget instead")
        delta = d.to(p.x.dtype)
        k = None
    else:
        k = budget_count(frac, m) if frac is not None else int(max(1, min(m, round(float(tau)))))
    with p.model.frozen(), torch.inference_mode():
        clean_rows, masked_rows = [], []
        for s in chunks(p.model, len(p.x), p.x[0].numel()):
            xs = p.x[s]
            bs = base[s] if base.shape[0] > 1 else base
            if soft:
                xm = xs + delta[s] * (bs - xs)
            else:
                xm = torch.where(ranks[s] < k, bs, xs)
            clean_rows.append(_r2.per_sample_risk(p.model.logits_t(xs), yt[s], r_metric))
            masked_rows.append(_r2.per_sample_risk(p.model.logits_t(xm), yt[s], r_metric))
    c = torch.cat(clean_rows).cpu().numpy()
    mr = torch.cat(masked_rows).cpu().numpy()
    summ = _r2_summary(_r2, c, mr, float(level), n_boot, seed)
    est, low, high = float(summ["estimate"][0]), float(summ["low"][0]), float(summ["high"][0])
    params = {"tau": None if tau is None else float(tau), "frac": frac, "k": k, "soft": bool(soft),
              "r_metric": r_metric, "level": float(level), "n_boot": n_boot, "method": p.method}
    extras = {"low": low, "high": high, "clean_risk": c, "masked_risk": mr, "clean_mean": float(c.mean()),
              "masked_mean": float(mr.mean())}
    return MetricResult("r2", est, mr, True, params, mk.record(base_vals), extras)


def _r2_summary(r2mod, clean: np.ndarray, masked: np.ndarray, level: float, n_boot: int, seed: int) -> dict:
    """The localizer's ``r2_summary`` (paired percentile bootstrap), whichever way it takes its resamples."""
    import inspect

    params = inspect.signature(r2mod.r2_summary).parameters
    if "n_boot" in params:
        return r2mod.r2_summary(clean, masked, level=level, method="bootstrap", n_boot=n_boot, seed=seed)
    return r2mod.r2_summary(clean, masked, level=level, method="bootstrap",
                            weights=r2mod.bootstrap_weights(len(clean), n_boot, seed))
