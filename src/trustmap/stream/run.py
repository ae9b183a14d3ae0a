"""Streamed runs: explain, evaluate and locate a data file at constant memory.

These are the jobs of :mod:`trustmap.jobs.commands` with ``engine='stream'``: the file is cut into
chunks of ``chunk_rows`` rows, read one chunk at a time, and each chunk's results are written as
soon as they are computed. Started again after an interruption, a run skips the chunks already
written; its outputs get their final names only when complete. A progress bar on stderr shows
samples done and samples per second.

The chunk is the unit of work *and* of randomness: methods that draw random numbers seed them per
sample within a chunk, so a run gives the same maps whether it ran in one go or was resumed, in
memory or streamed, here or on Ray workers, with the same ``chunk_rows``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..jobs.engine import DEFAULT_CHUNK_ROWS

__all__ = ["stream_explain", "stream_evaluate", "stream_locate", "stream_score", "DEFAULT_CHUNK_ROWS"]


def stream_explain(model, data, methods: str | Sequence[str], out_dir, *, target=None,
                   params: dict[str, dict[str, Any]] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                   format: str = "npy", layout=None, label=None, key=None, labels=None, classes=None,
                   resume: bool = True, overwrite: bool = False, progress: bool = True,
                   safe_mode: bool = True) -> dict[str, Any]:
    """Explain every sample of a data file with ``methods``, a chunk at a time
    (:func:`trustmap.jobs.commands.explain` with ``engine='stream'``).

    ``format``: ``'npy'`` (``METHOD.npy`` + ``METHOD.targets.npy``) or ``'parquet'`` (a
    ``METHOD.parquet`` folder). ``target``: ``None`` (predicted class), ``'label'``, an int, or one
    int per sample. ``resume`` skips chunks an interrupted run with the same settings wrote;
    ``overwrite`` discards them.

    Returns ``files`` (method -> final path), ``computed``/``skipped`` (chunks per method), ``n``,
    ``seconds`` and ``samples_per_s`` (of the work done in this call).
    """
    from ..jobs.commands import explain

    res = explain(model, data, methods, out_dir, target=target, params=params, engine="stream",
                  chunk_rows=chunk_rows, format=format, layout=layout, label=label, key=key, labels=labels,
                  classes=classes, resume=resume, overwrite=overwrite, progress=progress, safe_mode=safe_mode)
    return {"files": res["outputs"], "computed": res["computed"], "skipped": res["skipped"], "n": res["n"],
            "seconds": res["seconds"], "samples_per_s": res["samples_per_s"]}


def stream_evaluate(model, data, out_dir, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, layout=None, label=None,
                    key=None, labels=None, classes=None, resume: bool = True, overwrite: bool = False,
                    progress: bool = True, safe_mode: bool = True):
    """The model report of a labeled data file, a chunk at a time; returns ``(ModelReport, files)``
    (``probs.npy`` first: the class probabilities of every row)."""
    from ..jobs.commands import evaluate

    res = evaluate(model, data, out_dir, engine="stream", chunk_rows=chunk_rows, layout=layout, label=label,
                   key=key, labels=labels, classes=classes, progress=progress, safe_mode=safe_mode)
    files = [Path(f) for f in res["files"]]
    return res["report"], files


def stream_locate(model, data, out_dir, *, fit_samples: int = 20000, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  format: str = "npy", layout=None, label=None, key=None, labels=None, classes=None,
                  resume: bool = True, overwrite: bool = False, progress: bool = True, safe_mode: bool = True,
                  seed: int = 0, localizer=None, plots: bool = False, **localizer_params) -> dict[str, Any]:
    """Fit the TRUST localizer on a seeded random subset of ``fit_samples`` rows of a data file (labels, or
    the model's predictions when there are none), then write its masks for every sample, a chunk at a
    time (:func:`trustmap.jobs.commands.locate` with ``engine='stream'``)."""
    from ..jobs.commands import locate

    res = locate(model, data, out_dir, engine="stream", chunk_rows=chunk_rows, format=format,
                 fit_samples=fit_samples, layout=layout, label=label, key=key, labels=labels, classes=classes,
                 seed=seed, progress=progress, resume=resume, overwrite=overwrite, safe_mode=safe_mode,
                 localizer=localizer, plots=plots, **localizer_params)
    return {k: v for k, v in res.items() if k not in ("files", "record")}


def stream_score(model, data, explanations_dir, out_dir=None, metrics=None, *, n: int = 2000, seed: int = 0,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, layout=None, label=None, key=None, labels=None,
                 safe_mode: bool = True, **evaluate_params) -> dict[str, Any]:
    """Score streamed explanations on a seeded random sample of ``n`` rows of the data file (the maps'
    files are memory-mapped, the rows read chunk by chunk). ``evaluate_params`` go to
    :func:`trustmap.metrics.evaluate_explanations`."""
    from ..errors import InputError
    from ..jobs.commands import score, select_explanations
    from ..jobs.data import open_data

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 10:
        raise InputError("n must be a whole number of at least 10", parameter="n", expected="an int >= 10", got=n,
                         fix="pass e.g. n=2000")
    from ..models import load_model

    m = load_model(model, safe_mode=safe_mode)
    src = open_data(data, layout=layout, label=label, key=key, labels=labels, stream=True)
    try:
        attrs, idx, X, y = select_explanations(Path(explanations_dir), src, chunk_rows, n, seed)
        res = score(m, X, y, attrs, out_dir, metrics, layout=src.layout, seed=seed, **evaluate_params)
    finally:
        src.close()
    return {**res, "rows": idx}
