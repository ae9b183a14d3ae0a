"""Faithfulness by regions: remove whole patches or segments in the map's order.

Regions are groups of entries that are switched off together (set to the masking convention's
baseline, :mod:`trustmap.metrics.masking`), all channels of a position at once:

* ``selectivity`` and ``region_perturbation``: a grid of non-overlapping patches of
  ``patch_size`` positions along every spatial axis (1D: segments; 2D: squares), as Quantus'
  ``Selectivity``; a patch's relevance is the **sum** of the map over it.
* ``irof``: segments — 2D: SLIC superpixels of each sample (scikit-image, our defaults for small
  images scaled to [0, 1]: :data:`trustmap.explain.segments.DEFAULT_SLIC`); 1D: consecutive segments
  of ``segment_size`` positions; or the caller's integer label array. A segment's relevance is the
  **mean** of the map over it.

==========================  ==========================================================================  ======
metric                      definition (per sample; ``y`` the target's probability, ``y_k`` after       better
                            removing the ``k`` most relevant regions, cumulatively)
==========================  ==========================================================================  ======
``selectivity``             ``trapz([y_1, ..., y_G], dx=1)`` (Montavon et al. 2018; Quantus)             lower
``region_perturbation``     AOPC ``sum_{k=0..L} (y - y_k) / (L + 1)`` over the first ``L = regions``      higher
                            patches (Samek et al. 2017), on the grid of patches
``irof``                    area over the curve ``G - trapz([y_1/y, ..., y_G/y], dx=1)`` (Rieger &       higher
                            Hansen 2020; Quantus' ``IROF``)
==========================  ==========================================================================  ======

Ties between regions go to the lower region index. Cost: one forward pass per region per sample
(``regions`` for the region perturbation), batched across samples under the model's budget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..explain.segments import segment
from .masking import Masking, MetricResult, baseline_like, importance, make_masking, perturbed_scores, prepare

__all__ = ["selectivity", "region_perturbation", "irof", "region_curves"]


def _pos_int(v, parameter: str):
    vals = v if isinstance(v, (tuple, list)) else (v,)
    for s in vals:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) < 1:
            raise InputError(f"{parameter} must be a positive int (or one per spatial axis)", parameter=parameter,
                             expected="an int >= 1", got=v, fix=f"e.g. {parameter}=4")
    return v


def region_curves(model, X, maps, *, labels, reduce: str = "sum", max_steps: int | None = None, target=None,
                  layout=None, masking: Masking | None = None, output: str = "prob", reference=None):
    """Scores after removing the top 1, 2, ... regions cumulatively.

    ``labels``: a :class:`~trustmap.explain.segments.Segmentation`-like function of the internal
    input returning (labels ``(1 or N, C * prod(spatial))``, regions per sample ``(N,)``).
    Returns ``(prepared, clean scores (N,), curves (N, steps), regions per sample (N,), masking record)``;
    steps past a sample's own region count repeat its all-removed score.
    """
    mk = make_masking(masking)
    p = prepare(model, X, maps, target=target, layout=layout)
    base, base_vals = baseline_like(p.x, mk, reference, p.layout, p.model)
    imp = importance(p.maps, mk)
    lab, nreg = labels(p.x)
    n = len(p.x)
    lab = lab.to(p.x.device).expand(n, -1) if lab.shape[0] == 1 else lab.to(p.x.device)
    g = int(nreg.max())
    flat = imp.reshape(n, -1)
    sums = torch.zeros((n, g), dtype=torch.float64, device=flat.device).scatter_add_(1, lab, flat)
    if reduce == "mean":
        cnt = torch.zeros_like(sums).scatter_add_(1, lab, torch.ones_like(flat))
        sums = sums / cnt.clamp_min(1)
    valid = torch.arange(g, device=flat.device)[None] < torch.as_tensor(nreg, device=flat.device)[:, None]
    key = torch.where(valid, sums, torch.full_like(sums, -math.inf))
    order = torch.argsort(-key, dim=1, stable=True)
    grank = torch.empty_like(order)
    grank.scatter_(1, order, torch.arange(g, device=flat.device).expand_as(order))
    entry_rank = grank.gather(1, lab).reshape(p.x.shape)
    steps = g if max_steps is None else min(g, int(max_steps))
    from .masking import target_scores

    y = target_scores(p.model, p.x, p.targets, output)
    curves = perturbed_scores(p.model, p.x, base, p.targets, steps,
                              lambda i, j: entry_rank[i] <= j.reshape((-1,) + (1,) * (p.x.ndim - 1)), output)
    return p, y, curves, np.asarray(nreg), mk.record(base_vals)


def _grid(patch_size):
    def labels(x: torch.Tensor):
        s = segment(x[:1], "fixed", patch_size, False, None)
        return s.labels, np.full(len(x), int(s.n_features[0]))
    return labels


def selectivity(model, X, maps, *, patch_size=8, target=None, layout=None, masking: Masking | None = None,
                output: str = "prob", reference=None, seed: int = 0, **_: Any) -> MetricResult:
    """Selectivity (Montavon, Samek & Müller 2018), Quantus' ``Selectivity``: remove patches in
    decreasing order of the map's sum over them; the area under the target's probability curve
    (``dx = 1`` per patch, the intact input not included). Lower is better. Cost: one forward pass
    per patch per sample.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    patch_size : int or tuple of int, default 8
        Patch side, one for every spatial axis or one per axis.
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
        ``value``: the mean area; ``extras`` hold the curves.

    Raises
    ------
    InputError
        ``patch_size`` is not a positive int (or one per spatial axis).
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import selectivity
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> round(selectivity(model, X, oracle, patch_size=2).value, 3)  # patch (2, 3) goes first
    1.0
    >>> round(selectivity(model, X, bad, patch_size=2).value, 3)
    1.75
    """
    _pos_int(patch_size, "patch_size")
    p, y, curves, nreg, rec = region_curves(model, X, maps, labels=_grid(patch_size), target=target, layout=layout,
                                            masking=masking, output=output, reference=reference)
    auc = np.trapezoid(curves, dx=1.0, axis=1) if hasattr(np, "trapezoid") else np.trapz(curves, dx=1.0, axis=1)
    return MetricResult("selectivity", float(auc.mean()), auc, False,
                        {"patch_size": patch_size, "output": output, "method": p.method}, rec,
                        {"curves": curves, "clean_score": y, "targets": p.targets})


def region_perturbation(model, X, maps, *, patch_size=8, regions: int = 100, target=None, layout=None,
                        masking: Masking | None = None, output: str = "prob", reference=None, seed: int = 0,
                        **_: Any) -> MetricResult:
    """Region perturbation, most relevant first (Samek et al. 2017, *Evaluating the visualization of
    what a deep neural network has learned*): AOPC ``sum_{k=0..L} (y - y_k) / (L + 1)`` over the first
    ``L = min(regions, patches)`` patches of the grid. Higher is better. Quantus' ``RegionPerturbation``
    pads the input and picks overlapping candidate patches greedily; this uses the fixed grid.
    Cost: ``L`` forward passes per sample.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    patch_size : int or tuple of int, default 8
    regions : int, default 100
        Patches removed at most.
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
        ``value``: the mean AOPC.

    Raises
    ------
    InputError
        ``patch_size`` or ``regions`` is not a positive int.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import region_perturbation
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> round(region_perturbation(model, X, oracle, patch_size=2, regions=2).value, 3)
    0.333
    >>> region_perturbation(model, X, bad, patch_size=2, regions=2).value
    0.0
    """
    _pos_int(patch_size, "patch_size")
    _pos_int(regions, "regions")
    p, y, curves, nreg, rec = region_curves(model, X, maps, labels=_grid(patch_size), max_steps=regions,
                                            target=target, layout=layout, masking=masking, output=output,
                                            reference=reference)
    drops = y[:, None] - curves
    aopc = drops.sum(1) / (curves.shape[1] + 1)
    return MetricResult("region_perturbation", float(aopc.mean()), aopc, True,
                        {"patch_size": patch_size, "regions": int(curves.shape[1]), "output": output,
                         "method": p.method}, rec, {"curves": drops, "targets": p.targets})


def irof(model, X, maps, *, segmentation="auto", segment_size=None, segment_params: dict | None = None,
         target=None, layout=None, masking: Masking | None = None, output: str = "prob", reference=None,
         seed: int = 0, **_: Any) -> MetricResult:
    """Iterative removal of features (Rieger & Hansen 2020), Quantus' ``IROF``: segments removed in
    decreasing order of the map's mean over them, cumulatively; per sample the area over the curve
    of ``y_k / y``: ``G - trapz([y_1/y, ..., y_G/y], dx=1)``. Higher is better.

    ``segmentation``: ``'auto'`` (2D: SLIC superpixels; 1D: segments of ``segment_size``
    positions, default ``max(1, L // 16)``), ``'fixed'``, ``'slic'``, ``'quickshift'`` or an integer
    label array shaped like one sample or like ``X``. Cost: one forward pass per segment per sample
    (plus the superpixels).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    segmentation : str or int array, default 'auto'
    segment_size : int, optional
    segment_params : dict, optional
        Keywords of the superpixel algorithm.
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
        ``value``: the mean area over the curve.

    Raises
    ------
    InputError
        An unknown ``segmentation`` or a bad ``segment_size``.
    DependencyError
        SLIC or quickshift without scikit-image.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import irof
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle, bad = np.array([[[0.0, 0, 5, 5, 0, 0]]]), np.array([[[3.0, 2, 0, 0, 0, 1]]])
    >>> round(irof(model, X, oracle, segment_size=2).value, 3), round(irof(model, X, bad, segment_size=2).value, 3)
    (2.0, 1.25)
    """
    def labels(x: torch.Tensor):
        kind = segmentation
        if isinstance(kind, str) and kind == "auto":
            kind = "fixed" if x.ndim == 3 else "slic"
        size = segment_size if segment_size is not None else max(1, int(x.shape[-1]) // 16)
        s = segment(x, kind, size, False, segment_params)
        return s.labels, np.asarray(s.n_features)

    p, y, curves, nreg, rec = region_curves(model, X, maps, labels=labels, reduce="mean", target=target,
                                            layout=layout, masking=masking, output=output, reference=reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = curves / y[:, None]
    aoc = np.empty(len(y))
    for i, g in enumerate(nreg):
        r = ratio[i, :int(g)]
        aoc[i] = len(r) - (np.trapezoid(r, dx=1.0) if hasattr(np, "trapezoid") else np.trapz(r, dx=1.0))
    aoc[~np.isfinite(aoc)] = np.nan
    return MetricResult("irof", float(np.nanmean(aoc)) if np.isfinite(aoc).any() else math.nan, aoc, True,
                        {"segmentation": segmentation if isinstance(segmentation, str) else "labels",
                         "segment_size": segment_size, "output": output, "method": p.method}, rec,
                        {"curves": ratio, "segments": nreg, "targets": p.targets})
