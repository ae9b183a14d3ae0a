"""Axiomatic and correlation metrics: completeness, non-sensitivity, monotonicity correlation, infidelity.

=============================  ======================================================================  ======
metric                         definition (per sample; ``f`` = the target's score, ``b`` the           better
                               masking convention's baseline)
=============================  ======================================================================  ======
``completeness``               ``|sum(a) - (f(x) - f(b))|`` (Sundararajan et al. 2017; Quantus'        lower
                               ``Completeness`` reports the boolean ``gap == 0``)
``non_sensitivity``            size of the symmetric difference between the features with              lower
                               ``|a| < eps`` (map rescaled to max 1) and the features whose
                               removal leaves the score unchanged (variance < ``eps`` over
                               ``n_samples`` uniform replacements in ``[min x, max x]``)
                               (Nguyen & Martinez 2020; Quantus' ``NonSensitivity``)
``monotonicity_correlation``   Spearman correlation between the map's sum over each step of            higher
                               ``features_in_step`` entries (ascending map order) and
                               ``(f(x with the step -> b) - f(x))² / f(x)²`` (Nguyen & Martinez 2020;
                               Quantus' ``MonotonicityCorrelation``)
``infidelity``                 ``E_I[(I·a - (f(x) - f(x - I)))²]``, ``I ~ N(0, std²)`` entrywise       lower
                               (Yeh et al. 2019; Captum's ``infidelity``; ``normalize=True``
                               rescales ``I·a`` by the least-squares ``β`` first)
=============================  ======================================================================  ======

Scores are pre-softmax (``output='logit'``) for completeness and infidelity (the attributions of
gradient methods explain logits), probabilities for the others (Quantus' ``softmax=True``).
Cost: 1 forward pass (completeness), ``m / features_in_step`` (monotonicity correlation),
``n_samples · m / features_in_step`` (non-sensitivity), ``n_samples`` (infidelity) per sample,
``m`` being the entries of a sample; all batched across samples under the model's budget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models.base import row_slices
from .masking import (Masking, MetricResult, baseline_like, check_int, check_output, check_positive, importance,
                      make_masking, perturbed_scores, prepare, target_scores)
from .road import scores_of_variants
from .sanity import spearman_rows

__all__ = ["completeness", "non_sensitivity", "monotonicity_correlation", "infidelity"]


def _setup(model, X, maps, target, layout, masking, reference):
    mk = make_masking(masking)
    p = prepare(model, X, maps, target=target, layout=layout)
    base, base_vals = baseline_like(p.x, mk, reference, p.layout, p.model)
    return p, mk, base, base_vals


def completeness(model, X, maps, *, output: str = "logit", target=None, layout=None, masking: Masking | None = None,
                 reference=None, seed: int = 0, **_: Any) -> MetricResult:
    """Completeness gap ``|sum(a) - (f(x) - f(b))|`` (lower is better; 0 for integrated gradients
    with enough steps, or for gradient x input on a linear model with a zero baseline).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    output : {'logit', 'prob'}, default 'logit'
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    masking : Masking, optional
        The masking convention (baseline, tie order) of :mod:`trustmap.metrics.masking`.
    reference : array, optional
        Reference inputs for a ``'dataset_mean'`` baseline.
    seed : int, default 0

    Returns
    -------
    MetricResult
        ``value``: the mean gap.

    Raises
    ------
    InputError
        Unknown ``output`` or masking setting.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import completeness
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> completeness(model, X, oracle).value, completeness(model, X, bad).value  # f(x) - f(0) = 10
    (0.0, 4.0)
    """
    output = check_output(output)
    p, mk, base, base_vals = _setup(model, X, maps, target, layout, masking, reference)
    y = target_scores(p.model, p.x, p.targets, output)
    yb = perturbed_scores(p.model, p.x, base, p.targets, 1, lambda i, j: torch.ones_like(p.x[i], dtype=torch.bool),
                          output)[:, 0]
    s = p.maps.reshape(len(p.x), -1).sum(1).cpu().numpy()
    gap = np.abs(s - (y - yb))
    return MetricResult("completeness", float(gap.mean()), gap, False, {"output": output, "method": p.method},
                        mk.record(base_vals), {"map_sum": s, "score_change": y - yb, "targets": p.targets})


def _features(n_entries: int, features_in_step: int) -> int:
    if n_entries % features_in_step:
        raise InputError("features_in_step must divide the entries of a sample", parameter="features_in_step",
                         expected=f"a divisor of {n_entries}", got=features_in_step, fix="e.g. features_in_step=1")
    return n_entries // features_in_step


def monotonicity_correlation(model, X, maps, *, features_in_step: int = 1, eps: float = 1e-5, output: str = "prob",
                             target=None, layout=None, masking: Masking | None = None, reference=None, seed: int = 0,
                             **_: Any) -> MetricResult:
    """Monotonicity correlation (Nguyen & Martinez 2020), higher is better; see the module docstring.

    Steps of ``features_in_step`` entries in ascending order of the map (ties: the masking
    convention's fixed order) are each set to the baseline alone (not cumulatively). With a
    constant baseline one replacement per step is exact (Quantus draws ``nr_samples`` uniform
    replacements). ``f(x)² < eps`` is not divided by. NaN for a sample whose map sums or score
    changes do not vary.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    features_in_step : int, default 1
        Entries per step; must divide the entries of a sample.
    eps : float, default 1e-5
    output : {'prob', 'logit'}, default 'prob'
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    masking : Masking, optional
        The masking convention (baseline, tie order) of :mod:`trustmap.metrics.masking`.
    reference : array, optional
        Reference inputs for a ``'dataset_mean'`` baseline.
    seed : int, default 0

    Returns
    -------
    MetricResult
        ``value``: the mean Spearman correlation over samples where it is defined.

    Raises
    ------
    InputError
        ``features_in_step`` does not divide the entries, or ``eps`` / ``output`` is invalid.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import monotonicity_correlation
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> round(monotonicity_correlation(model, X, oracle).value, 3)
    1.0
    """
    fis = check_int(features_in_step, "features_in_step")
    output = check_output(output)
    p, mk, base, base_vals = _setup(model, X, maps, target, layout, masking, reference)
    n = len(p.x)
    imp = importance(p.maps, mk).reshape(n, -1)
    m = imp.shape[1]
    g = _features(m, fis)
    from .masking import _tie_order  # same package: the convention's tie order

    perm = _tie_order(m, mk.seed, imp.device)
    order = perm[torch.argsort(imp[:, perm], dim=1, stable=True)]                    # ascending
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(m, device=imp.device).expand_as(order))
    step = (rank // fis).reshape(p.x.shape)
    y = target_scores(p.model, p.x, p.targets, output)
    yp = perturbed_scores(p.model, p.x, base, p.targets, g,
                          lambda i, j: step[i] == j.reshape((-1,) + (1,) * (p.x.ndim - 1)), output)
    inv = np.where(np.abs(y) < eps, 1.0, 1.0 / np.maximum(np.abs(y), 1e-300)) ** 2
    var = (yp - y[:, None]) ** 2 * inv[:, None]
    atts = torch.zeros((n, g), dtype=torch.float64, device=imp.device).scatter_add_(
        1, (rank // fis), imp).cpu().numpy()
    r = spearman_rows(atts, var)
    return MetricResult("monotonicity_correlation", float(np.nanmean(r)) if np.isfinite(r).any() else math.nan, r,
                        True, {"features_in_step": fis, "eps": eps, "output": output, "method": p.method},
                        mk.record(base_vals), {"map_sums": atts, "score_changes": var, "targets": p.targets})


def non_sensitivity(model, X, maps, *, features_in_step: int = 1, n_samples: int = 10, eps: float = 1e-5,
                    output: str = "prob", target=None, layout=None, masking: Masking | None = None, reference=None,
                    seed: int = 0, **_: Any) -> MetricResult:
    """Non-sensitivity (Nguyen & Martinez 2020), lower is better; see the module docstring.

    Features are steps of ``features_in_step`` consecutive entries of the flattened
    ``(C, *spatial)`` sample; each is replaced ``n_samples`` times by uniform draws in the
    sample's ``[min, max]`` (Quantus' ``'uniform'`` baseline), the rest left intact. A feature is
    a "non-feature" of the map when all its ``|a| / max|a|`` are below ``eps``, and of the model
    when the variance of its scores is below ``eps``; the value counts the features on which
    the two disagree.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    features_in_step : int, default 1
    n_samples : int, default 10
    eps : float, default 1e-5
    output : {'prob', 'logit'}, default 'prob'
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    masking : Masking, optional
        The masking convention (baseline, tie order) of :mod:`trustmap.metrics.masking`.
    reference : array, optional
        Reference inputs for a ``'dataset_mean'`` baseline.
    seed : int, default 0

    Returns
    -------
    MetricResult
        ``value``: the mean count of disagreeing features.

    Raises
    ------
    InputError
        ``features_in_step`` does not divide the entries, or a count / ``eps`` / ``output`` is invalid.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import non_sensitivity
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> X = np.array([[[0.0, 1, 2, 3, 4, 5]]], np.float32)  # a constant X could not vary
    >>> non_sensitivity(model, X, oracle, output="logit").value
    0.0
    """
    fis = check_int(features_in_step, "features_in_step")
    ns = check_int(n_samples, "n_samples", 2)
    output = check_output(output)
    p, mk, _b, _bv = _setup(model, X, maps, target, layout, masking, reference)
    n = len(p.x)
    m = p.x[0].numel()
    g = _features(m, fis)
    a = p.maps.reshape(n, -1).abs()
    mx = a.max(1, keepdim=True).values
    a = torch.where(mx > 0, a / torch.where(mx > 0, mx, torch.ones_like(mx)), a)
    non_map = (a.reshape(n, g, fis) < eps).all(2).cpu().numpy()
    flat = p.x.reshape(n, -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    feat = (torch.arange(m, device=p.x.device) // fis)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 7907 + 3)

    def build(i, j):
        xi = flat[i]
        u = torch.rand(xi.shape, generator=gen, dtype=torch.float64).to(xi.device)
        u = (lo[i, None] + (hi - lo)[i, None] * u).to(xi.dtype)
        hit = feat[None] == (j // ns)[:, None]
        return torch.where(hit, u, xi).reshape((len(i),) + tuple(p.x.shape[1:]))

    sc = scores_of_variants(p.model, p.x, p.targets, g * ns, build, output).reshape(n, g, ns)
    non_model = sc.var(2) < eps
    count = (non_map != non_model).sum(1).astype(np.float64)
    return MetricResult("non_sensitivity", float(count.mean()), count, False,
                        {"features_in_step": fis, "n_samples": ns, "eps": eps, "output": output, "seed": seed,
                         "method": p.method}, {"baseline": "uniform in [min x, max x]"},
                        {"map_non_features": non_map, "model_non_features": non_model, "targets": p.targets})


def infidelity(model, X, maps, *, n_samples: int = 10, std: float = 0.1, normalize: bool = False,
               output: str = "logit", target=None, layout=None, masking: Masking | None = None, reference=None,
               seed: int = 0, **_: Any) -> MetricResult:
    """Infidelity (Yeh et al. 2019), Captum's ``infidelity`` with Gaussian perturbations: per sample
    the mean over ``n_samples`` draws ``I ~ N(0, std²)`` of ``(I·a - (f(x) - f(x - I)))²``; with
    ``normalize=True`` ``I·a`` is first scaled by ``β = E[I·a · Δf] / E[(I·a)²]`` (Captum's
    ``normalize``). Lower is better. Draws come from ``seed`` (NumPy, sample by sample); the
    model's float32 inputs are used for ``I`` exactly as the model saw them.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    n_samples : int, default 10
    std : float, default 0.1
    normalize : bool, default False
    output : {'logit', 'prob'}, default 'logit'
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    masking : Masking, optional
        The masking convention (baseline, tie order) of :mod:`trustmap.metrics.masking`.
    reference : array, optional
        Reference inputs for a ``'dataset_mean'`` baseline.
    seed : int, default 0

    Returns
    -------
    MetricResult
        ``value``: the mean infidelity.

    Raises
    ------
    InputError
        ``n_samples`` or ``std`` not positive, or an unknown ``output``.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import infidelity
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> infidelity(model, X, oracle).value < 1e-9  # a linear model's weights are exact
    True
    >>> round(infidelity(model, X, bad).value, 3)
    0.886
    """
    ns = check_int(n_samples, "n_samples")
    std = check_positive(std, "std")
    output = check_output(output)
    p = prepare(model, X, maps, target=target, layout=layout)
    n = len(p.x)
    rng = np.random.default_rng(seed)
    y = target_scores(p.model, p.x, p.targets, output)
    a_all = p.maps.cpu().numpy().reshape(n, 1, -1)
    diff = np.empty((n, ns))
    ia = np.empty((n, ns))
    rows = max(1, p.model.batch_size(p.x[0].numel()))
    for blk in row_slices(n, rows // ns):           # blocks of samples: memory bounded, draws sample by sample
        s, step = blk.start, blk.stop - blk.start
        x_b = p.x[blk]
        x64 = x_b.detach().cpu().double().numpy()
        noise = np.stack([rng.normal(0.0, std, size=(ns,) + x64.shape[1:]) for _ in range(len(x64))])
        xp = torch.as_tensor((x64[:, None] - noise).astype(np.float32)).to(device=p.x.device, dtype=p.x.dtype)
        seen = x64[:, None] - xp.double().cpu().numpy()                                 # the I the model saw
        flat_xp = xp.reshape((len(x64) * ns,) + tuple(p.x.shape[1:]))
        yp = scores_of_variants(p.model, x_b, p.targets[s:s + step], ns, lambda i, j: flat_xp[i * ns + j], output)
        diff[s:s + step] = y[s:s + step, None] - yp                                     # (B, S)
        ia[s:s + step] = (seen.reshape(len(x64), ns, -1) * a_all[s:s + step]).sum(2)    # (B, S)
    beta = np.ones(n)
    if normalize:
        num, den = (ia * diff).mean(1), (ia * ia).mean(1)
        beta = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    inf = ((beta[:, None] * ia - diff) ** 2).mean(1)
    return MetricResult("infidelity", float(inf.mean()), inf, False,
                        {"n_samples": ns, "std": std, "normalize": bool(normalize), "output": output, "seed": seed,
                         "method": p.method}, {}, {"beta": beta, "targets": p.targets})
