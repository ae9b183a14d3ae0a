"""Incremental, resumable outputs for streamed runs.

A sink receives the results of one chunk of rows at a time and writes them to disk at once:

* ``npy``: ``NAME.npy`` (the maps, the input's shape) and ``NAME.targets.npy`` are written in place,
  chunk by chunk (``os.pwrite`` at the chunk's offset), under the names ``*.partial``; they get
  their final names only when every chunk is in. A final ``.npy`` file is therefore always whole.
* ``parquet``: a folder ``NAME.parquet/`` of ``part-<chunk>.parquet`` files (columns ``index``,
  ``target``, ``map`` = the sample's map flattened), each written atomically; the folder gets its
  final name when every chunk is in. Ray writes the same columns (see :mod:`trustmap.stream.ray_engine`).

Beside each output, ``NAME.progress.json`` (replaced atomically after each chunk, after the chunk's
bytes are on disk) lists the chunks done and fingerprints the run (model, data, method, parameters,
chunking). Starting the same run again skips the chunks listed; starting a different run into the
same folder is refused rather than mixed. When the run completes, ``NAME.json`` records how the maps
were made and the progress file is removed.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..errors import DataError, InputError, MissingFileError, RunDirError
from .sources import npy_header

__all__ = ["open_sink", "NpySink", "ParquetSink", "read_maps", "SINK_FORMATS", "StreamConflictError"]

SINK_FORMATS = ("npy", "parquet")
_FORMAT = "trustmap-stream/1"


class StreamConflictError(InputError):
    """An output folder holds an unfinished or finished run made with other settings.

    Raised by :func:`stream_explain`, :func:`stream_locate` and :func:`stream_evaluate` (an
    :class:`~trustmap.errors.InputError`); pass a new folder or ``overwrite=True``.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> np.save(os.path.join(d, "y.npy"), np.arange(10) % 2)
    >>> _ = stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "out"), progress=False)
    >>> stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "out"), chunk_rows=5,
    ...                progress=False)
    Traceback (most recent call last):
    ...
    trustmap.stream.sinks.StreamConflictError: out: the output already holds a finished result made differently; ...
    """


class _Sink:
    suffix = ""

    def __init__(self, out_dir: Path, name: str, n: int, sample_shape: Sequence[int], run: dict[str, Any],
                 chunk_rows: int, *, resume: bool = True, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.name = str(name)
        self.n = int(n)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.chunk_rows = int(chunk_rows)
        self.n_chunks = max(1, -(-self.n // self.chunk_rows))
        self.run = _io.to_jsonable(dict(run, n=self.n, sample_shape=list(self.sample_shape), chunk_rows=self.chunk_rows,
                                        format=self.format))
        self.final = self.out_dir / f"{self.name}{self.suffix}"
        self.partial = self.out_dir / f"{self.name}{self.suffix}.partial"
        self.ledger = self.out_dir / f"{self.name}.progress.json"
        self.record_path = self.out_dir / f"{self.name}.json"
        self.done: set[int] = set()
        self.complete = False
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            self._remove_all()
        if self.final.exists():
            rec = _read_record(self.record_path)
            if rec is not None and rec.get("run") == self.run:
                self.complete = True
                self.done = set(range(self.n_chunks))
                return
            raise StreamConflictError("the output already holds a finished result made differently",
                                      parameter="out", expected=f"no {self.final.name} or one from the same run",
                                      got=str(self.final), fix="pass a new output folder, or overwrite=True "
                                      "(CLI: --overwrite)")
        if self.ledger.exists() and self.partial.exists() and resume:
            led = _io.read_json(self.ledger)
            if led.get("run") != self.run:
                diff = sorted(k for k in set(led.get("run", {})) | set(self.run)
                              if led.get("run", {}).get(k) != self.run.get(k))
                raise StreamConflictError("the output holds an unfinished run made with other settings",
                                          parameter="out", expected="the same model, data, method and chunking",
                                          got="different " + ", ".join(diff[:6]),
                                          fix="pass a new output folder, or overwrite=True (CLI: --overwrite)")
            self.done = {int(c) for c in led.get("done", [])}
            self._reopen()
        else:
            self._remove_all()
            self._create()
            self._save_ledger()

    # -- bookkeeping ----------------------------------------------------------------------------
    def _remove_all(self) -> None:
        for p in (self.final, self.partial):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for p in (self.ledger, self.record_path):
            if p.exists():
                p.unlink()

    def _save_ledger(self) -> None:
        _io.write_json(self.ledger, {"format": _FORMAT, "run": self.run, "done": sorted(self.done),
                                     "n_chunks": self.n_chunks})

    @property
    def rows_done(self) -> int:
        return sum(min(self.chunk_rows, self.n - c * self.chunk_rows) for c in self.done)

    def write(self, chunk: int, start: int, maps: np.ndarray, targets: np.ndarray) -> None:
        """Store the maps ``(rows, *sample_shape)`` and targets ``(rows,)`` of chunk ``chunk`` (rows from ``start``)."""
        maps = np.ascontiguousarray(maps, dtype=np.float32)
        targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        rows = min(self.chunk_rows, self.n - chunk * self.chunk_rows)
        if start != chunk * self.chunk_rows or maps.shape != (rows, *self.sample_shape) or len(targets) != rows:
            raise DataError("a chunk's results do not fit its place in the output", parameter="maps",
                            expected=f"rows {chunk * self.chunk_rows}.. of shape {(rows, *self.sample_shape)}",
                            got=f"rows {start}.. of shape {maps.shape}", fix="report this as a bug")
        self._write(chunk, start, maps, targets)
        self.done.add(int(chunk))
        self._save_ledger()

    def finish(self, record: dict[str, Any]) -> Path:
        """Give the output its final name and write its JSON record (once every chunk is in)."""
        if self.complete:
            return self.final
        missing = sorted(set(range(self.n_chunks)) - self.done)
        if missing:
            raise RunDirError("the run is not complete", parameter="out", expected="every chunk written",
                              got=f"{len(missing)} chunks missing (first: {missing[0]})", fix="run it again to resume")
        self._finalize()
        os.replace(self.partial, self.final)
        _fsync_dir(self.out_dir)
        _io.write_json(self.record_path, {
            "format": _FORMAT, "storage": self.format, "name": self.name, "file": self.final.name,
            "shape": [self.n, *self.sample_shape], "run": self.run,
            **record,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _io.versions(),
        })
        self.ledger.unlink(missing_ok=True)
        self.complete = True
        return self.final

    def close(self) -> None:
        pass

    # -- per format -------------------------------------------------------------------------------
    format = "?"

    def _create(self) -> None:
        raise NotImplementedError

    def _reopen(self) -> None:
        raise NotImplementedError

    def _write(self, chunk: int, start: int, maps: np.ndarray, targets: np.ndarray) -> None:
        raise NotImplementedError

    def _finalize(self) -> None:
        pass


class NpySink(_Sink):
    """Maps into ``NAME.npy`` and targets into ``NAME.targets.npy``, written in place chunk by chunk."""

    suffix = ".npy"
    format = "npy"

    def __init__(self, *args, **kwargs) -> None:
        self._fds: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    @property
    def targets_final(self) -> Path:
        return self.out_dir / f"{self.name}.targets.npy"

    @property
    def _targets_partial(self) -> Path:
        return self.out_dir / f"{self.name}.targets.npy.partial"

    def _remove_all(self) -> None:
        super()._remove_all()
        for p in (self.targets_final, self._targets_partial):
            if p.exists():
                p.unlink()

    def _create(self) -> None:
        for path, shape, dtype in ((self.partial, (self.n, *self.sample_shape), np.float32),
                                   (self._targets_partial, (self.n,), np.int64)):
            header = _npy_header(shape, dtype)
            with open(path, "wb") as fh:
                fh.write(header)
                fh.truncate(len(header) + int(np.prod(shape)) * np.dtype(dtype).itemsize)  # sparse until written
        self._reopen()

    def _reopen(self) -> None:
        if not self._targets_partial.exists():
            raise RunDirError("an unfinished run lost its targets file", parameter="out",
                              expected=str(self._targets_partial), got="missing", fix="pass overwrite=True")
        self._offsets = {}
        for key, path in (("maps", self.partial), ("targets", self._targets_partial)):
            with open(path, "rb") as fh:
                npy_header(fh)
                self._offsets[key] = fh.tell()
            self._fds[key] = os.open(path, os.O_RDWR)
        self._row_bytes = int(np.prod(self.sample_shape)) * 4

    def _write(self, chunk: int, start: int, maps: np.ndarray, targets: np.ndarray) -> None:
        _pwrite_all(self._fds["maps"], maps.tobytes(), self._offsets["maps"] + start * self._row_bytes)
        _pwrite_all(self._fds["targets"], targets.tobytes(), self._offsets["targets"] + start * 8)
        for fd in self._fds.values():
            os.fsync(fd)

    def _finalize(self) -> None:
        self.close()
        os.replace(self._targets_partial, self.targets_final)

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}


class ParquetSink(_Sink):
    """A folder of Parquet parts, one per chunk: columns ``index``, ``target``, ``map`` (flattened)."""

    suffix = ".parquet"
    format = "parquet"

    def _create(self) -> None:
        self.partial.mkdir(parents=True, exist_ok=True)

    def _reopen(self) -> None:
        # parts on disk but not in the ledger (cut off between the part and the ledger) are rewritten
        pass

    def _write(self, chunk: int, start: int, maps: np.ndarray, targets: np.ndarray) -> None:
        import pyarrow.parquet as pq

        table = maps_table(np.arange(start, start + len(maps), dtype=np.int64), targets, maps)
        with _io.atomic_path(self.partial / f"part-{chunk:06d}.parquet") as tmp:
            pq.write_table(table, tmp)


def maps_table(index: np.ndarray, targets: np.ndarray, maps: np.ndarray):
    """The Arrow table of one block of results: ``index`` (row in the data), ``target``, ``map``."""
    import pyarrow as pa

    flat = np.ascontiguousarray(maps, dtype=np.float32).reshape(len(maps), -1)
    values = pa.array(flat.reshape(-1), type=pa.float32())
    return pa.table({"index": pa.array(np.asarray(index, np.int64)),
                     "target": pa.array(np.asarray(targets, np.int64)),
                     "map": pa.FixedSizeListArray.from_arrays(values, flat.shape[1])})


def open_sink(format: str, out_dir, name: str, n: int, sample_shape, run: dict, chunk_rows: int, *,
              resume: bool = True, overwrite: bool = False) -> _Sink:
    """A sink of ``format`` (``npy`` or ``parquet``) for ``n`` results named ``name`` in ``out_dir``.

    Parameters
    ----------
    format : {'npy', 'parquet'}
    out_dir : str or Path
    name : str
        The result's name (a method name: ``NAME.npy`` / ``NAME.parquet``).
    n : int
        Rows of the result.
    sample_shape : tuple of int
    run : dict
        The settings recorded beside the result; a resumed run must have the same.
    chunk_rows : int
    resume : bool, default True
        Keep the chunks an interrupted run with the same settings wrote.
    overwrite : bool, default False
        Discard what the folder holds under ``name``.

    Returns
    -------
    sink
        With ``write(start, maps, targets)``, ``done(start)`` and ``finish()``.

    Raises
    ------
    InputError
        An unknown ``format``.
    StreamConflictError
        The folder holds a result under ``name`` made with other settings (and not ``overwrite``).

    Examples
    --------
    Sinks are written by :func:`stream_explain` and :func:`stream_locate`; read their results
    with :func:`read_maps`.
    """
    if format not in SINK_FORMATS:
        raise InputError("unknown output format", parameter="format", expected=" or ".join(SINK_FORMATS),
                         got=format, fix="pass format='npy' (one array) or 'parquet' (a folder of parts)")
    cls = NpySink if format == "npy" else ParquetSink
    return cls(Path(out_dir), name, n, sample_shape, run, chunk_rows, resume=resume, overwrite=overwrite)


def read_maps(path, *, mmap: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(maps, targets, record)`` of a streamed result (``NAME.npy``, ``NAME.parquet`` or their ``NAME.json``).

    ``.npy`` maps come back memory-mapped (``mmap=True``), so a result larger than memory can be
    read in pieces; Parquet results are read whole, in row order.

    Parameters
    ----------
    path : str or Path
        ``NAME.npy``, ``NAME.parquet`` or ``NAME.json``.
    mmap : bool, default True

    Returns
    -------
    maps : ndarray (N, *sample_shape)
    targets : ndarray (N,) of int
    record : dict
        The run's settings (method, parameters, data fingerprint).

    Raises
    ------
    MissingFileError
        No result at ``path``.
    RunDirError
        The result is unfinished or its files are corrupt.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain, read_maps
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> np.save(os.path.join(d, "y.npy"), np.arange(10) % 2)
    >>> out = stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "out"), progress=False)
    >>> maps, targets, record = read_maps(out["files"]["saliency"])
    >>> maps.shape, targets.shape
    ((10, 1, 16), (10,))
    """
    p = Path(path)
    if p.suffix == ".json":
        rec = _io.read_json(p)
        p = p.with_name(rec["file"])
    rec_path = p.with_name(p.name[: -len(p.suffix)] + ".json")
    if not p.exists():
        partial = p.with_name(p.name + ".partial")
        raise MissingFileError("no finished result at this path", parameter="path", expected="an existing result",
                               got=str(p), fix="the run is unfinished: run it again to resume" if partial.exists()
                               else "check the path")
    rec = _read_record(rec_path) or {}
    if p.suffix == ".npy":
        maps = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        tpath = p.with_name(p.name[: -len(".npy")] + ".targets.npy")
        targets = np.load(tpath, allow_pickle=False) if tpath.exists() else np.full(len(maps), -1, np.int64)
        return maps, targets, rec
    if p.suffix == ".parquet":
        import pyarrow.dataset as pads

        table = pads.dataset(str(p), format="parquet").to_table(columns=["index", "target", "map"])
        index = table.column("index").to_numpy()
        order = np.argsort(index, kind="stable")
        n = len(index)
        if rec.get("shape"):
            shape = tuple(rec["shape"][1:])
        else:
            shape = (-1,)
        flat = table.column("map").combine_chunks().flatten().to_numpy().reshape(n, -1)
        if not np.array_equal(index[order], np.arange(n)):
            raise RunDirError("the Parquet result does not hold each row exactly once", parameter="path",
                              expected=f"indices 0..{n - 1}", got="gaps or repeats", fix="run it again")
        return flat[order].reshape(n, *shape), table.column("target").to_numpy()[order], rec
    raise InputError("not a streamed result", parameter="path", expected="a .npy, .parquet or .json path",
                     got=str(p), fix="pass the NAME.npy or NAME.parquet written by a streamed run")


def _read_record(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return _io.read_json(path)
    except ValueError:
        return None


def _npy_header(shape, dtype) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
