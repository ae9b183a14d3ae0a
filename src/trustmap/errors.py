"""Typed errors. Each names the parameter, what was expected, what came, and the fix.

Every class is also a builtin exception type (ValueError, TypeError, ...), so code
that catches the builtin keeps working.
"""

from __future__ import annotations

__all__ = [
    "TrustmapError",
    "InputError",
    "ShapeError",
    "LayoutError",
    "TargetError",
    "DataError",
    "NonFiniteError",
    "LabelError",
    "ModelLoadError",
    "ModelOutputError",
    "UnsafeModelError",
    "LayerError",
    "UnsupportedError",
    "DependencyError",
    "BackendError",
    "NotFittedError",
    "RunDirError",
    "MissingFileError",
]


def _short(value: object, limit: int = 120) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TrustmapError(Exception):
    """Base class: ``parameter``: what is wrong; expected ...; got ...; fix: ...."""

    def __init__(
        self,
        what: str,
        *,
        parameter: str | None = None,
        expected: str | None = None,
        got: object = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.parameter = parameter
        self.expected = expected
        self.got = got
        self.fix = fix
        parts = [f"{parameter}: {what}" if parameter else what]
        if expected is not None:
            parts.append(f"expected {expected}")
        if got is not None:
            parts.append(f"got {_short(got)}")
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__("; ".join(parts))


class InputError(TrustmapError, ValueError):
    """A value the caller passed is not acceptable."""


class ShapeError(InputError):
    """An array has the wrong rank or size."""


class LayoutError(InputError):
    """The array layout cannot be resolved (or is ambiguous)."""


class TargetError(InputError):
    """A target class is not valid for the model."""


class DataError(InputError):
    """Data contents are unusable (NaN, wrong dtype, empty, unreadable file)."""


class NonFiniteError(DataError):
    """A model's scores (or a computed result) are NaN or Inf where finite numbers are needed."""


class LabelError(DataError, TargetError):
    """Labels are not class indices (not numeric, NaN, fractional, not one-hot, out of range)."""


class ModelOutputError(TrustmapError, ValueError):
    """A model returns something other than class scores ``(N, K)``."""


class ModelLoadError(TrustmapError, ValueError):
    """A model object or file could not be loaded."""


class UnsafeModelError(ModelLoadError):
    """A model file needs code execution to load and safe_mode refused it."""


class LayerError(TrustmapError, ValueError):
    """A layer name does not exist or cannot be used."""


class UnsupportedError(TrustmapError, TypeError):
    """The operation is not possible for this kind of model."""


class DependencyError(TrustmapError, ImportError):
    """An optional dependency is missing."""


class BackendError(TrustmapError, RuntimeError):
    """Keras was imported with a backend other than torch."""


class NotFittedError(TrustmapError, AttributeError):
    """An estimator was used before ``fit``."""


class RunDirError(TrustmapError, FileNotFoundError):
    """A run directory is missing a file, or a file in it is corrupt."""


class MissingFileError(TrustmapError, FileNotFoundError):
    """A file the caller named (a data file, say) does not exist."""
