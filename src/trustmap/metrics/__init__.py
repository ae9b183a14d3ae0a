"""Numbers about models and explanations: how well a classifier does (model report)."""

from .model_report import ModelReport, model_report, report_from_scores, roc_auc, roc_curve

__all__ = ["ModelReport", "model_report", "report_from_scores", "roc_auc", "roc_curve"]
