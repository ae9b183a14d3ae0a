"""The one label validator: class indices ``(N,)`` from what users pass as labels.

Used wherever labels come in (datasets, the trainer, the model report, class averages; the
localizer should call it too). Accepted: integer (or whole-number float, or bool) class indices
``(N,)`` or ``(N, 1)``, and one-hot rows ``(N, K)``. Errors, always naming ``parameter``:

* :class:`~trustmap.errors.ShapeError` — not one label per sample (wrong rank or length);
* :class:`~trustmap.errors.LabelError` (both a ``DataError`` and a ``TargetError``) — not
  numeric, NaN/Inf, not whole numbers, rows that are not one-hot, negative, or not below the
  number of classes ``K`` when it is known.
"""

from __future__ import annotations

import numpy as np

from .errors import LabelError, ShapeError

__all__ = ["check_labels"]


def check_labels(y, n: int | None = None, n_classes: int | None = None, *, parameter: str = "y",
                 classes_desc: str | None = None) -> np.ndarray:
    """Validated class indices, ``(N,)`` int64.

    Parameters
    ----------
    y : array-like or tensor
        Class indices ``(N,)`` / ``(N, 1)`` or one-hot rows ``(N, K)``.
    n : int, optional
        The number of samples the labels must match.
    n_classes : int, optional
        K: labels must be ``0..K-1`` (and one-hot rows K wide).
    parameter : str
        The name errors give (``'y'``, ``'y_val'``, ``'labels'``...).
    classes_desc : str, optional
        What has the K classes, for the out-of-range message (e.g. ``"a model with 3 outputs"``).

    Returns
    -------
    ndarray (N,) of int64

    Raises
    ------
    LabelError
        Labels that are not numeric, NaN or Inf, fractional, negative or ``>= n_classes``, or 2-D
        rows that are not one-hot (or not ``n_classes`` wide).
    ShapeError
        Ragged labels, more than two axes, or not ``n`` of them.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.labels import check_labels
    >>> check_labels([[0, 1], [1, 0]])
    array([1, 0])
    >>> check_labels(np.array([2.0, 0.0]), n_classes=3)
    array([2, 0])
    >>> check_labels([0.5])
    Traceback (most recent call last):
    ...
    trustmap.errors.LabelError: y: labels must be whole numbers; ...
    """
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    try:
        arr = np.asarray(y)
    except ValueError:
        raise ShapeError("labels are ragged", parameter=parameter, expected="one class index per sample",
                         got="sequences of different lengths", fix="pass a 1D array of class indices") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise LabelError("labels are not numeric", parameter=parameter, expected="integer class indices",
                         got=f"dtype {arr.dtype}",
                         fix="encode the classes as 0..K-1 (e.g. np.unique(y, return_inverse=True)[1]), "
                             "or read them with trustmap.datasets (names become indices)")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        if n_classes is not None and arr.shape[1] != n_classes:
            raise LabelError("one-hot labels do not match the classes", parameter=parameter,
                             expected=f"{n_classes} columns" + (f" ({classes_desc})" if classes_desc else ""),
                             got=f"{arr.shape[1]} columns", fix="pass class indices (N,) or one-hot rows of K columns")
        if not (np.isin(arr, (0, 1)).all() and (arr.sum(1) == 1).all()):
            raise LabelError("two-dimensional labels must be one-hot rows", parameter=parameter,
                             expected="a single 1 per row", got=f"shape {arr.shape}, rows that are not one-hot",
                             fix="pass class indices (N,), or one-hot rows (e.g. y.argmax(1) for soft labels)")
        arr = arr.argmax(1)
    if arr.ndim != 1:
        raise ShapeError("one label per sample is needed", parameter=parameter,
                         expected="class indices (N,) or one-hot rows (N, K)", got=f"shape {arr.shape}",
                         fix="flatten the labels, e.g. y.ravel()")
    if n is not None and arr.shape[0] != n:
        raise ShapeError("one label per sample is needed (the inputs and labels have different lengths)",
                         parameter=parameter, expected=f"{n} labels", got=f"{arr.shape[0]} labels",
                         fix="pass labels aligned with the inputs")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise LabelError("labels contain NaN or Inf", parameter=parameter, expected="finite class indices",
                             got=f"{int((~np.isfinite(arr)).sum())} NaN/Inf label(s)",
                             fix="drop the unlabeled samples")
        frac = arr != np.round(arr)
        if frac.any():
            raise LabelError("labels must be whole numbers", parameter=parameter, expected="integer class indices",
                             got=f"e.g. {arr[frac][0]!r}", fix="round or re-encode the labels as 0..K-1")
    out = arr.astype(np.int64)
    if out.size:
        bad = out < 0 if n_classes is None else (out < 0) | (out >= n_classes)
        if bad.any():
            rng = "0..K-1" if n_classes is None else f"classes 0..{n_classes - 1}"
            raise LabelError("label out of range" + (f" for {classes_desc}" if classes_desc else ""),
                             parameter=parameter, expected=rng, got=int(out[bad][0]),
                             fix="labels must index the classes (0-based); re-encode them as 0..K-1")
    return out
