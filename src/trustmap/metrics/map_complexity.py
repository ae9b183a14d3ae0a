"""Complexity: how concentrated is a map? (No model needed: these look at the map alone.)

Every map is flattened per sample over all its entries ``(C, *spatial)``, made non-negative
(``abs=True``) and divided by its largest entry (``normalise=True``), as Quantus does by default
(``abs=True, normalise=True, normalise_func=normalise_by_max``).

===========================  =====================================================================  ======
metric                       definition (per sample, ``a`` = the flattened ``|map| / max|map|``)     better
===========================  =====================================================================  ======
``sparseness``               Gini index of ``a + 1e-7`` sorted ascending:                            higher
                             ``sum_k (2k - n - 1) a_k / (n sum_k a_k)`` (Chalasani et al. 2020)
``complexity``               Shannon entropy (nats) of ``a / sum(a)`` (Bhatt et al. 2020)             lower
``effective_complexity``     number of entries with ``a > eps`` (``eps = 1e-5``; Nguyen &             lower
                             Martinez 2020)
===========================  =====================================================================  ======

Each costs one pass over the maps (no forward pass). A map that is zero everywhere has no
defined complexity (NaN); its sparseness is 0 (the ``1e-7`` makes every entry equal).
"""

from __future__ import annotations

import math

import numpy as np

from ..attribution import Attribution
from ..errors import InputError, ShapeError
from ..models import check_array, load_model
from .masking import MetricResult

__all__ = ["sparseness", "complexity", "effective_complexity", "flat_maps"]


def flat_maps(maps, X=None, model=None, layout=None, parameter: str = "maps") -> np.ndarray:
    """Maps as ``(N, C * prod(spatial))`` float64 in the internal entry order.

    An :class:`Attribution` knows its layout; an array (or tensor) is read in ``X``'s layout
    (resolved by ``model`` when given) or, without ``X``, taken as already ``(N, ...)``.
    """
    if isinstance(maps, Attribution):
        arr = np.asarray(maps.internal(), dtype=np.float64)
    else:
        a = check_array(maps, parameter)
        a = a.detach().cpu().numpy() if hasattr(a, "detach") else a
        if X is not None:
            if tuple(np.shape(X)) != tuple(a.shape):
                raise ShapeError("maps do not have the shape of X", parameter=parameter,
                                 expected=f"shape {tuple(np.shape(X))}", got=f"shape {tuple(a.shape)}",
                                 fix="pass one map per input with the input's shape")
            if model is not None:
                lay = load_model(model).resolve(a, layout, parameter)
                a = np.asarray(lay.to_internal(a))
        arr = np.asarray(a, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ShapeError("maps contain NaN or Inf", parameter=parameter, expected="finite values",
                         got=f"{int((~np.isfinite(arr)).sum())} non-finite entries",
                         fix="replace them (np.nan_to_num) or re-run the explainer")
    return arr.reshape(len(arr), -1)


def _prep(maps, X, model, layout, abs: bool, normalise: bool) -> np.ndarray:
    a = flat_maps(maps, X, model, layout)
    if abs:
        a = np.abs(a)
    if normalise:
        m = np.abs(a).max(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = np.where(m > 0, a / np.where(m > 0, m, 1.0), 0.0)
    return a


def _result(name: str, v: np.ndarray, higher: bool, params: dict) -> MetricResult:
    value = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
    return MetricResult(name, value, v, higher, params, {})


def sparseness(maps, *, X=None, model=None, layout=None, abs: bool = True, normalise: bool = True) -> MetricResult:
    """Gini index of each map (Chalasani et al. 2020, *Concise explanations of neural networks using
    adversarial training*), Quantus' ``Sparseness``; in [0, 1), higher is better (fewer entries
    carry the mass). Cost: a sort of each map.

    Parameters
    ----------
    maps : Attribution or array
        One map per sample; an array without ``X`` is taken as ``(N, ...)`` as it is.
    X : array, optional
        The inputs; when given, an array ``maps`` must have its shape.
    model : Model or model-like, optional
        Resolves the layout of an array ``maps`` given with ``X``.
    layout : str or Layout, optional
        Layout of an array ``maps`` (with ``X`` and ``model``).
    abs : bool, default True
        Take ``|map|`` first.
    normalise : bool, default True
        Divide each map by its largest magnitude.

    Returns
    -------
    MetricResult
        ``value`` is the mean Gini index; ``higher_is_better`` is True.

    Raises
    ------
    ShapeError
        ``maps`` do not have ``X``'s shape, or contain NaN or Inf.
    InputError
        ``maps`` is not an array-like.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import sparseness
    >>> round(sparseness(np.array([[0.0, 0.0, 3.0, 2.0, 0.0, 0.0]])).value, 3)
    0.7
    """
    a = np.sort(_prep(maps, X, model, layout, abs, normalise) + 1e-7, axis=1)
    n = a.shape[1]
    k = np.arange(1, n + 1, dtype=np.float64)
    g = ((2 * k - n - 1) * a).sum(1) / (n * a.sum(1))
    return _result("sparseness", g, True, {"abs": abs, "normalise": normalise})


def complexity(maps, *, X=None, model=None, layout=None, abs: bool = True, normalise: bool = True) -> MetricResult:
    """Entropy (natural log) of each map's share of its total (Bhatt et al. 2020, *Evaluating and
    aggregating feature-based model explanations*), Quantus' ``Complexity``; lower is better.
    Cost: one pass over the maps.

    Parameters
    ----------
    maps, X, model, layout, abs, normalise
        As in :func:`sparseness`.

    Returns
    -------
    MetricResult
        ``value`` is the mean entropy in nats; an all-zero map is NaN and left out.

    Raises
    ------
    InputError
        ``abs=False`` with negative map entries.
    ShapeError
        ``maps`` do not have ``X``'s shape, or contain NaN or Inf.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import complexity
    >>> round(complexity(np.array([[0.0, 1.0, 1.0, 0.0]])).value, 4)  # ln 2
    0.6931
    """
    a = _prep(maps, X, model, layout, abs, normalise)
    if (a < 0).any():
        raise InputError("complexity needs non-negative maps", parameter="abs", expected="abs=True or maps >= 0",
                         got="negative entries", fix="pass abs=True")
    s = a.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / s
        ent = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1)
    ent[~(s[:, 0] > 0)] = np.nan
    return _result("complexity", ent, False, {"abs": abs, "normalise": normalise})


def effective_complexity(maps, *, X=None, model=None, layout=None, eps: float = 1e-5, abs: bool = True,
                         normalise: bool = True) -> MetricResult:
    """Number of entries above ``eps`` (Nguyen & Martinez 2020, *On quantitative aspects of model
    interpretability*), Quantus' ``EffectiveComplexity``; lower is better. Cost: one pass.

    Parameters
    ----------
    maps, X, model, layout, abs, normalise
        As in :func:`sparseness`.
    eps : float, default 1e-5
        Threshold on the normalised map.

    Returns
    -------
    MetricResult
        ``value`` is the mean count of entries above ``eps``.

    Raises
    ------
    InputError
        ``eps`` is not a number >= 0.
    ShapeError
        ``maps`` do not have ``X``'s shape, or contain NaN or Inf.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import effective_complexity
    >>> effective_complexity(np.array([[0.0, 0.0, 3.0, 2.0, 0.0, 0.0]])).value
    2.0
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise InputError("eps must be >= 0", parameter="eps", expected="a number >= 0", got=eps, fix="eps=1e-5")
    a = _prep(maps, X, model, layout, abs, normalise)
    return _result("effective_complexity", (a > eps).sum(1).astype(np.float64), False,
                   {"eps": float(eps), "abs": abs, "normalise": normalise})
