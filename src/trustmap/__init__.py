"""trustmap: which parts of a signal or image a fitted CNN classifier relies on, and how much they matter."""

from .attribution import Attribution
from .errors import TrustmapError
from .models import Model, load_model

__version__ = "0.1.0"
__all__ = ["Attribution", "Model", "TrustmapError", "load_model", "__version__"]
