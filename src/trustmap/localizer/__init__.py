"""The TRUST localizer (dnn-locate; Dai, Shen, Chen, Li, Pan, Ann. Appl. Stat. 2023).

``Localizer(...).fit(model, X, y)`` learns a mask network whose masks remove what a frozen
classifier relies on; ``locate(X)`` returns the masks as an :class:`~trustmap.Attribution`;
``r2(X, y)`` the generalized partial R² with its confidence interval; ``locate(X, refine=n)``
refines each sample's mask by ``n`` gradient steps (:mod:`trustmap.localizer.refine`).
"""

from .estimator import Localizer, OptimisticFitWarning
from .r2 import R2Estimate, R2Path
from .runner import run_locate
from .selection import FirstTauWarning

__all__ = ["Localizer", "OptimisticFitWarning", "FirstTauWarning", "R2Estimate", "R2Path", "run_locate"]
