"""trustmap: which parts of a signal or image a fitted CNN classifier relies on, and how much they matter.

Public names: :func:`load_model`, :class:`Model`, :class:`Attribution`, :class:`TrustmapError`,
:class:`Localizer`, :func:`explain`, :func:`evaluate`, and the submodules ``datasets``, ``zoo``, ``metrics``, ``plot``, ``layout``,
``errors``, ``stream`` (imported on first use, so ``import trustmap`` stays light).
"""

from __future__ import annotations

import importlib
import os
import sys

# Keras 3 must start on the torch backend for trustmap to run a Keras model; a user who imports keras
# after trustmap gets it without setting the variable. A backend the user chose is left alone.
if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "torch")

from .attribution import Attribution
from .errors import TrustmapError
from .models import Model, load_model

__version__ = "0.1.0"
__all__ = ["Attribution", "Localizer", "Model", "evaluate", "counterfactual", "TrustmapError", "load_model", "__version__",
           "datasets", "zoo", "metrics", "plot", "layout", "errors", "workflows", "explain", "stream"]

_SUBMODULES = {"datasets", "zoo", "metrics", "plot", "layout", "errors", "workflows", "data",
               "explain", "stream"}  # trustmap.explain is also callable: trustmap.explain(model, x, method=...)
_LAZY = {"Localizer": ("localizer", "Localizer"),
         # trustmap.evaluate(model, X, y, attributions={...}, metrics=[...]) -> ExplanationScores
         "evaluate": ("metrics", "evaluate_explanations"),
         # trustmap.counterfactual(model, X, target=..., reference=X_train, y_reference=y_train) -> Counterfactual
         "counterfactual": ("explain.counterfactual", "counterfactual")}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'trustmap' has no attribute {name!r}")
