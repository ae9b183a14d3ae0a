"""Score several explanations of one model on the same inputs, with uncertainty.

:func:`evaluate_explanations` (``trustmap.evaluate``) runs the chosen metrics for every map set
under one masking convention (:mod:`trustmap.metrics.masking`) and returns an
:class:`ExplanationScores` table:

* **Cells**: the metric's value for a method with a percentile bootstrap confidence interval
  over samples (``n_boot`` resamples; the same resamples for every method and metric, so
  intervals of differences are paired). Means ignore samples where a metric is undefined (NaN).
  The R² cell is a ratio of mean risks, resampled as a ratio.
* **Paired comparisons**: for every metric and every pair of methods, the difference with its
  paired bootstrap interval and a two-sided **paired permutation test** (``n_perm`` random
  swaps of the two methods' values within each sample; for means this is the sign-flip test
  of the per-sample differences, for R² the masked risks are swapped). The p-values of one
  metric's pairs are corrected for multiple comparisons by **Holm–Bonferroni** (family-wise
  error ``alpha`` per metric); ``significant`` means the Holm-adjusted p-value is below ``alpha``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .. import _io
from ..attribution import Attribution
from ..errors import InputError
from ..models import load_model
from .masking import MetricResult, check_frac, make_masking

__all__ = ["evaluate_explanations", "check_data_fingerprints", "ExplanationScores", "METRICS", "MetricSpec",
           "DEFAULT_METRICS", "LOCALIZATION_METRICS", "holm", "paired_permutation_pvalue", "rerunnable",
           "metrics_table"]

class MetricSpec(NamedTuple):
    """One row of the metrics table: everything the runner, the CLI and the docs know about a metric.

    ``spec[0]`` is ``higher_is_better`` and ``spec[1]`` is ``needs`` (the table's older tuple shape).
    ``run(ctx, attribution)`` returns ``{metric name: MetricResult}``: metrics computed together
    (average drop and increase in confidence, the two randomization similarities) share ``run``
    and are computed once per attribution.

    Parameters
    ----------
    higher_is_better : bool
        Direction of the metric.
    needs : tuple of str
        What it needs: ``'model'``, ``'labels'``, ``'mask'``, ``'rerun'`` (re-explains inputs, so a
        registered method).
    run : callable
        ``run(ctx, attribution) -> {metric name: MetricResult}``.
    family : str
        ``'faithfulness'``, ``'localization'``, ``'randomization'``, ``'robustness'``,
        ``'complexity'`` or ``'axiomatic'``.
    reference : str
        The paper the metric comes from.
    cost : str
        Forward passes / explanations per sample.
    random : bool, default False
        Draws random numbers (seeded by ``seed``).

    Examples
    --------
    >>> from trustmap.metrics import METRICS
    >>> spec = METRICS["deletion"]
    >>> spec.higher_is_better, spec.needs, spec.family
    (False, ('model',), 'faithfulness')
    >>> spec[0] is spec.higher_is_better
    True
    """

    higher_is_better: bool
    needs: tuple[str, ...]          # 'model', 'labels', 'mask', 'rerun' (re-explains inputs: a registered method)
    run: Callable[["_Context", Any], dict[str, MetricResult]]
    family: str                     # faithfulness, localization, randomization, robustness, complexity, axiomatic
    reference: str
    cost: str                       # forward passes / explanations per sample
    random: bool = False            # draws random numbers (seeded by ``seed``)


@dataclass
class _Context:
    """What every metric of one :func:`evaluate_explanations` call shares."""

    model: Any
    X: Any
    y: Any
    mask: Any
    layout: Any
    masking: Any
    frac: float
    steps: Any
    tau: float | None
    r2_frac: float | None
    r_metric: str
    n_runs: int
    subset: float
    level: float
    n_boot: int
    seed: int
    params: dict[str, dict[str, Any]]
    notes: list[str]
    reference: Any = None

    @property
    def common(self) -> dict[str, Any]:
        return dict(layout=self.layout, masking=self.masking, reference=self.reference)

    def kw(self, metric: str) -> dict[str, Any]:
        return dict(self.params.get(metric, {}))


def _run_drop_increase(ctx: _Context, a) -> dict[str, MetricResult]:
    from .faithfulness import drop_increase

    d, i = drop_increase(ctx.model, ctx.X, a, frac=ctx.frac, **ctx.common)
    return {"average_drop": d, "increase_in_confidence": i}


def _run_curve(kind: str):
    def run(ctx: _Context, a) -> dict[str, MetricResult]:
        from . import faithfulness as F

        return {kind: getattr(F, kind)(ctx.model, ctx.X, a, steps=ctx.steps, **ctx.common)}
    return run


def _run_faithfulness_correlation(ctx: _Context, a) -> dict[str, MetricResult]:
    from .faithfulness import faithfulness_correlation

    return {"faithfulness_correlation": faithfulness_correlation(ctx.model, ctx.X, a, n_runs=ctx.n_runs,
                                                                 subset=ctx.subset, **ctx.common)}


def _run_r2(ctx: _Context, a) -> dict[str, MetricResult]:
    from .faithfulness import r2_at_budget

    return {"r2": r2_at_budget(ctx.model, ctx.X, ctx.y, a, tau=ctx.tau, frac=ctx.r2_frac, r_metric=ctx.r_metric,
                               level=ctx.level, n_boot=ctx.n_boot, **ctx.common)}


def _run_localization(metric: str):
    def run(ctx: _Context, a) -> dict[str, MetricResult]:
        from . import localization as L

        lay = a.layout if isinstance(a, Attribution) else _caller_layout(ctx.model, ctx.X, ctx.layout)
        return {metric: getattr(L, metric)(a, ctx.mask, layout=lay, masking=ctx.masking)}
    return run


def rerunnable(a) -> bool:
    """Whether an attribution can be recomputed on other inputs or models (a registered explainer's)."""
    if not isinstance(a, Attribution) or a.method in ("trust", "edge_detector"):
        return False
    from ..explain import list_methods

    return a.method in list_methods()


def _run_randomization(ctx: _Context, a) -> dict[str, MetricResult]:
    n = len(ctx.X)
    if rerunnable(a):
        sp, ss = _rerun_similarity(ctx.model, ctx.X, a, ctx.layout, ctx.masking.normalize, ctx.seed)
    else:
        sp = ss = np.full(n, np.nan)
        ctx.notes.append("randomization metrics need a re-runnable method (registered explainer)")
    out = {}
    for met, v in (("randomization_spearman", sp), ("randomization_ssim", ss)):
        out[met] = MetricResult(met, float(np.nanmean(v)) if np.isfinite(v).any() else math.nan, v, False,
                                {"test": "all layers randomized"}, ctx.masking.record())
    return out


def _run_new(metric: str, module: str, function: str, takes: tuple[str, ...] = ("model",)):
    """A runner for the metrics of the newer families: ``function(model, X, maps, **params)``.

    ``takes`` lists what the function is given besides the maps: ``'model'`` (model and X, with the
    masking convention and seed), ``'rerun'`` (the explainer re-run on perturbed inputs: the
    attribution must come from a registered method; NaN with a note otherwise).
    """
    def run(ctx: _Context, a) -> dict[str, MetricResult]:
        import importlib

        fn = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        kw = ctx.kw(metric)
        if "rerun" in takes and not rerunnable(a):
            n = len(ctx.X)
            ctx.notes.append(f"{metric} needs a re-runnable method (registered explainer)")
            nan = np.full(n, np.nan)
            return {metric: MetricResult(metric, math.nan, nan, METRICS[metric].higher_is_better, {}, {})}
        if "model" in takes:
            import inspect

            kw.setdefault("seed", ctx.seed)
            if ctx.reference is not None and "reference" in inspect.signature(fn).parameters:
                kw.setdefault("reference", ctx.reference)
            res = fn(ctx.model, ctx.X, a, layout=ctx.layout, masking=ctx.masking, **kw)
        else:
            res = fn(a, X=ctx.X, model=ctx.model, layout=ctx.layout, **kw)
        return {metric: res}
    return run


def _run_sensitivity(ctx: _Context, a) -> dict[str, MetricResult]:
    from .robustness import sensitivity

    if not rerunnable(a):
        ctx.notes.append("sensitivity needs a re-runnable method (registered explainer)")
        nan = np.full(len(ctx.X), np.nan)
        return {k: MetricResult(k, math.nan, nan, False, {}, {}) for k in ("max_sensitivity", "avg_sensitivity")}
    kw = {**ctx.kw("max_sensitivity"), **ctx.kw("avg_sensitivity")}
    kw.setdefault("seed", ctx.seed)
    mx, av = sensitivity(ctx.model, ctx.X, a, layout=ctx.layout, **kw)
    return {"max_sensitivity": mx, "avg_sensitivity": av}


_F = "faithfulness"
_ROB, _CX, _AX = "robustness", "complexity", "axiomatic"
#: The one metrics table: name -> :class:`MetricSpec` (direction, needs, runner, family, reference, cost).
METRICS: dict[str, MetricSpec] = {
    "average_drop": MetricSpec(False, ("model",), _run_drop_increase, _F,
                               "Chattopadhay et al. 2018 (Grad-CAM++)", "1 forward"),
    "increase_in_confidence": MetricSpec(True, ("model",), _run_drop_increase, _F,
                                         "Chattopadhay et al. 2018 (Grad-CAM++)", "1 forward (shared)"),
    "deletion": MetricSpec(False, ("model",), _run_curve("deletion"), _F, "Petsiuk et al. 2018 (RISE)",
                           "steps + 1 forwards"),
    "insertion": MetricSpec(True, ("model",), _run_curve("insertion"), _F, "Petsiuk et al. 2018 (RISE)",
                            "steps + 1 forwards"),
    "faithfulness_correlation": MetricSpec(True, ("model",), _run_faithfulness_correlation, _F,
                                           "Bhatt et al. 2020", "n_runs forwards", True),
    "r2": MetricSpec(True, ("model", "labels"), _run_r2, _F, "Dai et al. 2023 (TRUST / dnn-locate)",
                     "1 forward"),
    "pointing_game": MetricSpec(True, ("mask",), _run_localization("pointing_game"), "localization",
                                "Zhang et al. 2018", "map only"),
    "mass_inside": MetricSpec(True, ("mask",), _run_localization("mass_inside"), "localization",
                              "Arras et al. 2022 (relevance mass)", "map only"),
    "topk_iou": MetricSpec(True, ("mask",), _run_localization("topk_iou"), "localization",
                           "top-k intersection over union", "map only"),
    "auprc": MetricSpec(True, ("mask",), _run_localization("auprc"), "localization",
                        "area under the precision-recall curve", "map only"),
    "randomization_spearman": MetricSpec(False, ("model", "rerun"), _run_randomization, "randomization",
                                         "Adebayo et al. 2018", "1 explanation on a randomized copy"),
    "randomization_ssim": MetricSpec(False, ("model", "rerun"), _run_randomization, "randomization",
                                     "Adebayo et al. 2018", "1 explanation on a randomized copy (shared)"),
    "random_logit": MetricSpec(False, ("model", "rerun"), _run_new("random_logit", "robustness", "random_logit",
                                                                   ("model", "rerun")), "randomization",
                               "Sixt et al. 2020 (Quantus RandomLogit)", "1 explanation", True),
    "road_morf": MetricSpec(False, ("model",), _run_new("road_morf", "road", "road_morf"), _F,
                            "Rong et al. 2022 (ROAD, noisy linear imputation; Quantus ROAD)",
                            "len(percentages) forwards + imputation", True),
    "road_lerf": MetricSpec(True, ("model",), _run_new("road_lerf", "road", "road_lerf"), _F,
                            "Rong et al. 2022 (ROAD, least relevant first)",
                            "len(percentages) forwards + imputation", True),
    "selectivity": MetricSpec(False, ("model",), _run_new("selectivity", "regions", "selectivity"), _F,
                              "Montavon et al. 2018 (Quantus Selectivity)", "1 forward per patch"),
    "region_perturbation": MetricSpec(True, ("model",), _run_new("region_perturbation", "regions",
                                                                 "region_perturbation"), _F,
                                      "Samek et al. 2017 (AOPC, MoRF, grid patches)", "min(regions, patches) forwards"),
    "irof": MetricSpec(True, ("model",), _run_new("irof", "regions", "irof"), _F,
                       "Rieger & Hansen 2020 (Quantus IROF)", "1 forward per segment (+ superpixels in 2D)"),
    "monotonicity_correlation": MetricSpec(True, ("model",), _run_new("monotonicity_correlation", "axiomatic",
                                                                      "monotonicity_correlation"), _F,
                                           "Nguyen & Martinez 2020 (Quantus MonotonicityCorrelation)",
                                           "entries / features_in_step forwards"),
    "infidelity": MetricSpec(False, ("model",), _run_new("infidelity", "axiomatic", "infidelity"), _F,
                             "Yeh et al. 2019 (Captum infidelity)", "n_samples forwards", True),
    "completeness": MetricSpec(False, ("model",), _run_new("completeness", "axiomatic", "completeness"), _AX,
                               "Sundararajan et al. 2017 (Quantus Completeness, as a gap)", "1 forward"),
    "non_sensitivity": MetricSpec(False, ("model",), _run_new("non_sensitivity", "axiomatic", "non_sensitivity"),
                                  _AX, "Nguyen & Martinez 2020 (Quantus NonSensitivity)",
                                  "n_samples * entries / features_in_step forwards", True),
    # robustness: the explainer is re-run on perturbed inputs
    "max_sensitivity": MetricSpec(False, ("model", "rerun"), _run_sensitivity, _ROB,
                                  "Yeh et al. 2019 (Captum sensitivity_max)", "n_samples explanations", True),
    "avg_sensitivity": MetricSpec(False, ("model", "rerun"), _run_sensitivity, _ROB, "Yeh et al. 2019",
                                  "n_samples explanations (shared with max_sensitivity)", True),
    "local_lipschitz": MetricSpec(False, ("model", "rerun"), _run_new("local_lipschitz", "robustness",
                                                                      "local_lipschitz", ("model", "rerun")), _ROB,
                                  "Alvarez-Melis & Jaakkola 2018 (Quantus LocalLipschitzEstimate)",
                                  "n_samples explanations", True),
    # complexity: the map alone
    "sparseness": MetricSpec(True, (), _run_new("sparseness", "map_complexity", "sparseness", ()), _CX,
                             "Chalasani et al. 2020 (Gini; Quantus Sparseness)", "map only"),
    "complexity": MetricSpec(False, (), _run_new("complexity", "map_complexity", "complexity", ()), _CX,
                             "Bhatt et al. 2020 (entropy; Quantus Complexity)", "map only"),
    "effective_complexity": MetricSpec(False, (), _run_new("effective_complexity", "map_complexity",
                                                           "effective_complexity", ()), _CX,
                                       "Nguyen & Martinez 2020 (Quantus EffectiveComplexity)", "map only"),
}
DEFAULT_METRICS = ("average_drop", "increase_in_confidence", "deletion", "insertion", "faithfulness_correlation", "r2")
LOCALIZATION_METRICS = ("pointing_game", "mass_inside", "topk_iou", "auprc")

_FORMAT = "trustmap.explanation_scores/1"


# ---- statistics ----------------------------------------------------------------------------------
def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * q[order])
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def _boot_counts(n: int, n_boot: int, seed: int, chunk_bytes: int = 32 * 2**20):
    """Multinomial resampling counts ``(b, n)`` in chunks (one draw of ``n`` indices per replicate)."""
    rng = np.random.default_rng(seed)
    step = max(1, min(int(n_boot), chunk_bytes // max(1, 8 * n)))
    for b0 in range(0, int(n_boot), step):
        b = min(step, int(n_boot) - b0)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield b0, np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _boot_sums(rows: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Resampled sums of each row of ``rows`` ``(R, N)``: ``(R, n_boot)``; the same replicates for every
    row and every call with this ``seed`` and ``N`` (so all methods and metrics are paired)."""
    rows = np.atleast_2d(rows)
    out = np.empty((rows.shape[0], int(n_boot)))
    for b0, w in _boot_counts(rows.shape[1], n_boot, seed):
        out[:, b0:b0 + len(w)] = rows @ w.T
    return out


def paired_permutation_pvalue(a: np.ndarray, b: np.ndarray, *, n_perm: int = 10000, seed: int = 0,
                              clean: np.ndarray | None = None) -> float:
    """Two-sided p-value of a paired permutation test between per-sample values ``a`` and ``b``.

    Under the null the two methods' values are exchangeable within each sample: each sample's
    pair is swapped with probability 1/2. The statistic is the difference of the means (samples
    where either is NaN are dropped); with ``clean`` (clean risks) it is the difference of the
    R² values ``1 - mean(clean) / mean(masked)``. ``p = (1 + #{|T*| >= |T|}) / (1 + n_perm)``;
    exact (all ``2^n`` swaps) when ``2^n <= n_perm``.
    """
    from ..localizer.r2 import r2_value

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if clean is not None:
        ok &= np.isfinite(clean)
    a, b = a[ok], b[ok]
    n = len(a)
    if n == 0:
        return math.nan
    d = b - a  # a swap moves d from b to a

    def stat(shift: np.ndarray) -> np.ndarray:
        if clean is None:
            return ((a.sum() + shift) - (b.sum() - shift)) / n
        c = float(np.asarray(clean)[ok].mean())
        return r2_value(c, (a.sum() + shift) / n) - r2_value(c, (b.sum() - shift) / n)

    t0 = float(stat(np.zeros(1))[0])
    tol = 1e-12 * max(1.0, abs(t0))
    if 2 ** n <= n_perm:
        swaps = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
        t = stat(swaps @ d)
        return float(np.mean(np.abs(t) >= abs(t0) - tol))
    rng = np.random.default_rng(seed)
    count, done = 0, 0
    step = max(1, min(int(n_perm), (32 * 2**20) // max(1, 8 * n)))
    while done < n_perm:
        k = min(step, n_perm - done)
        swaps = rng.integers(0, 2, size=(k, n)).astype(np.float64)
        count += int((np.abs(stat(swaps @ d)) >= abs(t0) - tol).sum())
        done += k
    return (1 + count) / (1 + n_perm)


# ---- the table -----------------------------------------------------------------------------------
@dataclass
class ExplanationScores:
    """Metric values per method with bootstrap intervals, and paired comparisons.

    ``cells[method][metric]`` holds ``value``, ``low``, ``high``, ``n`` (samples that count);
    ``comparisons`` lists, per metric and pair of methods, the difference ``a - b`` with its
    interval, the permutation p-value, the Holm-adjusted p-value, ``significant`` and ``better``
    (the better method when significant, else ``None``). ``results`` keeps every
    :class:`MetricResult` (per-sample values and curves).

    Returned by :func:`trustmap.evaluate`.

    Parameters
    ----------
    methods : list of str
        The methods compared, in table order.
    metrics : list of str
        The metrics computed, in table order.
    cells : dict
        ``cells[method][metric]``: ``value``, ``low``, ``high``, ``n``, ``higher_is_better``.
    comparisons : list of dict
        One per metric and pair of methods: ``metric``, ``a``, ``b``, ``diff``, ``low``, ``high``,
        ``p``, ``p_holm``, ``significant``, ``better``.
    settings : dict
        The settings of the evaluation (masking convention, budgets, seeds, ...).
    results : dict, optional
        ``results[method][metric]``: the :class:`MetricResult`.

    Raises
    ------
    InputError
        :meth:`comparison` of a metric or pair of methods the table does not hold.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 14, 2))
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> X = np.random.default_rng(0).random((20, 1, 16)).astype(np.float32)
    >>> att = {m: trustmap.explain(model, X, method=m) for m in ("saliency", "gradcam")}
    >>> scores = trustmap.evaluate(model, X, model.predict(X), att, metrics=["average_drop", "deletion"],
    ...                            n_boot=200, n_perm=200)
    >>> scores.methods, scores.metrics
    (['saliency', 'gradcam'], ['average_drop', 'deletion'])
    >>> low, high = scores.interval("gradcam", "deletion")
    >>> low <= scores.value("gradcam", "deletion") <= high
    True
    >>> sorted(scores.comparison("deletion", "gradcam", "saliency"))
    ['a', 'b', 'better', 'diff', 'high', 'low', 'metric', 'p', 'p_holm', 'significant']
    """

    methods: list[str]
    metrics: list[str]
    cells: dict[str, dict[str, dict[str, Any]]]
    comparisons: list[dict[str, Any]]
    settings: dict[str, Any]
    results: dict[str, dict[str, MetricResult]] = field(default_factory=dict, repr=False)

    def value(self, method: str, metric: str) -> float:
        return float(self.cells[method][metric]["value"])

    def interval(self, method: str, metric: str) -> tuple[float, float]:
        c = self.cells[method][metric]
        return float(c["low"]), float(c["high"])

    def comparison(self, metric: str, a: str, b: str) -> dict[str, Any]:
        """The comparison of ``a`` and ``b`` on ``metric`` (difference as ``a - b``)."""
        for c in self.comparisons:
            if c["metric"] == metric and {c["a"], c["b"]} == {a, b}:
                if c["a"] == a:
                    return dict(c)
                out = dict(c)
                out.update(a=a, b=b, diff=-c["diff"], low=-c["high"], high=-c["low"])
                return out
        raise InputError("no such comparison", parameter="metric/a/b",
                         expected=f"a metric of {self.metrics} and two of {self.methods}", got=(metric, a, b),
                         fix="check the names")

    def to_dict(self, per_sample: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"format": _FORMAT, "methods": self.methods, "metrics": self.metrics,
                               "higher_is_better": {m: METRICS[m][0] for m in self.metrics},
                               "cells": self.cells, "comparisons": self.comparisons, "settings": self.settings}
        if per_sample:
            out["per_sample"] = {meth: {met: r.per_sample for met, r in rs.items()} for meth, rs in self.results.items()}
        return _io.to_jsonable(out)

    def to_markdown(self, digits: int = 3) -> str:
        lvl = int(round(100 * self.settings.get("level", 0.95)))
        arrows = {m: ("↑" if METRICS[m][0] else "↓") for m in self.metrics}
        head = "| method | " + " | ".join(f"{m} {arrows[m]}" for m in self.metrics) + " |"
        lines = [f"Values with {lvl}% bootstrap intervals over samples (↑ higher is better, ↓ lower).", "",
                 head, "|---" * (len(self.metrics) + 1) + "|"]
        for meth in self.methods:
            row = []
            for met in self.metrics:
                c = self.cells[meth][met]
                if c["value"] is None or not math.isfinite(c["value"]):
                    row.append("n/a")
                else:
                    row.append(f"{c['value']:.{digits}g} [{c['low']:.{digits}g}, {c['high']:.{digits}g}]")
            lines.append(f"| {meth} | " + " | ".join(row) + " |")
        sig = [c for c in self.comparisons if c["significant"]]
        lines += ["", f"Paired comparisons: {self.settings['test']}; {self.settings['correction']}, "
                      f"alpha = {self.settings['alpha']:g}. {len(sig)} of {len(self.comparisons)} differences "
                      "are significant" + (":" if sig else ".")]
        if sig:
            lines += ["", "| metric | better | than | difference | interval | p (Holm) |", "|---|---|---|---|---|---|"]
            for c in sig:
                worse = c["b"] if c["better"] == c["a"] else c["a"]
                d = c["diff"] if c["better"] == c["a"] else -c["diff"]
                lo, hi = (c["low"], c["high"]) if c["better"] == c["a"] else (-c["high"], -c["low"])
                lines.append(f"| {c['metric']} | {c['better']} | {worse} | {d:+.{digits}g} | "
                             f"[{lo:.{digits}g}, {hi:.{digits}g}] | {c['p_holm']:.2g} |")
        notes = self.settings.get("notes") or []
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()

    def save(self, path: str | os.PathLike, per_sample: bool = True) -> list[Path]:
        """Write ``path`` (JSON; ``.json`` added when missing) and the markdown table beside it (``.md``)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path.with_name(path.name + ".json")
        files = [_io.write_json(path, self.to_dict(per_sample=per_sample))]
        files.append(_io.write_text(path.with_suffix(".md"), self.to_markdown()))
        return files


# ---- the runner ------------------------------------------------------------------------------------
def _as_dict(attributions) -> dict[str, Any]:
    if isinstance(attributions, dict):
        items = list(attributions.items())
    elif isinstance(attributions, Attribution):
        items = [(attributions.method, attributions)]
    elif isinstance(attributions, (list, tuple)) and attributions and all(isinstance(a, Attribution)
                                                                          for a in attributions):
        items = [(a.method, a) for a in attributions]
    elif isinstance(attributions, tuple) and len(attributions) == 1 and hasattr(attributions[0], "shape"):
        items = [("attribution", attributions[0])]  # Captum's output for a one-input model: a 1-tuple
    elif hasattr(attributions, "shape") and hasattr(attributions, "__array__") or isinstance(attributions, np.ndarray):
        items = [("attribution", attributions)]     # one array or tensor (e.g. Captum's attribute(...) output)
    else:
        raise InputError("attributions must name their maps", parameter="attributions",
                         expected="a dict {name: Attribution, array or tensor}, a list of Attributions, or one "
                                  "array/tensor shaped like X",
                         got=type(attributions).__name__, fix="e.g. attributions={'gradcam': attr}")
    names = [str(k) for k, _ in items]
    if len(set(names)) != len(names) or not names:
        raise InputError("attribution names must be unique and there must be at least one", parameter="attributions",
                         expected="distinct names", got=names, fix="pass a dict with distinct keys")
    def plain(v):
        if isinstance(v, (Attribution, np.ndarray)) or hasattr(v, "detach"):
            return v
        if isinstance(v, tuple) and len(v) == 1 and hasattr(v[0], "shape"):
            return plain(v[0])
        return np.asarray(v) if hasattr(v, "__array__") else v  # e.g. a TensorFlow or JAX array
    return dict(zip(names, [plain(v) for _, v in items]))


def check_data_fingerprints(X, attrs: dict[str, Any], parameter: str = "X") -> None:
    """Refuse an :class:`~trustmap.Attribution` made for other inputs than ``X``: its provenance
    records the sha256 of the data it explained (``data_sha256``); it must be ``X``'s (as given, or
    as float32). Bare arrays and Attributions without the record are not checked."""
    prints = None
    for name, a in attrs.items():
        fp = a.provenance.get("data_sha256") if isinstance(a, Attribution) else None
        if fp is None:
            continue
        if prints is None:
            arr = X.detach().cpu().numpy() if hasattr(X, "detach") else np.asarray(X)
            arr = np.ascontiguousarray(arr)
            prints = {_io.fingerprint_array(arr), _io.fingerprint_array(arr.astype(np.float32))}
        if fp not in prints:
            from ..errors import DataError

            raise DataError(f"attribution {name!r} was made for other inputs than {parameter}", parameter=parameter,
                            expected=f"the inputs the maps explain (data fingerprint {fp})",
                            got="a different data fingerprint",
                            fix="pass the same samples, in the same order and layout, that were explained "
                                "(a slice attr[:n] scored with X[:n] is accepted)")


def _metrics(metrics, have_labels: bool, have_mask: bool) -> list[str]:
    if metrics is None:
        out = [m for m in DEFAULT_METRICS if m != "r2" or have_labels]
        return out + (list(LOCALIZATION_METRICS) if have_mask else [])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    out = []
    for m in metrics:
        if m not in METRICS:
            import difflib

            close = difflib.get_close_matches(str(m), list(METRICS), n=2)
            raise InputError("unknown metric", parameter="metrics", expected="one of " + ", ".join(METRICS), got=m,
                             fix=("did you mean " + " or ".join(map(repr, close)) + "?") if close
                             else "pick names from trustmap.metrics.METRICS")
        if "labels" in METRICS[m][1] and not have_labels:
            raise InputError(f"metric {m!r} needs labels", parameter="y", expected="the true labels", got=None,
                             fix="pass y, or drop the metric")
        if "mask" in METRICS[m][1] and not have_mask:
            raise InputError(f"metric {m!r} needs a ground-truth region", parameter="mask",
                             expected="a region mask with X's shape", got=None,
                             fix="pass mask= (e.g. dataset.mask for a synthetic task), or drop the metric")
        if m not in out:
            out.append(m)
    if not out:
        raise InputError("no metric chosen", parameter="metrics", expected="one or more of " + ", ".join(METRICS),
                         got=metrics, fix="pass metrics=None for the defaults")
    return out


def _r2_budget(attrs: dict[str, Any], r2_tau, r2_frac) -> tuple[float | None, float | None, str]:
    if r2_tau is not None and r2_frac is not None:
        raise InputError("give r2_tau or r2_frac, not both", parameter="r2_tau/r2_frac", expected="one of them",
                         got=(r2_tau, r2_frac), fix="drop one")
    if r2_tau is not None:
        return float(r2_tau), None, "r2_tau given"
    if r2_frac is not None:
        return None, check_frac(r2_frac, "r2_frac"), "r2_frac given"
    for name, a in attrs.items():
        if isinstance(a, Attribution) and a.method == "trust" and "tau" in a.extras:
            return float(a.extras["tau"]), None, f"the localizer's budget (tau of {name!r})"
    return None, 0.1, "default: 10% of the entries"


def _rerun_similarity(model, X, attr, layout, normalize, seed) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample Spearman and SSIM of the maps after randomizing every layer at once."""
    from .sanity import _explainer_fn, _kit, _run, _similarity
    from .masking import Masking

    m = load_model(model)
    t, lay = m.to_internal(X, layout)
    fn, _ = _explainer_fn(attr, None)
    layers, make_copy = _kit(m, t[:1])
    rm = make_copy(m, layers, seed)
    ref = np.asarray(attr.internal(), dtype=np.float64)
    maps = _run(fn, rm, X, attr.targets, lay, t.shape)
    return _similarity(ref, maps, Masking(normalize=normalize))


def evaluate_explanations(model, X, y=None, attributions=None, metrics: Sequence[str] | str | None = None, *,
                          mask=None, frac: float = 0.3, steps: int | str = "auto", r2_tau: float | None = None,
                          r2_frac: float | None = None, r_metric: str = "prob", n_runs: int = 100,
                          subset: float = 0.1, layout=None, masking=None, baseline: Any = "zero",
                          normalize: str | None = None, budget: str = "total", channels: str = "each",
                          reference=None, n_boot: int = 2000, level: float = 0.95, n_perm: int = 10000,
                          alpha: float = 0.05, seed: int = 0,
                          metric_params: dict[str, dict[str, Any]] | None = None) -> ExplanationScores:
    """Score explanations of ``model`` on ``X`` with intervals and paired comparisons.

    Parameters
    ----------
    model : anything :func:`trustmap.load_model` takes.
    X : the inputs the maps explain (any layout the model accepts).
    y : true labels (needed for ``'r2'``); optional otherwise.
    attributions : ``{name: Attribution or array shaped like X}`` (or a list of Attributions).
    metrics : names from :data:`METRICS` (a list or a comma-separated string); default: the
        faithfulness metrics (+ ``'r2'`` when ``y`` is given, + localization when ``mask`` is).
    mask : ground-truth region (the maps' shape, or without the channel axis) for localization.
    frac : share of the map kept for ``average_drop`` / ``increase_in_confidence`` (seed: 0.3).
    steps : deletion/insertion steps (``'auto'``: one entry per step, at most 100).
    r2_tau, r2_frac : budget for ``'r2'``; default: the τ of a localizer's Attribution among
        ``attributions`` (method ``'trust'``), else 10 % of the entries.
    n_runs, subset : random subsets for the faithfulness correlation.
    baseline, normalize, budget, channels, reference, masking : the masking convention
        (:mod:`trustmap.metrics.masking`), the same for every metric.
    n_boot, level : bootstrap resamples and interval level.
    n_perm, alpha : permutations per paired test, family-wise error per metric (Holm).
    seed : tie-breaking, random subsets, bootstrap and permutations.
    metric_params : ``{metric: {parameter: value}}`` for the metrics of the newer families (e.g.
        ``{'max_sensitivity': {'n_samples': 20}}``); see each metric's function.

    Returns
    -------
    ExplanationScores
        Per method and metric: the per-sample values, their mean with a bootstrap interval, and
        the paired comparisons between methods (permutation tests, Holm-corrected);
        ``to_markdown()`` and ``to_dict()`` give them as a table and as JSON-ready numbers.

    Raises
    ------
    InputError
        An unknown metric (the message lists :data:`METRICS`), ``'r2'`` without labels, or a bad setting.
    ShapeError
        A map whose shape is not ``X``'s, or a ``mask`` of another shape.
    NonFiniteError
        NaN or Inf in ``X``, the maps or the model's scores.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 14, 2))
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> X = np.random.default_rng(0).random((20, 1, 16)).astype(np.float32)
    >>> att = {m: trustmap.explain(model, X, method=m) for m in ("gradcam", "saliency")}
    >>> scores = trustmap.evaluate(model, X, model.predict(X), attributions=att,
    ...                            metrics=["average_drop", "increase_in_confidence", "deletion"],
    ...                            n_boot=200, n_perm=200)
    >>> scores.metrics
    ['average_drop', 'increase_in_confidence', 'deletion']
    >>> md = scores.to_markdown()  # means with 95 % intervals, paired tests
    """
    attrs = _as_dict(attributions if attributions is not None else {})
    mk = make_masking(masking, baseline=baseline, normalize=normalize, budget=budget, channels=channels, seed=seed)
    chosen = _metrics(metrics, y is not None, mask is not None)
    frac = check_frac(frac)
    for name, v in (("n_boot", n_boot), ("n_perm", n_perm)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 100:
            raise InputError(f"{name} must be an int >= 100", parameter=name, expected="an int >= 100", got=v,
                             fix=f"e.g. {name}=2000")
    for name, v in (("level", level), ("alpha", alpha)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < 1:
            raise InputError(f"{name} must be in (0, 1)", parameter=name, expected="a number in (0, 1)", got=v,
                             fix="e.g. level=0.95, alpha=0.05")
    m = load_model(model)
    m.to_internal(X, layout)  # validate X once, early
    check_data_fingerprints(X, attrs)
    tau, r2f, r2_source = _r2_budget(attrs, r2_tau, r2_frac) if "r2" in chosen else (None, None, "")
    notes: list[str] = []
    ctx = _Context(m, X, y, mask, layout, mk, frac, steps, tau, r2f, r_metric, n_runs, subset, level, n_boot,
                   int(seed), _metric_params(metric_params, chosen), notes, reference)
    results: dict[str, dict[str, MetricResult]] = {}
    for name, a in attrs.items():
        res: dict[str, MetricResult] = {}
        done: set = set()
        for met in chosen:
            spec = METRICS[met]
            if met in res or spec.run in done:
                continue
            done.add(spec.run)
            n0 = len(notes)
            res.update(spec.run(ctx, a))
            notes[n0:] = [f"{name}: {t}" for t in notes[n0:]]
        results[name] = {k: v for k, v in res.items() if k in chosen}
    methods = list(attrs)
    cells, comparisons = _statistics(methods, chosen, results, n_boot, level, n_perm, alpha, seed)
    masking_rec = next(iter(next(iter(results.values())).values())).masking if results and chosen else mk.record()
    settings = {"frac": frac, "steps": steps, "r2_tau": tau, "r2_frac": r2f, "r2_budget": r2_source,
                "r_metric": r_metric, "n_runs": n_runs, "subset": subset, "masking": masking_rec, "n": int(len(X)),
                "n_boot": int(n_boot), "level": float(level), "n_perm": int(n_perm), "alpha": float(alpha),
                "seed": int(seed), "bootstrap": "percentile, paired (the same resamples for all methods)",
                "test": "paired permutation test (values swapped within samples)",
                "correction": "Holm-Bonferroni over the method pairs of each metric",
                "model": {"name": m.name, "framework": m.framework}, "notes": sorted(set(notes)),
                "metric_params": ctx.params}
    return ExplanationScores(methods, chosen, cells, comparisons, settings, results)


def _metric_params(metric_params, chosen: list[str]) -> dict[str, dict[str, Any]]:
    if metric_params is None:
        return {}
    if not isinstance(metric_params, dict) or not all(isinstance(v, dict) for v in metric_params.values()):
        raise InputError("metric_params must map metric names to parameter dicts", parameter="metric_params",
                         expected="{metric: {parameter: value}}", got=type(metric_params).__name__,
                         fix="e.g. metric_params={'road_morf': {'percentages': [10, 50, 90]}}")
    extra = [k for k in metric_params if k not in chosen]
    if extra:
        raise InputError("metric_params names metrics that are not computed", parameter="metric_params",
                         expected="names among the chosen metrics " + ", ".join(chosen), got=extra,
                         fix="add them to metrics= or drop their parameters")
    return {k: dict(v) for k, v in metric_params.items()}


def metrics_table() -> str:
    """The metrics table as markdown: name, family, direction, needs, cost, reference.

    Returns
    -------
    str

    Examples
    --------
    >>> from trustmap.metrics import metrics_table
    >>> print(metrics_table().splitlines()[0])
    | metric | family | better | needs | cost per sample | reference |
    """
    lines = ["| metric | family | better | needs | cost per sample | reference |", "|---|---|---|---|---|---|"]
    for name, s in METRICS.items():
        lines.append(f"| `{name}` | {s.family} | {'higher' if s.higher_is_better else 'lower'} | "
                     f"{', '.join(s.needs)} | {s.cost}{' (random, seeded)' if s.random else ''} | {s.reference} |")
    return "\n".join(lines) + "\n"


def _caller_layout(m, X, layout) -> str:
    return m.resolve(X, layout).name


def _statistics(methods, metrics, results, n_boot, level, n_perm, alpha, seed):
    from ..localizer.r2 import r2_value

    q = (1 - level) / 2
    cells: dict[str, dict[str, dict[str, Any]]] = {meth: {} for meth in methods}
    comparisons: list[dict[str, Any]] = []
    for met in metrics:
        higher = METRICS[met][0]
        boots: dict[str, np.ndarray] = {}
        for meth in methods:
            r = results[meth][met]
            if met == "r2":
                c, mr = r.extras["clean_risk"], r.extras["masked_risk"]
                n = len(c)
                sums = _boot_sums(np.vstack([c, mr]), n_boot, seed)
                boot = r2_value(sums[0] / n, sums[1] / n)
                cnt = n
            else:
                v = np.asarray(r.per_sample, dtype=np.float64)
                ok = np.isfinite(v)
                sums = _boot_sums(np.vstack([np.where(ok, v, 0.0), ok.astype(np.float64)]), n_boot, seed)
                with np.errstate(invalid="ignore", divide="ignore"):
                    boot = np.where(sums[1] > 0, sums[0] / np.where(sums[1] > 0, sums[1], 1), np.nan)
                cnt = int(ok.sum())
            boots[meth] = boot
            val = float(r.value)
            if math.isfinite(val) and np.isfinite(boot).any():
                lo, hi = float(np.nanquantile(boot, q)), float(np.nanquantile(boot, 1 - q))
            else:
                lo = hi = math.nan
            cells[meth][met] = {"value": val, "low": lo, "high": hi, "n": cnt, "higher_is_better": higher}
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
        rows = []
        for a, b in pairs:
            ra, rb = results[a][met], results[b][met]
            diff = cells[a][met]["value"] - cells[b][met]["value"]
            d_boot = boots[a] - boots[b]
            if met == "r2":
                p = paired_permutation_pvalue(ra.extras["masked_risk"], rb.extras["masked_risk"], n_perm=n_perm,
                                              seed=seed, clean=ra.extras["clean_risk"])
            else:
                p = paired_permutation_pvalue(ra.per_sample, rb.per_sample, n_perm=n_perm, seed=seed)
            fin = np.isfinite(d_boot)
            lo = float(np.quantile(d_boot[fin], q)) if fin.any() else math.nan
            hi = float(np.quantile(d_boot[fin], 1 - q)) if fin.any() else math.nan
            rows.append({"metric": met, "a": a, "b": b, "diff": float(diff), "low": lo, "high": hi, "p": p})
        adj = holm([r["p"] for r in rows])
        for r, pa in zip(rows, adj):
            sig = bool(np.isfinite(pa) and pa < alpha)
            r["p_holm"] = float(pa)
            r["significant"] = sig
            r["better"] = (r["a"] if (r["diff"] > 0) == higher else r["b"]) if sig and r["diff"] != 0 else None
            comparisons.append(r)
    return cells, comparisons
