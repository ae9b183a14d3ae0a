"""The one target parser: which class each map explains.

A target is ``None`` (each sample's predicted class; also ``'pred'`` / ``'predicted'``),
``'label'`` (each sample's label, from the data or ``labels=``), a class index, one class index per
sample, or (from the command line) a file of them (``.npy`` or one per line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from ..errors import TargetError

__all__ = ["parse_target", "targets_for", "target_key", "check_target_range"]

_PRED = ("pred", "predicted", "prediction", "none")


def parse_target(value) -> Any:
    """``None`` | ``'label'`` | int | int array, from whatever the user gave (a CLI string included).

    Parameters
    ----------
    value : None, str, int or sequence of int

    Returns
    -------
    None, 'label', int or ndarray of int

    Raises
    ------
    TargetError
        A string that is not ``'label'`` or an int, a negative class, or a non-integer array.

    Examples
    --------
    >>> from trustmap.jobs import parse_target
    >>> parse_target("3"), parse_target("label"), parse_target(None)
    (3, 'label', None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _PRED:
            return None
        if text.lower() in ("label", "labels"):
            return "label"
        try:
            return int(text)
        except ValueError:
            pass
        p = Path(text)
        if p.is_file():
            from .data import read_labels

            return _as_ints(read_labels(p, parameter="target"))
        raise TargetError("unknown target", parameter="target",
                          expected="'predicted', 'label', a class index, or a file of class indices", got=value,
                          fix="pass --target predicted (default), --target label, --target 2 or --target t.npy")
    if isinstance(value, os.PathLike):
        return parse_target(os.fspath(value))
    if isinstance(value, (bool, np.bool_)):
        raise TargetError("a target is a class index, not a bool", parameter="target", expected="an int", got=value,
                          fix="pass target=None (predicted class) or a class index")
    if np.ndim(value) == 0:
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
            return int(value)
        raise TargetError("a target is a class index", parameter="target", expected="an int", got=value,
                          fix="pass a whole number")
    return _as_ints(value)


def _as_ints(values) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind in "OUS":
        try:
            arr = arr.astype(np.float64)
        except ValueError:
            raise TargetError("targets must be class indices", parameter="target", expected="integers",
                              got=arr[:3].tolist(), fix="pass class indices 0..K-1") from None
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        raise TargetError("targets must be whole numbers", parameter="target", expected="integers",
                          got=arr[:3].tolist(), fix="pass class indices 0..K-1")
    return arr.astype(np.int64)


def targets_for(target, y: np.ndarray | None, a: int, b: int, n: int):
    """Rows ``a:b`` of ``target`` (``n`` samples in all): None, an int, or one int per row.

    Parameters
    ----------
    target : None, 'label', int or ndarray (n,) of int
    y : ndarray or None
        The labels, for ``'label'``.
    a, b : int
        The rows.
    n : int
        Samples in all.

    Returns
    -------
    None, int or ndarray of int

    Raises
    ------
    TargetError
        ``'label'`` without labels, or a target array not of length ``n``.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.jobs import targets_for
    >>> targets_for(np.array([0, 1, 2, 3]), None, 1, 3, 4)
    array([1, 2])
    >>> targets_for("label", np.array([1, 0, 1]), 0, 2, 3)
    array([1, 0])
    """
    if target is None:
        return None
    if isinstance(target, str):
        if target != "label":
            return targets_for(parse_target(target), y, a, b, n)
        if y is None:
            raise TargetError("target='label' needs labeled data", parameter="target", expected="labels",
                              got="no labels", fix="pass labels= (CLI: --labels FILE), or target=None")
        return np.asarray(y)[a:b] if len(y) == n else np.asarray(y)
    if np.ndim(target) == 0:
        return int(target)
    arr = np.asarray(target)
    if len(arr) != n:
        raise TargetError("one target per sample is needed", parameter="target", expected=f"{n} targets",
                          got=f"{len(arr)}", fix="pass one class index per sample, or an int")
    return arr[a:b]


def check_target_range(target, y, n: int, n_classes: int) -> None:
    """Refuse a class index outside the model's classes before any work."""
    t = targets_for(target, y, 0, n, n)
    if t is None:
        return
    arr = np.atleast_1d(np.asarray(t, dtype=np.int64))
    if len(arr) and (arr.min() < 0 or arr.max() >= n_classes):
        bad = int(arr[(arr < 0) | (arr >= n_classes)][0])
        raise TargetError("target out of range", parameter="target", expected=f"classes 0..{n_classes - 1}",
                          got=bad, fix=f"pick a class index below {n_classes}")


def target_key(target) -> Any:
    """A JSON-able description of ``target`` (an array by its fingerprint).

    Parameters
    ----------
    target : None, str, int or ndarray

    Returns
    -------
    None, str or int

    Examples
    --------
    >>> from trustmap.jobs import target_key
    >>> target_key(2)
    2
    """
    if target is None or isinstance(target, (str, int, np.integer)):
        return target if not isinstance(target, np.integer) else int(target)
    return "array:" + _io.fingerprint_array(np.ascontiguousarray(np.asarray(target, dtype=np.int64)))
