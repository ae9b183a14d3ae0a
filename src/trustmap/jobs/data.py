"""Where samples come from: one :class:`~trustmap.stream.Source` for arrays, datasets and files.

In memory, data become an :class:`ArraySource` (the whole array, read in chunks like a file);
streamed, a file is read a block of rows at a time (:func:`trustmap.stream.open_source`). Both
carry the same facts: ``n``, ``layout``, ``sample_shape``, ``y`` (or ``None``), ``classes``,
``name``, ``mask`` (a known ground-truth region, or ``None``) and ``labels_source``:

==================  ==========================================================================
``"dataset"``       the labels of a built-in dataset
``"data"``          a label column / array inside the data file
``"file"``          ``labels=FILE`` (``--labels``), beside the data (``labels_path`` names it)
``"array"``         ``labels=`` given as an array, or the ``y`` of ``(X, y)``
``None``            no labels: the commands use the model's predictions (and say so)
==================  ==========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..errors import DataError, InputError, MissingFileError, ShapeError
from ..stream.sources import Source, open_source

__all__ = ["ArraySource", "open_data", "read_labels", "parse_classes"]


class ArraySource(Source):
    """Samples held in memory, read in chunks like a file (an in-memory run is a one-file source).

    Parameters
    ----------
    dataset : Dataset
        The samples (and labels, class names).
    name : str, optional
        How the source describes itself in run records.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap import datasets
    >>> from trustmap.jobs import ArraySource
    >>> src = ArraySource(datasets.from_arrays(np.zeros((3, 8)), [0, 1, 0]))
    >>> src.n, src.layout, src.chunks(2)
    (3, 'NL', [(0, 2), (2, 3)])
    """

    format = "memory"

    def __init__(self, dataset, *, name: str | None = None) -> None:
        super().__init__(Path(str(dataset.meta.get("source", dataset.name))))
        self.dataset = dataset
        self.X = dataset.X
        self.n = int(len(self.X))
        self.sample_shape = tuple(int(s) for s in self.X.shape[1:])
        self.layout = dataset.layout
        self.classes = list(dataset.classes)
        self.y = None if dataset.y is None else np.asarray(dataset.y, dtype=np.int64)
        self.mask = dataset.mask
        self.name = name or dataset.name
        self.meta = {k: v for k, v in (dataset.meta or {}).items() if isinstance(v, (str, int, float, bool))}
        self._fp: str | None = None

    def _read_x(self, start: int, stop: int) -> np.ndarray:
        return self.X[start:stop]

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = _io.fingerprint_array(np.ascontiguousarray(self.X))
        return self._fp

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.meta.get("source"), "format": self.meta.get("format", "arrays"),
                "n": self.n, "sample_shape": list(self.sample_shape), "layout": self.layout,
                "classes": list(self.classes), "labels": self.has_labels, "fingerprint": self.fingerprint()}

    def subset(self, idx) -> "ArraySource":
        """The rows ``idx`` as a new source (labels, classes and provenance kept)."""
        src = ArraySource(self.dataset.subset(np.asarray(idx)), name=self.name)
        src.classes, src.labels_source = list(self.classes), getattr(self, "labels_source", None)
        src.labels_path = getattr(self, "labels_path", None)
        if self.y is not None:
            src.y = self.y[np.asarray(idx)]
        return src


def read_labels(labels, parameter: str = "labels") -> np.ndarray | None:
    """Labels given beside the data: an array, or a ``.npy`` / ``.csv`` / ``.txt`` file of one label per line.

    Parameters
    ----------
    labels : array, str, Path or None
    parameter : str, default 'labels'
        Name used in error messages.

    Returns
    -------
    ndarray or None

    Raises
    ------
    MissingFileError
        No file at the path.
    DataError
        An unreadable labels file.

    Examples
    --------
    >>> from trustmap.jobs import read_labels
    >>> read_labels([0, 1, 1])
    array([0, 1, 1])
    """
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        if not p.is_file():
            raise MissingFileError("labels file not found", parameter=parameter, expected="an existing file",
                                   got=str(p), fix="check the path")
        try:
            if p.suffix.lower() == ".npy":
                return np.load(p, allow_pickle=False)
            return np.loadtxt(p, dtype=str, delimiter=",", ndmin=1, comments=None)
        except (ValueError, OSError) as exc:
            raise DataError("cannot read the labels file", parameter=parameter,
                            expected="an .npy array or one label per line", got=f"{type(exc).__name__}: {exc}",
                            fix="save the labels with np.save, or one per line") from None
    return np.asarray(labels)


def parse_classes(classes) -> list[str] | None:
    """Class names from ``'N,S,V'`` (the CLI's ``--classes``), a list, or ``None``.

    Parameters
    ----------
    classes : str, sequence of str or None

    Returns
    -------
    list of str or None

    Raises
    ------
    InputError
        Empty or repeated names.

    Examples
    --------
    >>> from trustmap.jobs import parse_classes
    >>> parse_classes("N,S,V")
    ['N', 'S', 'V']
    """
    if classes is None:
        return None
    if isinstance(classes, str):
        names = [c.strip() for c in classes.split(",")]
    else:
        names = [str(c).strip() for c in classes]
    if not names or any(not c for c in names) or len(set(names)) != len(names):
        raise InputError("class names must be distinct and non-empty", parameter="classes",
                         expected="e.g. 'N,S,V' (one name per class index)", got=classes,
                         fix="pass one distinct name per class, in class-index order")
    return names


def _encode(values, classes: list[str] | None, n: int) -> tuple[np.ndarray, list[str]]:
    from ..data import encode_labels

    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise ShapeError("one label per sample is needed", parameter="labels", expected=f"{n} labels",
                         got=f"shape {arr.shape}", fix="pass the labels that belong to these samples")
    if classes is not None and arr.dtype.kind in "OUS":
        text = [v.decode() if isinstance(v, bytes) else str(v).strip() for v in arr.tolist()]
        lookup = {c: i for i, c in enumerate(classes)}
        if all(t in lookup for t in text):
            return np.array([lookup[t] for t in text], dtype=np.int64), list(classes)
    y, names, _ = encode_labels(arr, parameter="labels")
    return y, names


def open_data(data=None, *, dataset: str | None = None, split: str = "test", seed: int = 0, layout=None,
              labels=None, label=None, key=None, classes=None, stream: bool = False, n: int | None = None) -> Source:
    """The samples of a job as one :class:`~trustmap.stream.Source`.

    Parameters
    ----------
    data
        A data file (``.npz``, ``.npy``, ``.csv``, ``.parquet``, ``.h5``, ``.ts``), a built-in dataset
        name, a :class:`~trustmap.datasets.Dataset`, an ``(X, y)`` pair, an array, or an open Source.
    dataset
        A built-in dataset name (instead of ``data``); its ``split`` (``seed`` for the split).
    labels
        Labels beside the data (an array or a ``.npy`` / one-per-line file); they replace the data's own.
    classes
        Class names in class-index order (``'N,S,V'`` or a list); used by every plot and table.
    stream
        Read a file a block of rows at a time instead of loading it (``.npy``, ``.parquet``, ``.h5``, ``.csv``).
    n
        In memory: keep the first ``n`` samples only.

    Returns
    -------
    Source
        A :class:`~trustmap.stream.Source` (an :class:`ArraySource` in memory).

    Raises
    ------
    InputError
        Neither or both of ``data`` and ``dataset``, an unknown dataset name, ``stream`` for a file
        that cannot stream, or an ``n`` that is not a positive int.
    DataError
        Labels that do not match the samples.
    MissingFileError
        A data or labels file that does not exist.
    ShapeError, LayoutError
        Samples of an ambiguous or wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.jobs import open_data
    >>> src = open_data((np.zeros((6, 1, 8), np.float32), np.arange(6) % 2))
    >>> src.n, src.layout, src.has_labels
    (6, 'NCL', True)
    """
    from .. import datasets

    names = parse_classes(classes)
    if dataset is not None and data is not None:
        raise InputError("give one of a built-in dataset or data", parameter="data", expected="dataset= or data=",
                         got=f"dataset={dataset!r}, data={data!r}", fix="pass only one of them")
    if dataset is None and isinstance(data, str) and data in datasets.NAMES and not Path(data).exists():
        dataset, data = data, None
    if dataset is None and data is None:
        raise InputError("no data given", parameter="data", expected="a data file, a built-in dataset or arrays",
                         got=None, fix="pass data='beats.npy' or dataset='mnist1d' (CLI: --data / --dataset)")
    lab_values = read_labels(labels)
    if isinstance(data, Source):
        src, source = data, "data" if data.y is not None else None
    elif dataset is not None:
        if dataset not in datasets.NAMES:
            raise InputError("unknown built-in dataset", parameter="dataset", expected="one of " +
                             ", ".join(datasets.NAMES), got=dataset, fix="pick a built-in name, or pass a data file")
        src = ArraySource(datasets.load(dataset, split=split, seed=seed), name=dataset)
        source = "dataset" if src.y is not None else None
    elif isinstance(data, (str, os.PathLike)):
        if stream:
            src = open_source(data, layout=layout, label=label, key=key)
            src.name = Path(data).stem
            src.mask = None
            source = "data" if src.y is not None else None
        else:
            ds = datasets.read(data, label=label, key=key, layout=layout)
            src = ArraySource(ds)
            source = "data" if src.y is not None else None
    elif isinstance(data, datasets.Dataset):
        src, source = ArraySource(data), ("array" if data.y is not None else None)
    else:
        if isinstance(data, tuple) and len(data) == 2:
            X, y = data
        else:
            X, y = data, None
        src = ArraySource(datasets.from_arrays(np.asarray(X), None if y is None else np.asarray(y), layout=layout,
                                               classes=names))
        source = "array" if y is not None else None
    if lab_values is not None:
        y, found = _encode(lab_values, names, src.n)
        src.y = y
        if not names:
            src.classes = found
        source = "file" if isinstance(labels, (str, os.PathLike)) else "array"
    src.labels_source = source
    src.labels_path = str(labels) if isinstance(labels, (str, os.PathLike)) else None
    if names is not None:
        if src.y is not None and len(src.y) and int(src.y.max()) >= len(names):
            raise DataError("a label is not one of the named classes", parameter="classes",
                            expected=f"labels below {len(names)}", got=int(src.y.max()),
                            fix="name every class (--classes N,S,V,F,Q), in class-index order")
        src.classes = names
    if n is not None:
        if not isinstance(src, ArraySource):
            raise InputError("n picks samples of an in-memory run", parameter="n", expected="n=None when streaming",
                             got=n, fix="drop n (a streamed run covers the whole file)")
        if n < len(src.X):
            src = src.subset(np.arange(int(n)))
    if not hasattr(src, "mask"):
        src.mask = None
    if not hasattr(src, "name"):
        src.name = src.path.stem
    return src


def class_names(src: Source, model) -> list[str] | None:
    """The source's class names when they name the model's classes (else None: plots show indices)."""
    k = getattr(model, "n_classes", None)
    names = list(getattr(src, "classes", []) or [])
    if not names:
        return None
    if k is not None and len(names) < int(k):
        return None
    return names


def check_classes(names: Sequence[str] | None, model) -> None:
    """``classes=`` must name every class of the model."""
    if names is None:
        return
    k = int(model.n_classes)
    if len(names) != k:
        raise InputError("the class names do not match the model's classes", parameter="classes",
                         expected=f"{k} names (the model has {k} classes)", got=len(names),
                         fix=f"pass {k} comma-separated names, in class-index order")


def see_first_row(m, src: Source) -> None:
    """Let a model loaded without ``input_shape`` learn its input's shape from the data's first row.

    A plain ``nn.Module`` whose class count shows only on data (no last ``Linear``) then knows its number of
    classes before targets are checked and the run record is written.

    Parameters
    ----------
    m : Model
        The loaded model (its ``spatial`` is set in place when unknown).
    src : Source
        The data (one row is read).
    """
    if (m.spatial is None or None in m.spatial) and src.n:
        m.to_internal(src.read(0, 1)[0], layout=src.layout)
