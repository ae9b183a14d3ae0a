"""Numbers about models and explanations.

* The model report: accuracy, ROC-AUC, confusion, precision / recall / F1 (:func:`model_report`).
* Explanation scores under one masking convention (:mod:`trustmap.metrics.masking`):
  faithfulness (:func:`average_drop`, :func:`increase_in_confidence`, :func:`deletion`,
  :func:`insertion`, :func:`faithfulness_correlation`, :func:`r2_at_budget`), localization against
  a known region (:func:`pointing_game`, :func:`mass_inside`, :func:`topk_iou`, :func:`auprc`),
  randomization sanity checks (:func:`model_randomization`, :func:`label_randomization`, :func:`random_logit`),
  ROAD (:func:`road`), regions (:func:`selectivity`, :func:`region_perturbation`, :func:`irof`),
  :func:`monotonicity_correlation`, :func:`infidelity`, axiomatic (:func:`completeness`,
  :func:`non_sensitivity`), robustness (:func:`sensitivity`, :func:`max_sensitivity`,
  :func:`avg_sensitivity`, :func:`local_lipschitz`), complexity (:func:`sparseness`, :func:`complexity`,
  :func:`effective_complexity`), and
  :func:`evaluate_explanations` (``trustmap.evaluate``): a table with bootstrap intervals and
  paired comparisons.
"""

from .model_report import ModelReport, model_report, report_from_scores, roc_auc, roc_curve
from .masking import Masking, MetricResult
from .faithfulness import (average_drop, deletion, drop_increase, faithfulness_correlation, increase_in_confidence,
                           insertion, r2_at_budget)
from .localization import auprc, mass_inside, pointing_game, topk_iou
from .sanity import SanityResult, edge_detector, label_randomization, model_randomization, spearman_rows, ssim_rows
from .evaluate import DEFAULT_METRICS, METRICS, ExplanationScores, MetricSpec, evaluate_explanations, metrics_table
from .road import road, road_lerf, road_morf
from .regions import irof, region_perturbation, selectivity
from .axiomatic import completeness, infidelity, monotonicity_correlation, non_sensitivity
from .robustness import avg_sensitivity, local_lipschitz, max_sensitivity, random_logit, sensitivity
from .map_complexity import complexity, effective_complexity, sparseness

__all__ = ["ModelReport", "model_report", "report_from_scores", "roc_auc", "roc_curve",
           "Masking", "MetricResult", "average_drop", "increase_in_confidence", "drop_increase", "deletion",
           "insertion", "faithfulness_correlation", "r2_at_budget", "pointing_game", "mass_inside", "topk_iou",
           "auprc", "model_randomization", "label_randomization", "SanityResult", "edge_detector", "spearman_rows",
           "ssim_rows", "evaluate_explanations", "ExplanationScores", "METRICS", "DEFAULT_METRICS",
           "run_evaluate_explanations", "MetricSpec", "metrics_table", "road", "road_morf", "road_lerf", "selectivity",
           "region_perturbation", "irof", "completeness", "infidelity", "monotonicity_correlation", "non_sensitivity",
           "sensitivity", "max_sensitivity", "avg_sensitivity", "local_lipschitz", "random_logit", "sparseness",
           "complexity", "effective_complexity"]


def __getattr__(name):
    if name == "run_evaluate_explanations":  # lazy: the runner reads files and data
        from .runner import run_evaluate_explanations

        return run_evaluate_explanations
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
