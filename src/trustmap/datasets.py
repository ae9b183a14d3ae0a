"""Public alias of :mod:`trustmap.data`: ``from trustmap.datasets import load, read, make_synthetic``."""

from .data import *  # noqa: F401,F403
from .data import __all__  # noqa: F401
