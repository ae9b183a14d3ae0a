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
    """Base class: ``parameter``: what is wrong; expected ...; got ...; fix: ....

    Every trustmap error is one of its subclasses, each also a builtin exception type, so
    ``except trustmap.errors.TrustmapError`` catches them all and ``except ValueError`` keeps working
    for the value errors.

    Parameters
    ----------
    what : str
        What is wrong, in a few words.
    parameter : str, optional
        The argument (or file, or setting) at fault.
    expected : str, optional
        What would have been accepted.
    got : object, optional
        What came (shortened to 120 characters in the message).
    fix : str, optional
        What to do about it.

    Examples
    --------
    >>> from trustmap.errors import InputError
    >>> err = InputError("must be positive", parameter="steps", expected="an int >= 1", got=0, fix="steps=10")
    >>> str(err)
    'steps: must be positive; expected an int >= 1; got 0; fix: steps=10'
    >>> err.parameter, isinstance(err, ValueError)
    ('steps', True)
    """

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
    """A value the caller passed is not acceptable (an unknown name, a value out of range); a
    :class:`ValueError`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> trustmap.explain(net, np.zeros((2, 1, 16), np.float32), method="nosuch")
    Traceback (most recent call last):
    ...
    trustmap.errors.InputError: method: unknown explanation method; ...
    """


class ShapeError(InputError):
    """An array has the wrong rank or size (an :class:`InputError`).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.layout import Layout
    >>> Layout("NLC").to_internal(np.zeros((2, 100)))
    Traceback (most recent call last):
    ...
    trustmap.errors.ShapeError: x: array does not have the rank of layout NLC; expected 3 axes; ...
    """


class LayoutError(InputError):
    """The array layout cannot be resolved (or is ambiguous): an unknown layout name, or a shape
    that fits no layout, or two when ``layout=`` was not given (an :class:`InputError`).

    Examples
    --------
    >>> from trustmap.layout import Layout
    >>> Layout("NXC")
    Traceback (most recent call last):
    ...
    trustmap.errors.LayoutError: layout: unknown layout; ...
    """


class TargetError(InputError):
    """A target class is not valid for the model: out of range, or not one per sample (an
    :class:`InputError`).

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> trustmap.explain(net, np.zeros((2, 1, 16), np.float32), method="saliency", target=5)
    Traceback (most recent call last):
    ...
    trustmap.errors.TargetError: target: target out of range; expected classes 0..1; got 5; ...
    """


class DataError(InputError):
    """Data contents are unusable (NaN, wrong dtype, empty, unreadable file); an :class:`InputError`.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap import datasets
    >>> datasets.from_arrays(np.full((2, 8), np.nan))
    Traceback (most recent call last):
    ...
    trustmap.errors.DataError: X: the array has non-finite values (NaN or inf); ...
    """


class NonFiniteError(DataError):
    """A model's scores (or a computed result) are NaN or Inf where finite numbers are needed (a
    :class:`DataError`): trustmap never answers silently from non-finite scores.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> class Broken(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = torch.nn.Conv1d(1, 2, 3)
    ...     def forward(self, x):
    ...         return self.conv(x).mean(-1) * float("nan")
    >>> trustmap.load_model(Broken()).probs(np.zeros((2, 1, 16), np.float32))
    Traceback (most recent call last):
    ...
    trustmap.errors.NonFiniteError: x: the model's scores are not finite (NaN or Inf) ...
    """


class LabelError(DataError, TargetError):
    """Labels are not class indices (not numeric, NaN, fractional, not one-hot, out of range); both a
    :class:`DataError` and a :class:`TargetError`.

    Examples
    --------
    >>> from trustmap.labels import check_labels
    >>> check_labels([0, 3], n_classes=2)
    Traceback (most recent call last):
    ...
    trustmap.errors.LabelError: y: label out of range...
    """


class ModelOutputError(TrustmapError, ValueError):
    """A model returns something other than class scores ``(N, K)``; a :class:`ValueError`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> trustmap.load_model(torch.nn.Conv1d(1, 2, 3)).probs(np.zeros((2, 1, 16), np.float32))
    Traceback (most recent call last):
    ...
    trustmap.errors.ModelOutputError: model: the model does not return class scores; ...
    """


class ModelLoadError(TrustmapError, ValueError):
    """A model object or file could not be loaded (a wrong type, a weights-only file, an unknown
    input shape); a :class:`ValueError`.

    Examples
    --------
    >>> import trustmap
    >>> trustmap.load_model(42)
    Traceback (most recent call last):
    ...
    trustmap.errors.ModelLoadError: obj: cannot use this object as a model; ...
    """


class UnsafeModelError(ModelLoadError):
    """A model file needs code execution to load and safe_mode refused it (a Keras file with
    ``Lambda`` layers, say); a :class:`ModelLoadError`. Pass ``safe_mode=False`` only for files
    you trust.

    Examples
    --------
    >>> from trustmap.errors import ModelLoadError, UnsafeModelError
    >>> issubclass(UnsafeModelError, ModelLoadError)
    True
    """


class LayerError(TrustmapError, ValueError):
    """A layer name does not exist or cannot be used (for a CAM method, say); a :class:`ValueError`.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> trustmap.explain(net, np.zeros((2, 1, 16), np.float32), method="gradcam", layer="nope")
    Traceback (most recent call last):
    ...
    trustmap.errors.LayerError: layer: no layer of that name; ...
    """


class UnsupportedError(TrustmapError, TypeError):
    """The operation is not possible for this kind of model (gradients of an ONNX model, saving a
    module that is not from :mod:`trustmap.zoo`); a :class:`TypeError`.

    Examples
    --------
    >>> import torch
    >>> from trustmap import zoo
    >>> zoo.save(torch.nn.Linear(2, 2), "model")
    Traceback (most recent call last):
    ...
    trustmap.errors.UnsupportedError: module: only trustmap.zoo models can be saved this way; ...
    """


class DependencyError(TrustmapError, ImportError):
    """An optional dependency is missing (keras, onnxruntime, scikit-image...); an :class:`ImportError`
    whose ``fix`` names the pip extra.

    Examples
    --------
    >>> from trustmap.errors import DependencyError
    >>> issubclass(DependencyError, ImportError)
    True
    """


class BackendError(TrustmapError, RuntimeError):
    """Keras was imported with a backend other than torch (set ``KERAS_BACKEND=torch`` before
    importing keras); a :class:`RuntimeError`.

    Examples
    --------
    >>> from trustmap.errors import BackendError
    >>> issubclass(BackendError, RuntimeError)
    True
    """


class NotFittedError(TrustmapError, AttributeError):
    """An estimator was used before ``fit``; an :class:`AttributeError`.

    Examples
    --------
    >>> import numpy as np, trustmap
    >>> trustmap.Localizer().locate(np.zeros((2, 1, 16), np.float32))
    Traceback (most recent call last):
    ...
    trustmap.errors.NotFittedError: fit: this Localizer is not fitted yet; ...
    """


class RunDirError(TrustmapError, FileNotFoundError):
    """A run directory is missing a file, or a file in it is corrupt; a :class:`FileNotFoundError`.

    Examples
    --------
    >>> from trustmap.report import load_run
    >>> load_run("no_such_run")
    Traceback (most recent call last):
    ...
    trustmap.errors.RunDirError: run_dir: run directory not found; ...
    """


class MissingFileError(TrustmapError, FileNotFoundError):
    """A file the caller named (a data file, say) does not exist; a :class:`FileNotFoundError`.

    Examples
    --------
    >>> from trustmap import datasets
    >>> datasets.read("no_such_file.csv")
    Traceback (most recent call last):
    ...
    trustmap.errors.MissingFileError: path: data file not found; ...
    """
