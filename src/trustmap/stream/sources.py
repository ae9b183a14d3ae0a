"""Streaming readers: a data file read a block of rows at a time, at constant memory.

:func:`open_source` opens an ``.npy`` file (memory-mapped one block at a time), a Parquet file
(pyarrow row groups), an HDF5 dataset (h5py slices) or a CSV file (an index of line offsets,
then one block of lines at a time). Every :class:`Source` answers ``read(start, stop)`` with
``(X, y)`` for those rows, ``X`` as float32 in the file's layout, so a run can be cut into
chunks, restarted at any chunk, or split between workers that each open the file themselves.

Labels stay in memory (one small integer per sample, needed to name the classes); inputs never do.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.loaders import (unreadable_as_data_error, _INSTALL, check_data_path, _head_rows, _is_number, _list_to_numpy, _pick_keys,
                            _layout_attr, _names_attr, _resolve_column, encode_labels, guess_layout)
from ..errors import DataError, DependencyError, InputError, MissingFileError, ShapeError
from ..layout import Layout, as_layout

__all__ = ["Source", "open_source", "STREAM_FORMATS"]

#: File suffixes :func:`open_source` streams.
STREAM_FORMATS = (".npy", ".parquet", ".pq", ".h5", ".hdf5", ".csv")


class Source:
    """Rows of a data file, read a block at a time.

    Attributes
    ----------
    path : Path
    format : str
        ``npy``, ``parquet``, ``h5`` or ``csv``.
    n : int
        Number of samples.
    sample_shape : tuple of int
        The shape of one sample, in the file's layout.
    layout : str
        The layout of ``X`` as returned by :meth:`read` (e.g. ``NL``, ``NLC``, ``NCHW``).
    classes : list of str
        Class names (empty without labels).

    Raises
    ------
    DataError
        From :meth:`read`: a block of the file is unreadable or holds NaN/Inf.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from trustmap.stream import open_source
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((5, 2, 8), np.float32))
    >>> src = open_source(path, layout="NCL")
    >>> src.chunks(2)
    [(0, 2), (2, 4), (4, 5)]
    """

    format = "?"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.n = 0
        self.sample_shape: tuple[int, ...] = ()
        self.layout = "NL"
        self.classes: list[str] = []
        self.y: np.ndarray | None = None
        self.meta: dict[str, Any] = {}

    # -- to implement ------------------------------------------------------------------------
    def _read_x(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------
    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(X, y)`` of rows ``start:stop`` (``y`` is None without labels)."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.n:
            raise InputError("row range out of bounds", parameter="stop", expected=f"0 <= start <= stop <= {self.n}",
                             got=f"{start}:{stop}", fix="read rows inside the file")
        with unreadable_as_data_error(self.path):
            x = self._read_x(start, stop) if stop > start else np.zeros((0, *self.sample_shape), np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != (stop - start, *self.sample_shape):
            raise DataError("a block of rows does not have the file's sample shape", parameter="path",
                            expected=f"{(stop - start, *self.sample_shape)}", got=f"{x.shape}",
                            fix="check the file (rows of different lengths?)")
        if not np.isfinite(x).all():
            bad = start + int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
            raise DataError("the data holds NaN or infinite values", parameter="path", expected="finite numbers",
                            got=f"a non-finite value in row {bad}", fix="fill or drop those rows")
        y = None if self.y is None else self.y[start:stop]
        return x, y

    def chunks(self, rows: int) -> list[tuple[int, int]]:
        """The row ranges ``[(0, rows), (rows, 2 rows), ...]`` covering the file."""
        rows = int(rows)
        return [(a, min(a + rows, self.n)) for a in range(0, self.n, rows)]

    def fingerprint(self) -> str:
        """Identifies the file's version cheaply: path, size, modification time, shape."""
        st = self.path.stat() if self.path.is_file() else None
        text = f"{self.path.resolve()}|{st.st_size if st else 0}|{st.st_mtime_ns if st else 0}|{self.n}|" \
               f"{self.sample_shape}|{self.layout}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "n": int(self.n),
                "sample_shape": list(self.sample_shape), "layout": self.layout, "classes": list(self.classes),
                "labels": self.has_labels, **self.meta}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, n={self.n}, sample_shape={self.sample_shape}, "
                f"layout={self.layout!r}, {'labeled' if self.has_labels else 'unlabeled'})")

    # -- shared helpers ------------------------------------------------------------------------
    def _set_layout(self, layout, from_file: str | None) -> None:
        shape = (max(self.n, 1), *self.sample_shape)
        lay = as_layout(layout) if layout is not None else (as_layout(from_file) if from_file else None)
        if lay is None:
            lay = guess_layout(shape)
        if lay.ndim != len(shape):
            raise ShapeError("the data does not have the rank of the layout", parameter="layout",
                             expected=f"{lay.ndim} axes for layout {lay.name}", got=f"shape {shape}",
                             fix="pass the layout the file really has")
        self.layout = lay.name

    def _set_labels(self, values, parameter: str) -> None:
        if values is None:
            return
        y, classes, note = encode_labels(values, parameter=parameter)
        if len(y) != self.n:
            raise ShapeError("one label per sample is needed", parameter=parameter, expected=f"{self.n} labels",
                             got=f"{len(y)} labels", fix="pass the labels that belong to this file")
        self.y = y
        self.classes = list(classes) if not self.classes else self.classes
        if len(self.classes) <= int(y.max()):
            raise DataError("a label is not a class index", parameter=parameter,
                            expected=f"labels below {len(self.classes)}", got=int(y.max()),
                            fix="pass one class name per label value")
        self.meta.update(note)


def _labels_from(labels, parameter: str = "labels") -> np.ndarray | None:
    """Labels given beside the data: an array, or a ``.npy`` / ``.csv`` / ``.txt`` file of one label per line."""
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        p = Path(labels)
        if not p.exists():
            raise MissingFileError("labels file not found", parameter=parameter, expected="an existing file",
                                   got=str(p), fix="check the path")
        with unreadable_as_data_error(p, parameter):
            if p.suffix.lower() == ".npy":
                return np.load(p, allow_pickle=False)
            return np.loadtxt(p, dtype=str, delimiter=",", ndmin=1, comments=None, encoding="utf-8")
    return np.asarray(labels)


# ----------------------------------------------------------------------------------------------
# NPY
# ----------------------------------------------------------------------------------------------


def npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an open ``.npy`` file; leaves it at the first data byte."""
    major, _minor = np.lib.format.read_magic(fh)
    read = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major)
    if read is None:
        raise ValueError(f"unsupported .npy format version {major}")
    return read(fh, max_header_size=1 << 20) if _accepts_max(read) else read(fh)


def _accepts_max(fn) -> bool:
    import inspect

    return "max_header_size" in inspect.signature(fn).parameters


class NpySource(Source):
    """An ``.npy`` file, memory-mapped one block of rows at a time (the map is dropped after each block,
    so the resident memory does not grow with the file)."""

    format = "npy"

    def __init__(self, path: Path, *, layout=None, labels=None) -> None:
        super().__init__(path)
        with open(path, "rb") as fh:
            try:
                shape, fortran, dtype = npy_header(fh)
            except ValueError as exc:
                raise DataError("cannot read the .npy header", parameter="path", expected="a file written by np.save",
                                got=str(exc), fix="save the array with np.save") from None
            self._offset = fh.tell()
        if dtype.hasobject or dtype.kind not in "fiub":
            raise DataError("the .npy array is not numeric", parameter="path", expected="a numeric array",
                            got=f"dtype {dtype}", fix="save numbers (no object dtype)")
        if fortran and len(shape) > 1:
            raise DataError("the .npy array is in Fortran order, which cannot be read by rows",
                            parameter="path", expected="a C-ordered array", got="fortran_order=True",
                            fix="re-save it with np.save(path, np.ascontiguousarray(X))")
        if len(shape) < 2:
            raise ShapeError("the .npy array needs a sample axis and at least one more", parameter="path",
                             expected="shape (N, L), (N, L, C), (N, H, W), ...", got=f"shape {shape}",
                             fix="save X with one row per sample")
        self._dtype = dtype
        self.n = int(shape[0])
        self.sample_shape = tuple(int(s) for s in shape[1:])
        self._row_bytes = int(np.prod(self.sample_shape)) * dtype.itemsize
        size = path.stat().st_size
        if size < self._offset + self.n * self._row_bytes:
            raise DataError("the .npy file is shorter than its header says (truncated?)", parameter="path",
                            expected=f"{self._offset + self.n * self._row_bytes} bytes", got=f"{size} bytes",
                            fix="write the file again")
        self._set_layout(layout, None)
        self._set_labels(_labels_from(labels), "labels")

    def _read_x(self, start: int, stop: int) -> np.ndarray:
        mm = np.memmap(self.path, dtype=self._dtype, mode="r", offset=self._offset + start * self._row_bytes,
                       shape=(stop - start, *self.sample_shape))
        try:
            return np.array(mm, dtype=np.float32)
        finally:
            mm._mmap.close()  # noqa: SLF001 - release the pages now, not at garbage collection
            del mm


# ----------------------------------------------------------------------------------------------
# Parquet
# ----------------------------------------------------------------------------------------------


class ParquetSource(Source):
    """A Parquet file read by row groups (one list column per sample, or one numeric column per value)."""

    format = "parquet"

    def __init__(self, path: Path, *, layout=None, label=None, key=None, labels=None) -> None:
        super().__init__(path)
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise DependencyError("reading .parquet files needs pyarrow", parameter="path",
                                  expected="pyarrow installed", got=path.name, fix=_INSTALL) from None
        self._pa = pa
        try:
            self._pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError("cannot read the Parquet file", parameter="path", expected="a Parquet file",
                            got=str(exc), fix="check the file") from None
        schema = self._pf.schema_arrow
        names = list(schema.names)
        lab = _resolve_column(label, names, len(names))
        feats = [c for c in range(len(names)) if c != lab]

        def is_list(t):
            return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)

        if key is not None:
            if key not in names:
                raise DataError("no such column", parameter="key", expected="one of " + ", ".join(names[:30]),
                                got=key, fix="pass the list column holding the samples")
            if not is_list(schema.field(key).type):
                raise DataError("key names a column that is not list-valued", parameter="key",
                                expected="a column holding one list (the sample) per row",
                                got=f"{key!r}: {schema.field(key).type}", fix="leave key out to use numeric columns")
            self._xcols, self._list = [key], True
        else:
            lists = [names[c] for c in feats if is_list(schema.field(c).type)]
            if len(lists) > 1:
                raise InputError("several list-valued columns", parameter="key",
                                 expected="key= naming the one that holds the samples", got=lists,
                                 fix=f"pass key='{lists[0]}'")
            if lists:
                self._xcols, self._list = lists, True
            else:
                bad = [f"{names[c]} ({schema.field(c).type})" for c in feats
                       if not (pa.types.is_integer(schema.field(c).type) or pa.types.is_floating(schema.field(c).type)
                               or pa.types.is_boolean(schema.field(c).type))]
                if bad:
                    raise DataError("non-numeric feature columns", parameter="label",
                                    expected="numeric feature columns (plus one label column)", got=", ".join(bad[:10]),
                                    fix="drop those columns, or name the label column with label=")
                self._xcols, self._list = [names[c] for c in feats], False
        if not self._xcols:
            raise DataError("no feature columns", parameter="path", expected="numeric columns", got=names,
                            fix="check the file")
        md = self._pf.metadata
        self.n = int(md.num_rows)
        self._starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        self._cache: tuple[int, np.ndarray] | None = None
        first = self._group(0) if md.num_row_groups else np.zeros((0, len(self._xcols)))
        self.sample_shape = tuple(int(s) for s in first.shape[1:])
        self._set_layout(layout, None)
        self.meta.update(x_columns=self._xcols[0] if self._list else f"{len(self._xcols)} numeric columns",
                         row_groups=int(md.num_row_groups))
        if lab is not None and labels is not None:
            raise InputError("labels given twice", parameter="labels", expected="a label column or labels=, not both",
                             got=names[lab], fix="drop labels= or label=")
        if lab is not None:
            col = self._pf.read(columns=[names[lab]]).column(0)
            if col.null_count:
                raise DataError("labels have missing values", parameter="label", expected="a label in every row",
                                got=f"{col.null_count} nulls in {names[lab]!r}", fix="drop unlabeled rows")
            self._set_labels(col.to_numpy(zero_copy_only=False), "label")
            self.meta["label_column"] = names[lab]
        else:
            self._set_labels(_labels_from(labels), "labels")

    def _group(self, g: int) -> np.ndarray:
        if self._cache is not None and self._cache[0] == g:
            return self._cache[1]
        table = self._pf.read_row_group(g, columns=self._xcols)
        if self._list:
            x = _list_to_numpy(table.column(0).combine_chunks(), self._xcols[0])
        else:
            cols = []
            for name in self._xcols:
                col = table.column(name)
                if col.null_count:
                    raise DataError("a feature column has missing values", parameter="path",
                                    expected="a value in every row", got=f"{col.null_count} nulls in {name!r}",
                                    fix="fill or drop the missing values")
                cols.append(col.to_numpy())
            x = np.column_stack(cols) if cols else np.zeros((table.num_rows, 0))
        x = x.astype(np.float32, copy=False)
        self._cache = (g, x)
        return x

    def _read_x(self, start: int, stop: int) -> np.ndarray:
        g0 = int(np.searchsorted(self._starts, start, side="right") - 1)
        g1 = int(np.searchsorted(self._starts, stop, side="left") - 1)
        parts = []
        for g in range(g0, max(g0, g1) + 1):
            gx = self._group(g)
            a, b = max(start, self._starts[g]) - self._starts[g], min(stop, self._starts[g + 1]) - self._starts[g]
            if b > a:
                parts.append(gx[a:b])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


# ----------------------------------------------------------------------------------------------
# HDF5
# ----------------------------------------------------------------------------------------------


class H5Source(Source):
    """A dataset in an HDF5 file, read by slices."""

    format = "h5"

    def __init__(self, path: Path, *, layout=None, label=None, key=None, labels=None) -> None:
        super().__init__(path)
        try:
            import h5py
        except ImportError:
            raise DependencyError("reading .h5 files needs h5py", parameter="path", expected="h5py installed",
                                  got=path.name, fix=_INSTALL) from None
        try:
            self._fh = h5py.File(path, "r")
        except OSError as exc:
            raise DataError("cannot open the HDF5 file", parameter="path", expected="an HDF5 file", got=str(exc),
                            fix="check that the file is HDF5 and not truncated") from None
        names: list[str] = []
        self._fh.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
        xkey, ykey = _pick_keys(path, names, key, label, {"mask", "classes"}, "dataset")
        self._dset = self._fh[xkey]
        if self._dset.dtype.kind not in "fiub":
            raise DataError("the input dataset is not numeric", parameter="key", expected="a numeric dataset",
                            got=f"{xkey}: dtype {self._dset.dtype}", fix="name the numeric dataset with key=")
        if self._dset.ndim < 2:
            raise ShapeError("the input dataset needs a sample axis and at least one more", parameter="key",
                             expected="shape (N, L), (N, L, C), ...", got=f"shape {self._dset.shape}",
                             fix="store X with one row per sample")
        self.n = int(self._dset.shape[0])
        self.sample_shape = tuple(int(s) for s in self._dset.shape[1:])
        if "classes" in names:
            self.classes = _names_attr(self._fh["classes"][()]) or []
        elif self._dset.attrs.get("classes") is not None:
            self.classes = _names_attr(self._dset.attrs.get("classes")) or []
        self._set_layout(layout, _layout_attr(self._dset.attrs.get("layout", self._fh.attrs.get("layout"))))
        if ykey is not None and labels is not None:
            raise InputError("labels given twice", parameter="labels", expected="a label dataset or labels=, not both",
                             got=ykey, fix="drop labels= or label=")
        self._set_labels(self._fh[ykey][()] if ykey is not None else _labels_from(labels), "label")
        self.meta.update(x_key=xkey, y_key=ykey)

    def _read_x(self, start: int, stop: int) -> np.ndarray:
        return self._dset[start:stop]

    def close(self) -> None:
        try:
            self._fh.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


class CsvSource(Source):
    """A CSV file of one sample per row: one pass builds an index of line offsets (and reads the label
    column), then blocks of rows are parsed on demand."""

    format = "csv"
    _STEP = 1024  # one offset kept per this many rows

    def __init__(self, path: Path, *, layout=None, label=None, key=None, labels=None) -> None:
        super().__init__(path)
        if key is not None:
            raise InputError("CSV files have no keys", parameter="key", expected="key=None", got=key,
                             fix="use label= to name the label column")
        head = _head_rows(path, 2)
        if not head:
            raise DataError("the CSV file is empty", parameter="path", expected="rows of numbers", got=path.name,
                            fix="check the file")
        first = head[0]
        ncols = len(first)
        numbered = all(t.isdigit() for t in first) and [int(t) for t in first] == list(range(ncols))
        header = numbered or not all(_is_number(t) for t in first)
        names = first if header and not numbered else None
        lab = _resolve_column(label, names, ncols)
        if lab is not None and labels is not None:
            raise InputError("labels given twice", parameter="labels", expected="a label column or labels=, not both",
                             got=lab, fix="drop labels= or label=")
        self._feats = [c for c in range(ncols) if c != lab]
        self._ncols = ncols
        offsets: list[int] = []
        tokens: dict[bytes, int] = {}
        ids: list[int] = []
        n = 0
        with open(path, "rb") as fh:
            pos = 0
            if header:
                pos += len(fh.readline())  # the header (with any byte-order mark)
            elif fh.read(3) == b"\xef\xbb\xbf":
                pos = 3
            fh.seek(pos)
            for line in fh:
                if not line.strip():
                    pos += len(line)
                    continue
                if n % self._STEP == 0:
                    offsets.append(pos)
                if lab is not None:
                    tok = line.rstrip(b"\r\n").split(b",")[lab].strip()
                    ids.append(tokens.setdefault(tok, len(tokens)))
                pos += len(line)
                n += 1
        if n == 0:
            raise DataError("the CSV file has no rows", parameter="path", expected="rows of numbers", got=path.name,
                            fix="check the file")
        self._offsets = offsets
        self.n = n
        self.sample_shape = (len(self._feats),)
        self._set_layout(layout, None)
        if lab is not None:
            names_found = np.array([t.decode("utf-8") for t in tokens], dtype=object)
            enc, classes, note = encode_labels(names_found, parameter="label")
            self.y = enc[np.asarray(ids, dtype=np.int64)]
            self.classes = classes
            self.meta.update(note, label_column=names[lab] if names else int(lab))
        else:
            self._set_labels(_labels_from(labels), "labels")
        self.meta["header"] = bool(header)

    def _read_x(self, start: int, stop: int) -> np.ndarray:
        block = start // self._STEP
        skip = start - block * self._STEP
        want = stop - start
        lines: list[bytes] = []
        with open(self.path, "rb") as fh:
            fh.seek(self._offsets[block])
            for line in fh:
                if not line.strip():
                    continue
                if skip:
                    skip -= 1
                    continue
                lines.append(line)
                if len(lines) == want:
                    break
        try:
            data = np.loadtxt(io.BytesIO(b"".join(lines)), delimiter=",", dtype=np.float64, ndmin=2,
                              usecols=self._feats, comments=None)
        except ValueError as exc:
            raise DataError("cannot parse rows of the CSV file", parameter="path",
                            expected=f"{self._ncols} comma-separated values per row, numbers in the feature columns",
                            got=f"rows {start}..{stop - 1}: {exc}",
                            fix="fix those rows, or name the label column with label=") from None
        return data


# ----------------------------------------------------------------------------------------------


def open_source(path: str | os.PathLike, *, layout: str | Layout | None = None, label: str | int | None = None,
                key: str | None = None, labels=None) -> Source:
    """Open a data file for streaming.

    Parameters
    ----------
    path
        ``.npy`` (memory-mapped), ``.parquet`` (row groups), ``.h5``/``.hdf5`` or ``.csv``.
    layout
        The layout of the samples (default: guessed from the shape; an ambiguous shape raises).
    label
        Parquet/CSV: the label column (name or index; default a column named label/labels/y/
        target/class). HDF5: the label dataset (default ``y``/``labels``).
    key
        Parquet: the list column holding the samples. HDF5: the input dataset (default ``X``/``x``).
    labels
        Labels kept beside the data (an ``.npy`` file holds X only): an array or a ``.npy`` /
        one-label-per-line text file.

    Returns
    -------
    Source

    Raises
    ------
    MissingFileError
        No file at ``path``.
    InputError
        An unknown file type, or a ``label`` / ``key`` column that does not exist.
    DataError
        An unreadable or empty file, non-numeric samples, or labels of another length.
    ShapeError, LayoutError
        Ragged samples, or a shape whose layout is ambiguous without ``layout``.
    DependencyError
        pyarrow (Parquet) or h5py (HDF5) is not installed.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import open_source
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> np.save(os.path.join(d, "y.npy"), np.arange(10) % 2)
    >>> src = open_source(os.path.join(d, "x.npy"), labels=os.path.join(d, "y.npy"))
    >>> src.n, src.sample_shape, src.layout, src.classes
    (10, (1, 16), 'NCL', ['0', '1'])
    >>> X, y = src.read(0, 4)
    >>> X.shape, y.tolist()
    ((4, 1, 16), [0, 1, 0, 1])
    """
    if isinstance(path, Source):
        return path
    p = check_data_path(path, STREAM_FORMATS, "this file type cannot be streamed",
                        "save X with np.save (.npy) or as Parquet; .npz archives must be read whole")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if label is not None or key is not None:
            raise InputError(".npy files hold X only", parameter="label" if label is not None else "key",
                             expected="labels= (a separate labels file) instead", got=label if label is not None else key,
                             fix="pass labels='y.npy'")
        with unreadable_as_data_error(p):
            return NpySource(p, layout=layout, labels=labels)
    cls = {".parquet": ParquetSource, ".pq": ParquetSource, ".h5": H5Source, ".hdf5": H5Source,
           ".csv": CsvSource}[suffix]
    with unreadable_as_data_error(p):
        return cls(p, layout=layout, label=label, key=key, labels=labels)
