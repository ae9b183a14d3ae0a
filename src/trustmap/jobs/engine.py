"""The one chunk loop behind every engine.

A job's results are written per chunk of rows into a *sink*: :class:`MemorySink` keeps them (an
in-memory run), the streamed sinks (:func:`trustmap.stream.open_sink`: ``.npy`` written in place or a
Parquet folder) write them to disk as they come and remember which chunks are done, so an
interrupted run resumes. :func:`fill` is the loop; the Ray engine plugs in through its ``schedule``
hook (the chunks' rows are read and computed on workers, and the results come back here in order).

Methods that draw random numbers seed them per sample, from ``seed`` and the sample's own values
(:func:`trustmap.baselines.sample_seeds`), so the maps do not depend on how the rows are cut: the same
in memory, streamed and on Ray, whatever the chunks and the workers' blocks.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .. import _io
from ..errors import InputError
from .targets import targets_for

__all__ = ["MemorySink", "FileSink", "fill", "gather", "progress_bar", "check_chunk_rows", "DEFAULT_CHUNK_ROWS",
           "concat_attributions"]

#: rows per chunk: large enough that per-chunk overhead (ledger, fsync) is small, small enough that a
#: chunk of 12-lead ECGs (5000 x 12 floats each) stays near 1 GiB at the largest.
DEFAULT_CHUNK_ROWS = 4096


def check_chunk_rows(chunk_rows) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or int(chunk_rows) < 1:
        raise InputError("chunk_rows must be a positive whole number", parameter="chunk_rows",
                         expected="an int >= 1", got=chunk_rows, fix=f"pass e.g. chunk_rows={DEFAULT_CHUNK_ROWS}")
    return int(chunk_rows)


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0, unit: str = "sample"):
    """A tqdm bar on stderr (None when disabled).

    Parameters
    ----------
    total : int
    desc : str
    enabled : bool
    initial : int, default 0
    unit : str, default 'sample'

    Returns
    -------
    tqdm.tqdm or None

    Examples
    --------
    >>> from trustmap.jobs import progress_bar
    >>> progress_bar(10, "explain", enabled=False) is None
    True
    """
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, smoothing=0.1,
                dynamic_ncols=True, leave=False)


def concat_attributions(parts: list) -> Any:
    """One Attribution from the Attributions of consecutive chunks (per-sample extras concatenated)."""
    from ..attribution import Attribution

    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    extras = {}
    for k, v in first.extras.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == len(first) and \
                all(isinstance(p.extras.get(k), np.ndarray) for p in parts):
            extras[k] = np.concatenate([p.extras[k] for p in parts])
        else:
            extras[k] = v
    prov = dict(first.provenance)
    prov["n"] = int(sum(len(p) for p in parts))
    return Attribution(np.concatenate([p.maps for p in parts]), np.concatenate([p.targets for p in parts]),
                       first.method, dict(first.params), first.layout, extras, prov)


class MemorySink:
    """Keeps each chunk's Attribution; :meth:`result` joins them.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.jobs import MemorySink, fill, open_data
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> src = open_data(np.random.default_rng(0).normal(size=(5, 1, 16)).astype(np.float32))
    >>> sink = MemorySink()
    >>> stats = fill(src, {"saliency": lambda x, t: trustmap.explain(net, x, method="saliency", target=t)},
    ...              {"saliency": sink}, chunk_rows=2)
    >>> stats["computed"], sink.result().maps.shape
    ({'saliency': 3}, (5, 1, 16))
    """

    def __init__(self) -> None:
        self.done: set[int] = set()
        self.parts: dict[int, Any] = {}
        self.rows_done = 0

    def put(self, chunk: int, start: int, attr) -> None:
        self.parts[chunk] = attr
        self.rows_done += len(attr)

    def close(self) -> None:
        pass

    def result(self, X: np.ndarray | None = None):
        att = concat_attributions([self.parts[c] for c in sorted(self.parts)])
        if X is not None:
            att.provenance["data_sha256"] = _io.fingerprint_array(np.ascontiguousarray(X))
        return att


class FileSink:
    """A streamed sink (``.npy`` / Parquet, resumable) behind the same ``put`` as :class:`MemorySink`."""

    def __init__(self, sink) -> None:
        self.sink = sink

    @property
    def done(self) -> set[int]:
        return self.sink.done

    @property
    def rows_done(self) -> int:
        return self.sink.rows_done

    def put(self, chunk: int, start: int, attr) -> None:
        self.sink.write(chunk, start, attr.maps, attr.targets)

    def close(self) -> None:
        self.sink.close()

    def finish(self, record: dict):
        return self.sink.finish(record)


def fill(src, producers: dict[str, Callable], sinks: dict[str, Any], chunk_rows: int, *, target=None,
         progress: bool = False, desc: str = "", schedule: Callable | None = None) -> dict[str, Any]:
    """Compute ``producers[name](x, target_rows)`` (an Attribution) for every chunk ``sinks[name]`` lacks.

    ``schedule`` (the scheduling hook of other engines, e.g. Ray): a callable given the work, a list
    of ``(chunk, start, stop, names)`` in chunk order, that yields ``(chunk, {name: result})`` in the
    same order (a result has ``.maps`` and ``.targets``); the chunks' rows are then read and computed
    wherever it schedules them, not here, and ``producers`` only name the results. Without it (every
    in-process run) each chunk is read and computed here, in order.

    Returns ``computed`` (chunks per name), ``skipped`` (chunks already done), ``rows`` (rows read)
    and ``seconds``.

    Parameters
    ----------
    src : Source
    producers : dict of str to callable
        ``name -> f(x, target_rows)`` returning an Attribution of the chunk ``x``.
    sinks : dict of str to sink
        ``name -> sink`` (a :class:`MemorySink` or a file sink of :func:`trustmap.stream.open_sink`).
    chunk_rows : int
    target : None, int, 'label' or int array, optional
        As :func:`targets_for`.
    progress : bool, default False
    desc : str
        The progress bar's label.
    schedule : callable, optional

    Returns
    -------
    dict

    Raises
    ------
    InputError
        ``chunk_rows`` is not a positive int.
    TargetError
        ``target`` does not fit the rows.

    Examples
    --------
    See :class:`MemorySink`.
    """
    chunk_rows = check_chunk_rows(chunk_rows)
    names = list(producers)
    if schedule is None:
        def schedule(work):  # in process: read and compute each chunk here, in order
            for c, a, b, todo in work:
                x, y = src.read(a, b)
                tgt = targets_for(target, y, a, b, src.n) if not isinstance(target, np.ndarray) else target[a:b]
                yield c, {k: producers[k](x, tgt) for k in todo}
    work = [(c, a, b, [k for k in names if c not in sinks[k].done])
            for c, (a, b) in enumerate(src.chunks(chunk_rows))]
    work = [w for w in work if w[3]]
    bounds = {c: (a, b) for c, a, b, _ in work}
    computed = {k: 0 for k in names}
    skipped = {k: len(sinks[k].done) for k in names}
    bar = progress_bar(src.n, desc, progress, src.n - sum(b - a for _, a, b, _ in work))
    t0, rows = time.perf_counter(), 0
    try:
        for c, results in schedule(work):
            a, b = bounds[c]
            for k, res in results.items():
                sinks[k].put(c, a, res)
                computed[k] += 1
            rows += b - a
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
        for s in sinks.values():
            s.close()
    return {"computed": computed, "skipped": skipped, "rows": rows, "seconds": time.perf_counter() - t0}


def gather(src, idx: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows ``idx`` (sorted) of ``src``, read chunk by chunk.

    Parameters
    ----------
    src : Source
    idx : ndarray of int
        Sorted row indices.
    chunk_rows : int, default 4096

    Returns
    -------
    X : ndarray
    y : ndarray or None
        The labels of the rows, when the source has labels.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.jobs import gather, open_data
    >>> src = open_data((np.zeros((6, 1, 8), np.float32), np.arange(6) % 2))
    >>> X, y = gather(src, np.array([1, 4]), chunk_rows=2)
    >>> X.shape, y.tolist()
    ((2, 1, 8), [1, 0])
    """
    idx = np.asarray(idx, dtype=np.int64)
    if hasattr(src, "X"):  # in memory
        return np.ascontiguousarray(src.X[idx]), (None if src.y is None else np.asarray(src.y)[idx])
    xs, ys = [], []
    for a, b in src.chunks(chunk_rows):
        sel = idx[(idx >= a) & (idx < b)]
        if len(sel):
            x, y = src.read(int(sel[0]), int(sel[-1]) + 1)
            xs.append(x[sel - sel[0]])
            ys.append(None if y is None else y[sel - sel[0]])
    return np.concatenate(xs), (None if ys[0] is None else np.concatenate(ys))


def predictions(m, src, chunk_rows: int = DEFAULT_CHUNK_ROWS, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The model's class probabilities and predictions on every row of ``src`` (chunk by chunk)."""
    probs = np.zeros((src.n, int(m.n_classes)), np.float32)
    bar = progress_bar(src.n, "predict", progress)
    try:
        for a, b in src.chunks(chunk_rows):
            x, _ = src.read(a, b)
            probs[a:b] = m.probs(x, layout=src.layout)
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    return probs, probs.argmax(axis=1)
