"""Robustness: does the map stay put when the input barely moves? And does it depend on the class?

These metrics re-explain perturbed inputs, so they need the explainer, not only its maps: a
registered method name with its parameters (``explainer='saliency', params={...}``), an explainer
instance, a callable ``f(model, X, target, layout)``, or an :class:`~trustmap.Attribution` from
a registered method (its method and parameters are re-run). The perturbed copies of all samples
are explained together (``n_samples`` rows per sample, in blocks bounded by ``max_rows``), with
the targets of the maps being scored.

=======================  ===========================================================================  ======
metric                   definition (per sample; ``Φ`` = the explainer, ``a = Φ(x)`` the given map)   better
=======================  ===========================================================================  ======
``max_sensitivity``      ``max_j ||Φ(x + δ_j) − a|| / ||a||`` with ``δ_j ~ U[−r, r]`` entrywise        lower
                         (Yeh et al. 2019; Captum's ``sensitivity_max``: ``r = 0.02``, Frobenius
                         norm, divided by ``||a||`` (1 when ``a = 0``)). ``normalize='input'``
                         divides by ``||x||`` (Quantus), ``None`` by nothing (the paper)
``avg_sensitivity``      the mean over ``j`` instead of the max (Yeh et al. 2019)                     lower
``local_lipschitz``      ``max_j ||Φ(x + ε_j) − a||₂ / ||ε_j||₂`` with ``ε_j ~ N(0, σ²)``             lower
                         (Alvarez-Melis & Jaakkola 2018; Quantus' ``LocalLipschitzEstimate``:
                         ``σ = 0.1``)
``random_logit``         similarity (SSIM of the maps rescaled to [0, 1], or Spearman) of ``a``       lower
                         and the map of a random other class (Sixt et al. 2020; Quantus'
                         ``RandomLogit``)
=======================  ===========================================================================  ======

Cost: ``n_samples`` explanations per sample (one for ``random_logit``). The perturbations are
drawn from ``seed`` (NumPy's generator, sample by sample in order), so a result is reproducible.
"""

from __future__ import annotations

import math
import numpy as np
import torch

from ..attribution import Attribution
from ..errors import InputError
from ..layout import Layout
from ..models.base import row_slices
from .masking import MetricResult, check_int, check_positive, prepare

__all__ = ["sensitivity", "max_sensitivity", "avg_sensitivity", "local_lipschitz", "random_logit",
           "reexplain", "internal_layout"]

NORMALIZE = ("explanation", "input", None)


def internal_layout(x: torch.Tensor) -> str:
    """The layout name of an internal ``(N, C, *spatial)`` array."""
    return "NCL" if x.ndim == 3 else "NCHW"


def _explainer(maps, explainer, params):
    from .sanity import _explainer_fn

    if explainer is None:
        if not isinstance(maps, Attribution):
            raise InputError("this metric re-explains perturbed inputs and needs the explainer",
                             parameter="explainer", expected="a method name (with params), an explainer, a callable "
                             "f(model, X, target, layout), or maps given as an Attribution of a registered method",
                             got=type(maps).__name__, fix="pass explainer='saliency' (the method that made the maps)")
        explainer = maps
    return _explainer_fn(explainer, params)


def reexplain(fn, model, x: np.ndarray, targets: np.ndarray, max_rows: int = 4096) -> np.ndarray:
    """Maps of internal inputs ``x`` ``(R, C, *spatial)`` for ``targets`` ``(R,)``, in blocks of
    ``max_rows`` rows (the explainer chunks each block under the model's budget)."""
    from .sanity import _run

    lay = Layout("NCL" if x.ndim == 3 else "NCHW")
    out = np.empty(x.shape, dtype=np.float64)
    for s in range(0, len(x), max_rows):
        blk = x[s:s + max_rows]
        out[s:s + len(blk)] = _run(fn, model, blk, targets[s:s + len(blk)], lay, blk.shape)
    return out


def _norms(d: np.ndarray) -> np.ndarray:
    return np.sqrt((d.reshape(d.shape[0], d.shape[1], -1) ** 2).sum(-1))


def _sample_blocks(n: int, n_samples: int, max_rows: int):
    return iter(row_slices(n, int(max_rows) // max(1, n_samples)))


def _perturbation_distances(model, X, maps, explainer, params, target, layout, n_samples, draw, seed, max_rows):
    """``(prepared, ||Φ(x + δ_j) − a|| (N, S), ||δ_j as the model saw it|| (N, S))``.

    Samples are processed in blocks of ``max_rows // n_samples`` (perturbed copies explained together,
    then reduced to norms), so memory stays bounded; the draws are made sample by sample from one
    NumPy generator, so they do not depend on the block size."""
    p = prepare(model, X, maps, target=target, layout=layout)
    fn, _ = _explainer(maps, explainer, params)
    x_all = p.x.detach().cpu().to(torch.float64).numpy()
    a_all = p.maps.cpu().numpy()
    n = len(x_all)
    rng = np.random.default_rng(seed)
    dist = np.empty((n, n_samples))
    step = np.empty((n, n_samples))
    for blk in _sample_blocks(n, n_samples, max_rows):
        x, a = x_all[blk], a_all[blk]
        delta = np.stack([draw(rng, x.shape[1:], n_samples) for _ in range(len(x))])         # (B, S, C, *sp)
        xp = (x[:, None] + delta).astype(np.float32)
        tg = np.repeat(p.targets[blk], n_samples)
        ap = reexplain(fn, p.model, xp.reshape((-1,) + x.shape[1:]), tg, max_rows)
        ap = ap.reshape((len(x), n_samples) + x.shape[1:])
        dist[blk] = _norms(ap - a[:, None])
        step[blk] = _norms(xp.astype(np.float64) - x[:, None])
    return p, dist, step


def sensitivity(model, X, maps=None, *, explainer=None, params: dict | None = None, n_samples: int = 10,
                radius: float = 0.02, normalize: str | None = "explanation", target=None, layout=None,
                seed: int = 0, max_rows: int = 4096, masking=None) -> tuple[MetricResult, MetricResult]:
    """Max- and average-sensitivity (Yeh et al. 2019, *On the (in)fidelity and sensitivity of
    explanations*), both lower is better, from one set of ``n_samples`` perturbations per sample.

    ``δ ~ U[−radius, radius]`` entrywise, added to the input; the distance is the Frobenius norm
    of the map's change divided by ``||a||`` (``normalize='explanation'``, Captum's
    ``sensitivity_max``; a zero map divides by 1), by ``||x||`` (``'input'``, Quantus) or by
    nothing (``None``, the paper). ``maps`` are the maps being scored (default: the explainer's
    maps of ``X``). Cost: ``n_samples`` explanations per sample.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array, optional
        The maps scored (default: the explainer's maps of ``X``).
    explainer : str, Explainer or callable, optional
        What re-explains the perturbed inputs: a method name, an explainer, or
        ``f(model, X, target, layout)``; may be omitted when ``maps`` is an Attribution of a
        registered method.
    params : dict, optional
        The method's parameters.
    n_samples : int, default 10
    radius : float, default 0.02
    normalize : {'explanation', 'input', None}, default 'explanation'
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    seed : int, default 0
    max_rows : int, default 4096
        Rows re-explained per block.
    masking : Masking, optional
        Unused (accepted so every metric takes it).

    Returns
    -------
    (MetricResult, MetricResult)
        Max-sensitivity and average sensitivity.

    Raises
    ------
    InputError
        No ``explainer`` (and ``maps`` not an Attribution), or a count / scale / choice out of range.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import sensitivity
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> mx, av = sensitivity(model, X, explainer="saliency")  # a linear model's gradient is constant
    >>> mx.value, av.value
    (0.0, 0.0)
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    radius = check_positive(radius, "radius")
    if normalize not in NORMALIZE:
        raise InputError("unknown normalize", parameter="normalize", expected="'explanation', 'input' or None",
                         got=normalize, fix="normalize='explanation' (Captum's sensitivity_max)")
    maps = _default_maps(model, X, maps, explainer, params, target, layout)
    p, d, _ = _perturbation_distances(model, X, maps, explainer, params, target, layout, n_samples,
                                      lambda rng, shape, s: rng.uniform(-radius, radius, size=(s,) + shape), seed,
                                      max_rows)
    a = p.maps.cpu().numpy()
    if normalize == "explanation":
        den = np.sqrt((a.reshape(len(a), -1) ** 2).sum(1))
        den = np.where(den == 0, 1.0, den)
    elif normalize == "input":
        xin = p.x.detach().cpu().double().numpy()
        den = np.sqrt((xin.reshape(len(xin), -1) ** 2).sum(1))
        den = np.where(den == 0, 1.0, den)
    else:
        den = np.ones(len(a))
    r = d / den[:, None]
    params_rec = {"n_samples": n_samples, "radius": radius, "normalize": normalize, "seed": seed,
                  "perturbation": "uniform", "method": p.method}
    ex = {"targets": p.targets, "per_perturbation": r}
    mx, av = r.max(1), r.mean(1)
    return (MetricResult("max_sensitivity", float(mx.mean()), mx, False, params_rec, {}, ex),
            MetricResult("avg_sensitivity", float(av.mean()), av, False, params_rec, {}, ex))


def _default_maps(model, X, maps, explainer, params, target, layout):
    if maps is not None:
        return maps
    fn, _ = _explainer(maps, explainer, params)
    from ..models import load_model

    m = load_model(model)
    out = fn(m, X, target, layout)
    return out


def max_sensitivity(model, X, maps=None, **kw) -> MetricResult:
    """Max-sensitivity (lower is better); see :func:`sensitivity`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array, optional
        The maps scored (default: the explainer's maps of ``X``).
    explainer : str, Explainer or callable, optional
        What re-explains the perturbed inputs: a method name, an explainer, or
        ``f(model, X, target, layout)``; may be omitted when ``maps`` is an Attribution of a
        registered method.
    params : dict, optional
        The method's parameters.
    **kw
        The other keywords of :func:`sensitivity`.

    Returns
    -------
    MetricResult
        ``value``: the mean over samples of the largest normalised change.

    Raises
    ------
    InputError
        No ``explainer`` (and ``maps`` not an Attribution), or a count / scale / choice out of range.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import max_sensitivity
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> max_sensitivity(model, X, explainer="saliency").value
    0.0
    """
    return sensitivity(model, X, maps, **kw)[0]


def avg_sensitivity(model, X, maps=None, **kw) -> MetricResult:
    """Average sensitivity (lower is better); see :func:`sensitivity`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array, optional
        The maps scored (default: the explainer's maps of ``X``).
    explainer : str, Explainer or callable, optional
        What re-explains the perturbed inputs: a method name, an explainer, or
        ``f(model, X, target, layout)``; may be omitted when ``maps`` is an Attribution of a
        registered method.
    params : dict, optional
        The method's parameters.
    **kw
        The other keywords of :func:`sensitivity`.

    Returns
    -------
    MetricResult
        ``value``: the mean over samples of the mean normalised change.

    Raises
    ------
    InputError
        No ``explainer`` (and ``maps`` not an Attribution), or a count / scale / choice out of range.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import avg_sensitivity
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> avg_sensitivity(model, X, explainer="saliency").value
    0.0
    """
    return sensitivity(model, X, maps, **kw)[1]


def local_lipschitz(model, X, maps=None, *, explainer=None, params: dict | None = None, n_samples: int = 20,
                    std: float = 0.1, target=None, layout=None, seed: int = 0, max_rows: int = 4096,
                    masking=None) -> MetricResult:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, *On the robustness of
    interpretability methods*), Quantus' ``LocalLipschitzEstimate`` without its map normalisation:
    ``max_j ||Φ(x + ε_j) − a||₂ / ||ε_j||₂``, ``ε_j ~ N(0, std²)`` entrywise; lower is better.
    Cost: ``n_samples`` explanations per sample (Quantus' default is 200).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array, optional
        The maps scored (default: the explainer's maps of ``X``).
    explainer : str, Explainer or callable, optional
        What re-explains the perturbed inputs: a method name, an explainer, or
        ``f(model, X, target, layout)``; may be omitted when ``maps`` is an Attribution of a
        registered method.
    params : dict, optional
        The method's parameters.
    n_samples : int, default 20
    std : float, default 0.1
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    seed : int, default 0
    max_rows : int, default 4096
    masking : Masking, optional
        Unused.

    Returns
    -------
    MetricResult
        ``value``: the mean estimate.

    Raises
    ------
    InputError
        No ``explainer`` (and ``maps`` not an Attribution), or a count / scale / choice out of range.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import local_lipschitz
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> local_lipschitz(model, X, explainer="saliency").value
    0.0
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    std = check_positive(std, "std")
    maps = _default_maps(model, X, maps, explainer, params, target, layout)
    # the model sees float32 inputs: the step is measured as the model saw it
    p, d, stp = _perturbation_distances(model, X, maps, explainer, params, target, layout, n_samples,
                                        lambda rng, shape, s: rng.normal(0.0, std, size=(s,) + shape), seed,
                                        max_rows)
    r = (d / np.maximum(stp, 1e-300)).max(1)
    return MetricResult("local_lipschitz", float(r.mean()), r, False,
                        {"n_samples": n_samples, "std": std, "seed": seed, "method": p.method}, {},
                        {"targets": p.targets})


def random_logit(model, X, maps=None, *, explainer=None, params: dict | None = None, similarity: str = "ssim",
                 target=None, layout=None, seed: int = 0, max_rows: int = 4096, masking=None) -> MetricResult:
    """Random logit test (Sixt et al. 2020, *When explanations lie*), Quantus' ``RandomLogit``:
    the similarity of the map of the target class and the map of a class drawn uniformly from the
    other classes (one draw per sample from ``seed``); lower is better (a class-sensitive method).
    ``similarity``: ``'ssim'`` (:func:`~trustmap.metrics.ssim_rows`, maps rescaled to [0, 1]) or
    ``'spearman'``. Cost: one explanation per sample.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array, optional
        The maps scored (default: the explainer's maps of ``X``).
    explainer : str, Explainer or callable, optional
        What re-explains the perturbed inputs: a method name, an explainer, or
        ``f(model, X, target, layout)``; may be omitted when ``maps`` is an Attribution of a
        registered method.
    params : dict, optional
        The method's parameters.
    similarity : {'ssim', 'spearman'}, default 'ssim'
    target : int or array of int, optional
        Class per sample; default: the Attribution's targets, else the predicted class.
    layout : str, optional
        Layout of ``X`` when its shape is ambiguous.
    seed : int, default 0
    max_rows : int, default 4096
    masking : Masking, optional
        Unused.

    Returns
    -------
    MetricResult
        ``value``: the mean similarity (NaN where a map is constant).

    Raises
    ------
    InputError
        No ``explainer`` (and ``maps`` not an Attribution), or a count / scale / choice out of range.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import random_logit, edge_detector
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 14, 3))
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> X = np.random.default_rng(0).random((4, 1, 16)).astype(np.float32)
    >>> random_logit(model, X, explainer=edge_detector).value  # the same map for every class
    1.0
    >>> r = random_logit(model, X, explainer="saliency", similarity="spearman")
    >>> r.per_sample.shape, r.higher_is_better
    ((4,), False)
    """
    from .sanity import spearman_rows, ssim_rows

    if similarity not in ("ssim", "spearman"):
        raise InputError("unknown similarity", parameter="similarity", expected="'ssim' or 'spearman'",
                         got=similarity, fix="similarity='ssim'")
    maps = _default_maps(model, X, maps, explainer, params, target, layout)
    p = prepare(model, X, maps, target=target, layout=layout)
    fn, _ = _explainer(maps, explainer, params)
    k = p.model.n_classes
    if k < 2:
        raise InputError("random logit needs two classes or more", parameter="model", expected=">= 2 classes",
                         got=k, fix="drop random_logit")
    rng = np.random.default_rng(seed)
    off = (p.targets + rng.integers(1, k, size=len(p.targets))) % k                     # uniform over the others
    x = p.x.detach().cpu().numpy()
    ao = reexplain(fn, p.model, x, off, max_rows)
    a = p.maps.cpu().numpy()
    s = ssim_rows(a, ao) if similarity == "ssim" else spearman_rows(a, ao)
    value = float(np.nanmean(s)) if np.isfinite(s).any() else math.nan
    return MetricResult("random_logit", value, s, False, {"similarity": similarity, "seed": seed, "method": p.method},
                        {}, {"targets": p.targets, "other_class": off})
