"""The :class:`Dataset` container and readers for data files.

:func:`read` takes ``.npy``, ``.npz``, ``.csv``, ``.parquet``, ``.h5``/``.hdf5`` and ``.ts``
(the UEA/UCR time-series format); :func:`from_arrays` wraps arrays already in memory.
Both return a :class:`Dataset` whose ``X`` is ``float32`` in a named layout (see
:mod:`trustmap.layout`), ``y`` is ``int64`` (or ``None``) and ``classes`` names the labels.
"""

from __future__ import annotations

import contextlib
import csv
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._io import to_jsonable
from ..labels import check_labels
from ..errors import (DataError, DependencyError, InputError, LayoutError, MissingFileError, ShapeError, TrustmapError,
                      UnsupportedError)
from ..layout import Layout, as_layout

__all__ = ["Dataset", "read", "from_arrays", "guess_layout", "READ_FORMATS"]

#: File suffixes :func:`read` understands.
READ_FORMATS = (".npy", ".npz", ".csv", ".parquet", ".pq", ".h5", ".hdf5", ".ts")

_X_KEYS = ("X", "x")
_Y_KEYS = ("y", "Y", "labels", "label", "target", "targets")
_LABEL_COLUMNS = ("label", "labels", "y", "target", "class")
#: Kaggle "ECG Heartbeat Categorization" (MIT-BIH part): 187 samples + label; AAMI classes.
KAGGLE_LENGTH = 187
KAGGLE_MITBIH_CLASSES = ["N", "S", "V", "F", "Q"]
KAGGLE_PTBDB_CLASSES = ["normal", "abnormal"]
_INSTALL = "pip install 'trustmap[data]'"


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class Dataset:
    """Inputs, labels and (where known) the ground-truth discriminative region.

    Attributes
    ----------
    X : ndarray of float32
        The inputs, in the layout named by ``layout``.
    y : ndarray of int64, shape (N,), or None
        Class indices; ``None`` for unlabeled data.
    layout : str
        A name from :data:`trustmap.layout.LAYOUTS` (``NL``, ``NLC``, ``NCL``, ``NHW``, ``NHWC``, ``NCHW``).
    classes : list of str
        Class names, indexed by ``y``. Empty for unlabeled data.
    mask : ndarray of bool with X's shape, or None
        Where the class information really is (synthetic tasks); ``None`` when unknown.
    name : str
        A short name (the built-in name or the file's stem).
    meta : dict
        JSON-able facts: source, sampling rate, split, seed, ...
    per_sample : dict of ndarray
        Arrays with one entry per sample (kept aligned by :meth:`subset`), e.g. the true
        labels before label noise (``y_true``), which labels were flipped (``flipped``), R-peak positions.

    ``X, y = dataset`` unpacks the inputs and labels.

    Made by :func:`trustmap.datasets.load` (built-in sets), :func:`trustmap.datasets.read` (files)
    and :func:`trustmap.datasets.from_arrays` (arrays; the place to name classes).

    Raises
    ------
    ShapeError
        ``X`` without the rank of ``layout`` (or without a batch and a data axis), ``y`` not one per
        sample, a ``mask`` without ``X``'s shape, or a
        ``per_sample`` array without one entry per sample.
    DataError
        ``X`` empty, ragged, not numeric or not finite; a label that is not an index into ``classes``.
    LabelError
        Labels that are not integer class indices.
    LayoutError
        An unknown ``layout`` name, or none given and ``X``'s shape fits more than one.

    Examples
    --------
    >>> from trustmap import datasets
    >>> ds = datasets.load("synthetic-1d", split="test")
    >>> X, y = ds                                   # unpacks
    >>> ds.classes[y[0]]                            # the name of sample 0's class
    'bump@55'
    >>> small = ds.subset(range(50))                # per-sample arrays stay aligned
    """

    X: np.ndarray
    y: np.ndarray | None = None
    layout: str = "NL"
    classes: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    name: str = "arrays"
    meta: dict[str, Any] = field(default_factory=dict)
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.X = _as_float32(self.X, parameter="X")
        lay = as_layout(self.layout)
        if lay is None:
            lay = guess_layout(self.X.shape)
        self.layout = lay.name
        if self.X.ndim != lay.ndim:
            raise ShapeError(
                f"X does not have the rank of layout {lay.name}",
                parameter="X",
                expected=f"{lay.ndim} axes for layout {lay.name}",
                got=f"shape {self.X.shape}",
                fix="pass the layout the array really has (or reshape X)",
            )
        if self.X.shape[0] == 0:
            raise DataError("X has no samples", parameter="X", expected="at least one sample",
                            got=f"shape {self.X.shape}", fix="pass a non-empty array")
        n = self.X.shape[0]
        self.classes = [str(c) for c in (self.classes or [])]
        if self.y is not None:
            self.y = _as_labels(self.y, n, parameter="y")
            top = int(self.y.max())
            if not self.classes:
                self.classes = [str(i) for i in range(top + 1)]
            elif top >= len(self.classes):
                raise DataError("a label is not a class index", parameter="y",
                                expected=f"labels below {len(self.classes)} (the number of classes)",
                                got=top, fix="pass one class name per label value")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.shape != self.X.shape:
                raise ShapeError("mask must have X's shape", parameter="mask", expected=f"shape {self.X.shape}",
                                 got=f"shape {m.shape}", fix="pass one mask entry per input value")
            self.mask = m.astype(bool, copy=False)
        ps = {}
        for key, value in dict(self.per_sample or {}).items():
            arr = np.asarray(value)
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ShapeError("per-sample arrays need one entry per sample", parameter=f"per_sample[{key!r}]",
                                 expected=f"leading axis {n}", got=f"shape {arr.shape}",
                                 fix="store only arrays aligned with X")
            ps[str(key)] = arr
        self.per_sample = ps
        self.meta = to_jsonable(dict(self.meta or {}))
        self.name = str(self.name)

    # -- convenience --------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray | None]:
        yield self.X
        yield self.y

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __repr__(self) -> str:
        labels = "unlabeled" if self.y is None else f"{len(self.classes)} classes"
        return (f"Dataset(name={self.name!r}, X={self.X.shape} {self.X.dtype}, layout={self.layout!r}, "
                f"{labels}, mask={'yes' if self.mask is not None else 'no'})")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def internal(self) -> np.ndarray:
        """``X`` as ``(N, C, *spatial)`` (a view where possible)."""
        return Layout(self.layout).to_internal(self.X)

    def internal_mask(self) -> np.ndarray | None:
        """``mask`` as ``(N, C, *spatial)``, or ``None``."""
        return None if self.mask is None else Layout(self.layout).to_internal(self.mask)

    def subset(self, idx) -> "Dataset":
        """The samples at ``idx`` (indices, a boolean mask or a slice), with everything kept aligned."""
        n = len(self)
        if isinstance(idx, slice):
            sel = np.arange(n)[idx]
        else:
            arr = np.asarray(idx)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise ShapeError("a boolean index needs one entry per sample", parameter="idx",
                                     expected=f"shape ({n},)", got=f"shape {arr.shape}", fix="pass y == k or similar")
                sel = np.flatnonzero(arr)
            elif arr.dtype.kind in "iu":
                sel = arr.reshape(-1)
                if sel.size and (sel.max() >= n or sel.min() < -n):
                    raise InputError("index out of range", parameter="idx", expected=f"indices in [-{n}, {n})",
                                     got=int(sel.max() if sel.max() >= n else sel.min()), fix="pick existing samples")
            else:
                raise InputError("idx must be integer indices, a boolean mask or a slice", parameter="idx",
                                 expected="ints, bools or a slice", got=str(arr.dtype),
                                 fix="pass np.arange(...) or y == k")
        if sel.size == 0:
            raise DataError("the subset is empty", parameter="idx", expected="at least one sample", got=0,
                            fix="select at least one sample")
        meta = dict(self.meta)
        meta["subset_of"] = meta.get("subset_of", n)
        return Dataset(
            self.X[sel], None if self.y is None else self.y[sel], self.layout, list(self.classes),
            None if self.mask is None else self.mask[sel], self.name, meta,
            {k: v[sel] for k, v in self.per_sample.items()},
        )


def concat(parts: Sequence[Dataset], *, name: str | None = None, meta: dict | None = None) -> Dataset:
    """Join datasets that share layout, sample shape and classes (train + test, say).

    Parameters
    ----------
    parts : sequence of Dataset
    name : str, optional
    meta : dict, optional

    Returns
    -------
    Dataset

    Raises
    ------
    ShapeError
        The parts differ in layout, sample shape or classes.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap import datasets
    >>> a = datasets.from_arrays(np.zeros((3, 8)), [0, 1, 0])
    >>> b = datasets.from_arrays(np.ones((2, 8)), [1, 1])
    >>> both = datasets.concat([a, b])
    >>> both.X.shape, both.y.tolist()
    ((5, 8), [0, 1, 0, 1, 1])
    """
    first = parts[0]
    for p in parts[1:]:
        if p.layout != first.layout or p.X.shape[1:] != first.X.shape[1:] or p.classes != first.classes:
            raise ShapeError("datasets differ in layout, sample shape or classes", parameter="parts",
                             expected=f"{first.layout} {first.X.shape[1:]}", got=f"{p.layout} {p.X.shape[1:]}",
                             fix="join only parts of the same dataset")
    keys = set(first.per_sample)
    for p in parts[1:]:
        keys &= set(p.per_sample)
    return Dataset(
        np.concatenate([p.X for p in parts]),
        None if any(p.y is None for p in parts) else np.concatenate([p.y for p in parts]),
        first.layout, list(first.classes),
        None if any(p.mask is None for p in parts) else np.concatenate([p.mask for p in parts]),
        name or first.name, dict(meta if meta is not None else first.meta),
        {k: np.concatenate([p.per_sample[k] for p in parts]) for k in sorted(keys)},
    )


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_float32(x, *, parameter: str) -> np.ndarray:
    try:
        arr = _to_numpy(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise DataError("the array is ragged or not numeric", parameter=parameter,
                        expected="a rectangular numeric array", got=str(exc),
                        fix="pad or cut the rows to one length") from None
    if arr.dtype.kind not in "fiub":
        raise DataError("the array is not numeric", parameter=parameter, expected="numbers (float or int)",
                        got=f"dtype {arr.dtype}", fix="convert the values to numbers first")
    if arr.ndim < 2:
        raise ShapeError("X needs a batch axis and at least one data axis", parameter=parameter,
                         expected="(N, L), (N, C, L), (N, H, W), ...", got=f"shape {arr.shape}",
                         fix="add a batch axis, e.g. X[None]")
    out = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        raise DataError("the array has non-finite values (NaN or inf)", parameter=parameter,
                        expected="finite numbers", got=f"{int(bad.sum())} non-finite of {out.size}",
                        fix="fill or drop the missing values before explaining")
    return out


def _as_labels(y, n: int, *, parameter: str) -> np.ndarray:
    return check_labels(_to_numpy(y), n, parameter=parameter)


def encode_labels(values, *, parameter: str = "y") -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Class indices, class names and a note on how they were mapped, for labels of any kind.

    Strings become indices in sorted order; whole numbers >= 0 stay as they are (names "0".."K-1");
    whole numbers with negatives (e.g. -1/1) are mapped to 0..K-1 in sorted order.

    Parameters
    ----------
    values : array-like
        Labels of any kind (strings, ints, floats holding whole numbers).
    parameter : str, default 'y'

    Returns
    -------
    y : ndarray (N,) of int64
    classes : list of str
    note : dict
        ``{'label_map': ...}``, how the labels were mapped.

    Raises
    ------
    DataError
        No labels, missing values (None, NaN, empty strings), fractional numbers, or values
        that are neither numbers nor names.

    Examples
    --------
    >>> from trustmap import datasets
    >>> y, classes, note = datasets.encode_labels(["b", "a", "b"])
    >>> y.tolist(), classes
    ([1, 0, 1], ['a', 'b'])
    >>> datasets.encode_labels([-1, 1, 1])[:2]
    (array([0, 1, 1]), ['-1', '1'])
    """
    arr = np.asarray(values)
    if arr.dtype.kind in "OUS":
        if arr.dtype.kind == "O" and any(v is None for v in arr.tolist()):
            raise DataError("labels have missing values", parameter=parameter, expected="a label for every row",
                            got=f"{sum(v is None for v in arr.tolist())} missing", fix="drop unlabeled rows")
        text = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()], dtype=object)
        empty = int(sum(1 for t in text.tolist() if not t.strip()))
        if empty:
            raise DataError("labels have missing values", parameter=parameter, expected="a label for every row",
                            got=f"{empty} empty labels", fix="drop unlabeled rows")
        text = np.array([t.strip() for t in text.tolist()], dtype=object)
        numeric = _try_float(text)
        if numeric is None:
            names = sorted(set(text.tolist()))
            lookup = {c: i for i, c in enumerate(names)}
            return np.array([lookup[t] for t in text.tolist()], dtype=np.int64), names, {"label_map": "sorted names"}
        arr = numeric
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuf":
        raise DataError("labels are neither numbers nor names", parameter=parameter, expected="ints or strings",
                        got=f"dtype {arr.dtype}", fix="convert the label column")
    if arr.dtype.kind == "f":
        ok = np.isfinite(arr) & (arr == np.round(arr))
        if not ok.all():
            raise DataError("numeric labels must be whole numbers", parameter=parameter,
                            expected="class indices such as 0, 1, 2", got=arr[~ok][:3],
                            fix="name the right label column (label=...), or round/encode the labels")
    ints = arr.astype(np.int64)
    if ints.size == 0:
        raise DataError("no labels", parameter=parameter, expected="at least one row", got=0, fix="check the file")
    if ints.min() >= 0:
        return ints, [str(i) for i in range(int(ints.max()) + 1)], {}
    uniq = np.unique(ints)
    return np.searchsorted(uniq, ints).astype(np.int64), [str(int(u)) for u in uniq], {"label_map": "sorted values"}


def _try_float(text: np.ndarray) -> np.ndarray | None:
    try:
        return np.array([float(t) for t in text.tolist()], dtype=np.float64)
    except ValueError:
        return None


def guess_layout(shape: Sequence[int]) -> Layout:
    """The layout of an array when none was given, by shape alone; raises when it cannot tell.

    2 axes: ``NL``. 3 axes: a square pair is ``NHW``; a small axis (<= 16) beside a >= 4 times
    longer one holds channels (``NCL`` or ``NLC``). 4 axes: the same rule picks the end axis
    that holds channels (``NCHW`` or ``NHWC``).

    Parameters
    ----------
    shape : sequence of int

    Returns
    -------
    Layout

    Raises
    ------
    ShapeError
        Fewer than 2 or more than 4 axes.
    LayoutError
        The shape fits more than one layout (pass ``layout=``).

    Examples
    --------
    >>> from trustmap import datasets
    >>> datasets.guess_layout((8, 100, 3)), datasets.guess_layout((8, 28, 28))
    (Layout(name='NLC'), Layout(name='NHW'))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return Layout("NL")
    if len(shape) == 3:
        a, b = shape[1:]
        if a == b:
            return Layout("NHW")
        if a <= 16 and b >= 4 * a:
            return Layout("NCL")
        if b <= 16 and a >= 4 * b:
            return Layout("NLC")
        options = "NCL, NLC or NHW"
    elif len(shape) == 4:
        a, c = shape[1], shape[3]
        last = c <= 16 and 4 * c <= min(shape[1:3])
        first = a <= 16 and 4 * a <= min(shape[2:])
        if last != first:
            return Layout("NHWC" if last else "NCHW")
        options = "NHWC or NCHW"
    else:
        raise ShapeError("cannot tell the layout of this array", parameter="X",
                         expected="2 to 4 axes: (N, L), (N, C, L), (N, H, W), (N, C, H, W), ...",
                         got=f"shape {shape}", fix="reshape the data to one of those layouts")
    raise LayoutError("cannot tell the layout from the shape alone", parameter="layout",
                      expected=f"layout= naming one of {options}", got=f"shape {shape}",
                      fix=f"pass layout='{options.split(',')[0].split(' ')[0]}' (or the one the data has)")


# --------------------------------------------------------------------------------------------
# arrays and files
# --------------------------------------------------------------------------------------------


def from_arrays(X, y=None, layout: str | Layout | None = None, *, classes: Sequence[str] | None = None,
                mask=None, name: str = "arrays", meta: dict | None = None) -> Dataset:
    """Wrap arrays (numpy, torch or nested lists) in a :class:`Dataset`.

    ``y`` may hold class indices or names (names become indices in sorted order unless
    ``classes`` gives the order). Without ``layout`` it is guessed from the shape
    (see :func:`guess_layout`); an ambiguous shape raises :class:`~trustmap.errors.LayoutError`.

    Parameters
    ----------
    X : array-like
        The inputs, ``(N, L)``, ``(N, L, C)``, ``(N, C, L)``, ``(N, H, W)``, ``(N, H, W, C)`` or
        ``(N, C, H, W)``.
    y : array-like, optional
        One label per sample: class indices, or names.
    layout : str, optional
        The layout name of ``X`` (needed when the shape is ambiguous).
    classes : list of str, optional
        The class names in class-index order: with integer ``y``, ``classes[y[i]]`` names sample
        ``i``; with names in ``y``, it fixes their order (every name must be listed).
    mask : array, optional
        The region that holds the class information, with ``X``'s shape (for localization metrics).
    name, meta
        A short name and JSON-able facts recorded with the data.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        NaN or Inf in ``X``, labels not among ``classes``, or ``y`` of another length.
    LayoutError
        An ambiguous shape and no ``layout``.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap import datasets
    >>> X = np.random.default_rng(0).normal(size=(6, 187)).astype("float32")
    >>> ds = datasets.from_arrays(X, ["N", "V", "N", "S", "V", "N"], classes=["N", "S", "V"])
    >>> ds.y, ds.classes, ds.layout
    (array([0, 2, 0, 1, 2, 0]), ['N', 'S', 'V'], 'NL')
    >>> ds = datasets.from_arrays(X, [0, 2, 0, 1, 2, 0], classes=["N", "S", "V"])   # the same
    """
    Xa = _as_float32(X, parameter="X")
    lay = as_layout(layout)
    guessed = lay is None
    if lay is None:
        lay = guess_layout(Xa.shape)
    info = dict(meta or {})
    info.setdefault("layout_guessed", guessed)
    yy = None
    names = list(classes) if classes is not None else None
    if y is not None:
        ya = _to_numpy(y)
        if ya.dtype.kind in "OUS" and names is not None:
            lookup = {str(c): i for i, c in enumerate(names)}
            text = [v.decode() if isinstance(v, bytes) else str(v) for v in ya.reshape(-1).tolist()]
            unknown = sorted(set(text) - set(lookup))
            if unknown:
                raise DataError("labels not among the classes", parameter="y", expected=f"names in {names}",
                                got=unknown[:5], fix="pass classes= listing every label")
            yy = np.array([lookup[t] for t in text], dtype=np.int64)
        elif ya.dtype.kind in "OUS":
            yy, found, note = encode_labels(ya.reshape(-1), parameter="y")
            names = found
            info.update(note)
        else:
            yy = _as_labels(ya, Xa.shape[0], parameter="y")
        if yy.shape[0] != Xa.shape[0]:
            raise ShapeError("labels need one entry per sample", parameter="y", expected=f"{Xa.shape[0]} labels",
                             got=yy.shape[0], fix="pass one label per row of X")
    return Dataset(Xa, yy, lay.name, names or [], mask, name, info)


def read(path: str | os.PathLike, *, label: str | int | None = None, key: str | None = None,
         layout: str | Layout | None = None) -> Dataset:
    """Read a data file into a :class:`Dataset`.

    Parameters
    ----------
    path
        ``.npy`` (X only), ``.npz`` (arrays ``X``/``x`` and ``y``/``labels``), ``.csv``,
        ``.parquet``, ``.h5``/``.hdf5`` (datasets ``X``/``x`` and ``y``) or ``.ts`` (UEA/UCR).
    label
        CSV/Parquet: the label column, by name or index (default: the first of
        label/labels/y/target/class; a header-less CSV of 188 columns is read as the Kaggle
        MIT-BIH layout, 187 samples then the label). NPZ/HDF5: the name of the label array.
    key
        NPZ/HDF5: the name of the input array (default ``X`` or ``x``). Parquet: the
        list-valued column holding each sample.
    layout
        The layout of X (default: guessed from the shape; an ambiguous shape raises).

    A ``mask`` array (NPZ/HDF5) with X's shape becomes :attr:`Dataset.mask`; a ``classes``
    array names the classes; a ``layout`` entry (NPZ array / HDF5 attribute) gives the layout.

    **Naming the classes.** ``Dataset.classes`` lists the names in class-index order; every plot,
    table and report uses them. A file names them with a ``classes`` array (NPZ, HDF5) or with
    labels that are names (a CSV column of ``N``/``S``/``V``: sorted order); a header-less CSV in
    the Kaggle MIT-BIH layout gets the AAMI names ``N, S, V, F, Q``. To name integer
    labels, or to fix the order, rebuild with :func:`from_arrays`:
    ``from_arrays(ds.X, ds.y, ds.layout, classes=["N", "S", "V", "F", "Q"])``; on the command
    line pass ``--classes N,S,V,F,Q``. An unlabeled file (``.npy``) has ``y=None`` and
    ``classes=[]``: the model's predictions stand in for labels where one is needed.

    Returns
    -------
    Dataset

    Raises
    ------
    MissingFileError
        No file at ``path``.
    DataError
        An empty, truncated or non-UTF-8 file, NaN or Inf values, or no input array/column.
    LayoutError
        An ambiguous shape and no ``layout``.

    Examples
    --------
    >>> from trustmap import datasets
    >>> beats = datasets.read("mitbih_test.csv")      # 187 samples + label per row, no header
    >>> beats.layout, beats.classes                   # the Kaggle layout gets the AAMI names
    ('NL', ['N', 'S', 'V', 'F', 'Q'])
    >>> mine = datasets.read("my_beats.npz")          # arrays X, y (0/1/2) and no classes array
    >>> mine = datasets.from_arrays(mine.X, mine.y, mine.layout, classes=["N", "S", "V"])
    >>> unlabeled = datasets.read("beats.npy")        # y is None
    """
    p = check_data_path(path, READ_FORMATS, "unknown data file type",
                        "convert the data to .npz (X and y arrays) or .csv")
    suffix = p.suffix.lower()
    fmt = {".pq": ".parquet", ".hdf5": ".h5"}.get(suffix, suffix)
    if fmt in (".npy", ".ts") and key is not None:
        raise InputError(f"{fmt} files hold a single array", parameter="key", expected="key=None", got=key,
                         fix="leave key out")
    reader = {".npy": _read_npy, ".npz": _read_npz, ".csv": _read_csv, ".parquet": _read_parquet,
              ".h5": _read_h5, ".ts": _read_ts_file}[fmt]
    with unreadable_as_data_error(p):
        parts = reader(p, label=label, key=key)
    X, y, classes = parts["X"], parts.get("y"), parts.get("classes")
    meta = {"source": str(p), "format": fmt.lstrip(".")}
    meta.update(parts.get("meta", {}))
    lay = layout if layout is not None else parts.get("layout")
    ds = from_arrays(X, y, lay, classes=classes, mask=parts.get("mask"), name=p.stem, meta=meta)
    ds.meta["layout_guessed"] = layout is None and parts.get("layout") is None
    return ds


#: what each format must be, for the "cannot read" errors
_WHAT = {".npy": "an array written by np.save", ".npz": "an archive written by np.savez",
         ".csv": "UTF-8 comma-separated text", ".txt": "UTF-8 text", ".parquet": "a Parquet file",
         ".pq": "a Parquet file", ".h5": "an HDF5 file", ".hdf5": "an HDF5 file", ".ts": "a UEA/UCR .ts text file"}


@contextlib.contextmanager
def unreadable_as_data_error(path, parameter: str = "path") -> Iterator[None]:
    """Turn what a corrupt, truncated, empty or non-UTF-8 file makes a reader raise (EOFError, a bad
    zip, UnicodeDecodeError, OSError, ...) into one :class:`~trustmap.errors.DataError` naming the file;
    typed errors pass through."""
    p = Path(path)
    what = _WHAT.get(p.suffix.lower(), "a readable data file")
    try:
        yield
    except TrustmapError:
        raise
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1] if isinstance(exc.object, (bytes, bytearray)) else b""
        raise DataError(f"{p.name} is not UTF-8 text", parameter=parameter, expected=what,
                        got=f"byte {bad!r} at offset {exc.start}" if bad else str(exc),
                        fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)") from None
    except (EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as exc:
        size = p.stat().st_size if p.is_file() else None
        got = "an empty (0-byte) file" if size == 0 else f"{type(exc).__name__}: {str(exc)[:160]}"
        raise DataError(f"cannot read {p.name} (empty, truncated or not {what}?)", parameter=parameter,
                        expected=what, got=got, fix="write the file again (completely) or check its format") from None


def check_data_path(path, formats: Sequence[str], unknown: str, fix: str) -> Path:
    """``path`` as a Path to an existing file ending in one of ``formats``; typed errors otherwise
    (``unknown`` and ``fix`` word the error for another suffix)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError("path must be a file path", parameter="path", expected="a str or pathlib.Path",
                         got=type(path).__name__, fix="pass the data file's path")
    p = Path(path)
    if p.suffix.lower() not in formats:
        raise InputError(unknown, parameter="path", expected="a file ending in " + ", ".join(formats), got=p.name,
                         fix=fix)
    if not p.exists():
        raise MissingFileError("data file not found", parameter="path", expected="an existing file", got=str(p),
                               fix="check the path (relative paths start from the current directory)")
    if p.is_dir():
        raise InputError("path is a directory", parameter="path", expected="a file", got=str(p),
                         fix="name the data file itself")
    return p


def _missing_key(p: Path, what: str, parameter: str, wanted: Sequence[str], present: Sequence[str]) -> DataError:
    shown = ", ".join(present[:20]) + (f" (+{len(present) - 20} more)" if len(present) > 20 else "")
    return DataError(f"{p.name} has no {what}", parameter=parameter, expected="one of " + ", ".join(wanted),
                     got=f"keys present: {shown or 'none'}", fix=f"pass {parameter}= naming one of the keys present")


def _read_npy(p: Path, *, label, key) -> dict:
    if label is not None:
        raise InputError(".npy files hold X only, no labels", parameter="label", expected="label=None", got=label,
                         fix="save X and y together with np.savez(path, X=X, y=y)")
    try:
        X = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise DataError("cannot read the .npy file", parameter="path", expected="a numeric array saved by np.save",
                        got=str(exc), fix="save numeric arrays (no object dtype)") from None
    return {"X": X}


def _layout_attr(value) -> str | None:
    if value is None:
        return None
    v = np.asarray(value)
    v = v.item() if v.shape == () else v.reshape(-1)[0]
    return v.decode() if isinstance(v, bytes) else str(v)


def _names_attr(value) -> list[str] | None:
    if value is None:
        return None
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).reshape(-1).tolist()]


def _pick(keys: Sequence[str], wanted: Sequence[str]) -> str | None:
    for k in wanted:
        if k in keys:
            return k
    return None


def _read_npz(p: Path, *, label, key) -> dict:
    try:
        archive = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError("cannot read the .npz file", parameter="path", expected="an archive written by np.savez",
                        got=str(exc), fix="re-save it with np.savez(path, X=X, y=y)") from None
    with archive:
        keys = list(archive.files)
        xkey, ykey = _pick_keys(p, keys, key, label, {"mask", "classes", "layout"}, "array")
        try:
            out = {"X": archive[xkey]}
            y = archive[ykey] if ykey is not None else None
            mask = archive["mask"] if "mask" in keys else None
            classes = _names_attr(archive["classes"]) if "classes" in keys else None
            lay = _layout_attr(archive["layout"]) if "layout" in keys else None
        except ValueError as exc:  # object arrays
            raise DataError("an array in the .npz needs pickle to load", parameter="path",
                            expected="numeric (or plain string) arrays", got=str(exc),
                            fix="save numeric arrays; trustmap never unpickles data") from None
    out.update(y=y, classes=classes, mask=mask, layout=lay, meta={"x_key": xkey, "y_key": ykey})
    return out


def _pick_keys(p: Path, keys: list[str], key, label, extra: set[str], what: str) -> tuple[str, str | None]:
    """The input and label entries of an .npz archive or HDF5 file (``what``: 'array' / 'dataset')."""
    xkey = key if key is not None else _pick(keys, _X_KEYS)
    if xkey is None:
        candidates = [k for k in keys if k not in set(_Y_KEYS) | extra]
        if len(candidates) == 1:
            xkey = candidates[0]
    if xkey is None or xkey not in keys:
        raise _missing_key(p, f"input {what}", "key", [key] if key is not None else list(_X_KEYS), keys)
    if label is not None and not isinstance(label, str):
        raise InputError(f"for {p.suffix} files label names the label {what}", parameter="label",
                         expected=f"a {what} name such as 'y'", got=label, fix="pass label='y' (or the name present)")
    ykey = label if label is not None else _pick(keys, _Y_KEYS)
    if ykey is not None and ykey not in keys:
        raise _missing_key(p, f"label {what}", "label", [ykey], keys)
    return xkey, ykey


def _read_h5(p: Path, *, label, key) -> dict:
    try:
        import h5py
    except ImportError:
        raise DependencyError("reading .h5 files needs h5py", parameter="path", expected="h5py installed",
                              got=p.name, fix=_INSTALL) from None
    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise DataError("cannot open the HDF5 file", parameter="path", expected="an HDF5 file", got=str(exc),
                        fix="check that the file is HDF5 and not truncated") from None
    with fh:
        names: list[str] = []
        fh.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
        xkey, ykey = _pick_keys(p, names, key, label, {"mask", "classes"}, "dataset")
        dset = fh[xkey]
        if dset.dtype.kind not in "fiub":
            raise DataError("the input dataset is not numeric", parameter="key", expected="a numeric dataset",
                            got=f"{xkey}: dtype {dset.dtype}", fix="name the numeric dataset with key=")
        X = dset[()]
        y = fh[ykey][()] if ykey is not None else None
        mask = fh["mask"][()] if "mask" in names else None
        classes = _names_attr(fh["classes"][()]) if "classes" in names else _names_attr(dset.attrs.get("classes"))
        lay = _layout_attr(dset.attrs.get("layout", fh.attrs.get("layout")))
    return {"X": X, "y": y, "classes": classes, "mask": mask, "layout": lay, "meta": {"x_key": xkey, "y_key": ykey}}


# -- CSV --------------------------------------------------------------------------------------


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def _head_rows(p: Path, k: int) -> list[list[str]]:
    """The first ``k`` non-empty rows, stripped."""
    out: list[list[str]] = []
    with open(p, newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if row and any(t.strip() for t in row):
                out.append([t.strip() for t in row])
                if len(out) == k:
                    break
    return out


def _csv_problem(p: Path, skip_header: bool, columns: Sequence[int] | None, names: Sequence[str] | None) -> DataError:
    """Find why a CSV did not parse: ragged rows or non-numeric values (named precisely)."""
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if r and any(t.strip() for t in r)]
    body = rows[1:] if skip_header else rows
    width = len(rows[0])
    for i, r in enumerate(body):
        if len(r) != width:
            line = i + (2 if skip_header else 1)
            return DataError("rows have different numbers of values (ragged rows)", parameter="path",
                             expected=f"{width} values per row", got=f"{len(r)} values on line {line}",
                             fix="pad or cut every row to the same length")
    cols = list(columns) if columns is not None else list(range(width))
    bad = []
    for c in cols:
        for i, r in enumerate(body):
            if not _is_number(r[c]):
                bad.append((c, i, r[c]))
                break
    if bad:
        def colname(c):
            return repr(names[c]) if names else f"#{c}"
        desc = "; ".join(f"column {colname(c)} has {v!r} (line {i + (2 if skip_header else 1)})" for c, i, v in bad[:5])
        return DataError("non-numeric values in feature columns", parameter="label",
                         expected="numeric feature columns (plus one label column)", got=desc,
                         fix="drop non-numeric columns, fill missing values, or name the label column with label=")
    return DataError("cannot parse the CSV file", parameter="path", expected="comma-separated numbers",
                     got=p.name, fix="check the delimiter (only ',' is read)")


def _resolve_column(label, names: Sequence[str] | None, ncols: int) -> int | None:
    if label is None:
        if names is None:
            return None
        lower = [n.lower() for n in names]
        for want in _LABEL_COLUMNS:
            if want in lower:
                return lower.index(want)
        return None
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        idx = int(label)
        if not -ncols <= idx < ncols:
            raise InputError("label column index out of range", parameter="label",
                             expected=f"an index in [-{ncols}, {ncols})", got=idx, fix="count columns from 0")
        return idx % ncols
    if isinstance(label, str):
        if names is None:
            raise InputError("the file has no header row, so columns have no names", parameter="label",
                             expected="a column index", got=label, fix="pass label=-1 for the last column")
        if label not in names:
            raise DataError("no such label column", parameter="label", expected="one of " + ", ".join(names[:30]),
                            got=label, fix="pass the label column's name or index")
        return list(names).index(label)
    raise InputError("label must name a column", parameter="label", expected="a column name or index",
                     got=type(label).__name__, fix="pass label='class' or label=-1")


def _read_csv(p: Path, *, label, key) -> dict:
    if key is not None:
        raise InputError("CSV files have no keys", parameter="key", expected="key=None", got=key,
                         fix="use label= to name the label column")
    head = _head_rows(p, 2)
    if not head:
        raise DataError("the CSV file is empty", parameter="path", expected="rows of numbers", got=p.name,
                        fix="check the file")
    first = head[0]
    ncols = len(first)
    # a header is a first row with a non-number, or the column numbers 0..n-1 that pandas writes
    numbered = all(t.isdigit() for t in first) and [int(t) for t in first] == list(range(ncols))
    header = numbered or not all(_is_number(t) for t in first)
    if header and len(head) < 2:
        raise DataError("the CSV file has a header but no rows", parameter="path", expected="rows of numbers",
                        got=p.name, fix="check the file")
    names = first if header and not numbered else None
    lab = _resolve_column(label, names, ncols)
    feats = [c for c in range(ncols) if c != lab]
    try:
        if header:
            raw = np.loadtxt(p, delimiter=",", skiprows=1, dtype=str, ndmin=2, encoding="utf-8-sig", comments=None)
            if raw.shape[1] != ncols:
                raise ValueError("width")
            data = raw[:, feats].astype(np.float64)
            ycol = raw[:, lab] if lab is not None else None
        else:
            data = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2, encoding="utf-8-sig", comments=None)
            if data.shape[1] != ncols:
                raise ValueError("width")
            ycol = data[:, lab] if lab is not None else None
            data = data[:, feats]
    except ValueError:
        raise _csv_problem(p, header, feats, names) from None
    meta: dict[str, Any] = {"header": header}
    classes = None
    if lab is None and names is None and ncols == KAGGLE_LENGTH + 1 and label is None:
        last = data[:, -1]
        if np.all(last == np.round(last)) and last.min() >= 0 and last.max() < 20:
            ycol, data = last, data[:, :-1]
            lab = ncols - 1
            values = set(np.unique(last).astype(int).tolist())
            if "ptbdb" in p.name.lower() and values <= {0, 1}:
                classes = list(KAGGLE_PTBDB_CLASSES)
            elif values <= set(range(5)):
                classes = list(KAGGLE_MITBIH_CLASSES)
            meta.update(kaggle=True, sampling_rate_hz=125)
    y = None
    if ycol is not None:
        y, found, note = encode_labels(ycol, parameter="label")
        meta.update(note)
        if classes is None:
            classes = found
    if lab is not None:
        meta["label_column"] = names[lab] if names else int(lab)
    return {"X": data, "y": y, "classes": classes, "meta": meta}


# -- Parquet ----------------------------------------------------------------------------------


def _list_to_numpy(arr, column: str) -> np.ndarray:
    """A (possibly nested) Arrow list column of equal lengths -> an n-d numpy array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    shape = [len(arr)]
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise DataError("the list column has missing rows", parameter="key", expected="a list in every row",
                            got=f"{arr.null_count} null lists in {column!r}", fix="drop those rows")
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if lengths.size and (lengths != lengths[0]).any():
            i = int(np.flatnonzero(lengths != lengths[0])[0])
            raise DataError("the list column is ragged", parameter="key",
                            expected=f"{int(lengths[0])} values in every list",
                            got=f"{int(lengths[i])} values at list {i} of {column!r}",
                            fix="pad or cut every sample to the same length")
        shape.append(int(lengths[0]) if lengths.size else 0)
        arr = arr.flatten()
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
        raise DataError("the list column is not numeric", parameter="key", expected="lists of numbers",
                        got=f"{column!r}: {arr.type}", fix="store numbers in the list column")
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    return values.reshape(shape)


def _read_parquet(p: Path, *, label, key) -> dict:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DependencyError("reading .parquet files needs pyarrow", parameter="path", expected="pyarrow installed",
                              got=p.name, fix=_INSTALL) from None
    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError("cannot read the Parquet file", parameter="path", expected="a Parquet file", got=str(exc),
                        fix="check the file") from None
    names = list(table.column_names)
    lab = _resolve_column(label, names, len(names))
    feats = [c for c in range(len(names)) if c != lab]
    is_list = [pa.types.is_list(table.schema.field(i).type) or pa.types.is_large_list(table.schema.field(i).type)
               or pa.types.is_fixed_size_list(table.schema.field(i).type) for i in range(len(names))]
    meta: dict[str, Any] = {}
    if key is not None:
        if key not in names:
            raise _missing_key(p, "such column", "key", [key], names)
        xcol = names.index(key)
        X = _list_to_numpy(table.column(xcol).combine_chunks(), key) if is_list[xcol] else None
        if X is None:
            raise DataError("key names a column that is not list-valued", parameter="key",
                            expected="a column holding one list (the sample) per row",
                            got=f"{key!r}: {table.schema.field(xcol).type}",
                            fix="leave key out to use the numeric columns")
        meta["x_column"] = key
    else:
        lists = [c for c in feats if is_list[c]]
        if len(lists) > 1:
            raise InputError("several list-valued columns", parameter="key",
                             expected="key= naming the one that holds the samples",
                             got=[names[c] for c in lists], fix=f"pass key='{names[lists[0]]}'")
        if lists:
            X = _list_to_numpy(table.column(lists[0]).combine_chunks(), names[lists[0]])
            meta["x_column"] = names[lists[0]]
        else:
            bad = []
            cols = []
            for c in feats:
                t = table.schema.field(c).type
                if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                    bad.append(f"{names[c]} ({t})")
                    continue
                col = table.column(c)
                if col.null_count:
                    raise DataError("a feature column has missing values", parameter="path",
                                    expected="a value in every row", got=f"{col.null_count} nulls in {names[c]!r}",
                                    fix="fill or drop the missing values")
                cols.append(col.to_numpy().astype(np.float64))
            if bad:
                raise DataError("non-numeric feature columns", parameter="label",
                                expected="numeric feature columns (plus one label column)", got=", ".join(bad[:10]),
                                fix="drop those columns, or name the label column with label=")
            if not cols:
                raise DataError("no feature columns", parameter="path", expected="numeric columns", got=names,
                                fix="check the file")
            X = np.column_stack(cols)
    y = None
    classes = None
    if lab is not None:
        col = table.column(lab)
        if col.null_count:
            raise DataError("labels have missing values", parameter="label", expected="a label in every row",
                            got=f"{col.null_count} nulls in {names[lab]!r}", fix="drop unlabeled rows")
        y, classes, note = encode_labels(col.to_numpy(zero_copy_only=False), parameter="label")
        meta.update(note, label_column=names[lab])
    return {"X": X, "y": y, "classes": classes, "meta": meta}


# -- UEA/UCR .ts --------------------------------------------------------------------------------


def read_ts(path: str | os.PathLike) -> tuple[np.ndarray, list[str], list[str] | None, dict[str, Any]]:
    """Parse a UEA/UCR ``.ts`` file (equal-length series, no time stamps).

    Parameters
    ----------
    path : str or Path
        The ``.ts`` file (UTF-8; missing values written ``?`` become NaN).

    Returns
    -------
    X : ndarray of float64, shape (N, C, L)
        The series.
    labels : list of str
        One label per sample (empty when ``@classLabel false``).
    classes : list of str or None
        The class names listed by ``@classLabel``, or ``None``.
    header : dict
        The other ``@`` fields (lower-case names, e.g. ``problemname``), as strings.

    Raises
    ------
    DataError
        A line before ``@data`` that is not a tag, a non-numeric value, no series, or ragged series.
    UnsupportedError
        A file with time stamps (``@timeStamps true``).

    Examples
    --------
    >>> import os, tempfile
    >>> from trustmap.datasets import read_ts
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.ts")
    >>> with open(path, "w") as fh:
    ...     _ = fh.write("@problemName Tiny\\n@classLabel true a b\\n@data\\n1,2,3:a\\n4,5,?:b\\n")
    >>> X, labels, classes, header = read_ts(path)
    >>> X.shape, labels, classes, header["problemname"]
    ((2, 1, 3), ['a', 'b'], ['a', 'b'], 'Tiny')
    """
    p = Path(path)
    header: dict[str, Any] = {}
    classes: list[str] | None = None
    has_labels = False
    series: list[list[np.ndarray]] = []
    labels: list[str] = []
    in_data = False
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise DataError("unexpected line before @data", parameter="path", expected="@tags or # comments",
                                    got=f"line {lineno}: {line[:40]}", fix="check the .ts file")
                tag, _, rest = line[1:].partition(" ")
                tag = tag.lower()
                if tag == "data":
                    in_data = True
                elif tag == "classlabel":
                    words = rest.split()
                    has_labels = bool(words) and words[0].lower() == "true"
                    classes = words[1:] if has_labels else None
                elif tag == "timestamps" and rest.strip().lower() == "true":
                    raise UnsupportedError(".ts files with time stamps are not supported", parameter="path",
                                           expected="@timeStamps false", got=p.name,
                                           fix="resample the series to a regular grid first")
                else:
                    header[tag] = rest.strip()
                continue
            fields = line.split(":")
            if has_labels:
                labels.append(fields[-1].strip())
                fields = fields[:-1]
            dims = []
            for f in fields:
                vals = [v.strip() for v in f.split(",")]
                try:
                    dims.append(np.array([np.nan if v == "?" else float(v) for v in vals], dtype=np.float64))
                except ValueError:
                    raise DataError("non-numeric value in a series", parameter="path", expected="numbers or ?",
                                    got=f"line {lineno}", fix="check the .ts file") from None
            series.append(dims)
    if not series:
        raise DataError("the .ts file has no series", parameter="path", expected="rows after @data", got=p.name,
                        fix="check the file")
    nd = {len(s) for s in series}
    lengths = {len(d) for s in series for d in s}
    if len(nd) != 1 or len(lengths) != 1:
        raise DataError("the series have unequal lengths or dimension counts (ragged)", parameter="path",
                        expected="equal-length series", got=f"dimensions {sorted(nd)}, lengths {sorted(lengths)[:5]}",
                        fix="pad or resample the series to one length")
    X = np.stack([np.stack(s) for s in series])
    return X, labels, classes, header


def _read_ts_file(p: Path, *, label, key) -> dict:
    if label is not None:
        raise InputError(".ts files carry their labels after the last ':'", parameter="label", expected="label=None",
                         got=label, fix="leave label out")
    X, labels, classes, header = read_ts(p)
    y = None
    if labels:
        names = classes or sorted(set(labels))
        lookup = {c: i for i, c in enumerate(names)}
        unknown = sorted(set(labels) - set(lookup))
        if unknown:
            raise DataError("labels not listed in @classLabel", parameter="path", expected=f"one of {names}",
                            got=unknown[:5], fix="fix the @classLabel line")
        y = np.array([lookup[s] for s in labels], dtype=np.int64)
        classes = names
    lay = "NCL" if X.shape[1] > 1 else None
    if X.shape[1] == 1:
        X = X[:, 0]
        lay = "NL"
    return {"X": X, "y": y, "classes": classes, "layout": lay,
            "meta": {"ts_header": {k: v for k, v in header.items()
                                   if k in ("problemname", "serieslength", "dimensions")}}}
