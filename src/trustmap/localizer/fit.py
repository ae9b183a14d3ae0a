"""Kept for imports written before the split: the estimator lives in :mod:`.estimator`."""

from .estimator import Localizer

__all__ = ["Localizer"]
