"""Data for trustmap: the :class:`Dataset` container, file readers, built-in offline datasets,
and synthetic tasks whose discriminative region is known.

>>> from trustmap.datasets import load, make_synthetic, read
>>> X, y = load("mnist1d", split="test")          # (1000, 40) float32, (1000,) int64
>>> task = make_synthetic(300, channels=12, informative_channels=(4,))
>>> task.mask.shape == task.X.shape                # where the class information is
True
"""

from .builtin import NAMES, SPLITS, load
from .loaders import READ_FORMATS, Dataset, concat, encode_labels, from_arrays, guess_layout, read, read_ts
from .synthetic import SHAPES_1D, SHAPES_2D, make_synthetic

__all__ = [
    "Dataset",
    "NAMES",
    "SPLITS",
    "READ_FORMATS",
    "SHAPES_1D",
    "SHAPES_2D",
    "load",
    "read",
    "read_ts",
    "from_arrays",
    "make_synthetic",
    "concat",
    "encode_labels",
    "guess_layout",
]
