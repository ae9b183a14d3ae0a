"""Streamed runs: explain, evaluate and locate a data file at constant memory.

These are the jobs of :mod:`trustmap.jobs.commands` with ``engine='stream'``: the file is cut into
chunks of ``chunk_rows`` rows, read one chunk at a time, and each chunk's results are written as
soon as they are computed. Started again after an interruption, a run skips the chunks already
written; its outputs get their final names only when complete. A progress bar on stderr shows
samples done and samples per second.

The chunk is the unit of work, not of randomness: methods that draw random numbers seed them per
sample, from ``seed`` and the sample's own values (:func:`trustmap.baselines.sample_seeds`), so a
run gives the same maps whether it ran in one go or was resumed, in memory or streamed, here or on
Ray workers, whatever ``chunk_rows`` is.
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

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        A module of unknown input shape needs ``trustmap.load_model(module, input_shape=...)``.
    data : str or Path
        A data file :func:`open_source` reads.
    methods : str or sequence of str
    out_dir : str or Path
    target, params, chunk_rows, format, resume, overwrite
        As above; ``params``: method -> its parameters.
    layout, label, key, labels
        As :func:`open_source`.

    Returns
    -------
    dict

    Raises
    ------
    InputError
        An unknown method, parameter, ``format`` or ``target``.
    StreamConflictError
        ``out_dir`` holds a result made with other settings.
    TargetError, LabelError
        ``target`` out of range, or ``'label'`` without labels.
    MissingFileError
        The data file (or labels file) does not exist.
    DataError
        The file is unreadable, empty, not numeric, has NaN/Inf, or its labels do not match.
    ShapeError, LayoutError
        The samples do not fit the model (or ``layout``).
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> np.save(os.path.join(d, "y.npy"), np.arange(10) % 2)
    >>> out = stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "out"),
    ...                      chunk_rows=4, progress=False)
    >>> out["computed"], out["n"]
    ({'saliency': 3}, 10)
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
    (``probs.npy`` first: the class probabilities of every row).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
    data : str or Path
        A labeled data file (or ``labels=``).
    out_dir : str or Path
    chunk_rows, resume, overwrite, progress, safe_mode
        As :func:`stream_explain`.
    layout, label, key, labels, classes
        As :func:`open_source`.

    Returns
    -------
    (ModelReport, list of Path)

    Raises
    ------
    LabelError
        The file has no labels, or they are not the model's classes.
    StreamConflictError
        ``out_dir`` holds a result made with other settings.
    MissingFileError
        The data file (or labels file) does not exist.
    DataError
        The file is unreadable, empty, not numeric, has NaN/Inf, or its labels do not match.
    ShapeError, LayoutError
        The samples do not fit the model (or ``layout``).
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_evaluate
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> np.save(os.path.join(d, "y.npy"), np.arange(10) % 2)
    >>> report, files = stream_evaluate(model, os.path.join(d, "x.npy"), os.path.join(d, "ev"),
    ...                                 labels=os.path.join(d, "y.npy"), chunk_rows=4, progress=False)
    >>> report.n, files[0].name
    (10, 'probs.npy')
    """
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
    time (:func:`trustmap.jobs.commands.locate` with ``engine='stream'``).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
    data : str or Path
    out_dir : str or Path
    fit_samples : int, default 20000
        Rows the localizer is fitted on.
    chunk_rows, format, resume, overwrite, progress, safe_mode
        As :func:`stream_explain`.
    layout, label, key, labels, classes
        As :func:`open_source`.
    seed : int, default 0
    localizer : Localizer, optional
        A fitted localizer (no fit then).
    plots : bool, default False
    **localizer_params
        :class:`~trustmap.Localizer` parameters.

    Returns
    -------
    dict
        The fitted localizer's summary (``tau``, R², ...), ``masks`` (the path of the masks'
        result) and the paths of the other files written (``localizer``, ``samples``...).

    Raises
    ------
    InputError
        An unknown localizer parameter or ``format``.
    StreamConflictError
        ``out_dir`` holds a result made with other settings.
    MissingFileError
        The data file (or labels file) does not exist.
    DataError
        The file is unreadable, empty, not numeric, has NaN/Inf, or its labels do not match.
    ShapeError, LayoutError
        The samples do not fit the model (or ``layout``).
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> out = stream_locate(model, "big.npy", "masks/", fit_samples=5000, epochs=20)  # doctest: +SKIP
    >>> maps, targets, record = read_maps(out["masks"])  # doctest: +SKIP
    """
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
    :func:`trustmap.metrics.evaluate_explanations`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
    data : str or Path
    explanations_dir : str or Path
        The ``out_dir`` of :func:`stream_explain` or :func:`stream_locate`.
    out_dir : str or Path, optional
        Where the scores are written.
    metrics : sequence of str, optional
    n : int, default 2000
        Rows scored (at least 10).
    seed : int, default 0
    chunk_rows, safe_mode
        As :func:`stream_explain`.
    layout, label, key, labels
        As :func:`open_source`.
    **evaluate_params
        Keywords of :func:`trustmap.metrics.evaluate_explanations`.

    Returns
    -------
    dict
        ``scores`` (an ``ExplanationScores``), ``methods``, ``n``, ``files`` (written when
        ``out_dir`` is given) and ``rows`` (the scored row indices).

    Raises
    ------
    InputError
        ``n`` < 10, an unknown metric, or no result in ``explanations_dir``.
    RunDirError
        A result file is unfinished or corrupt.
    MissingFileError
        The data file (or labels file) does not exist.
    DataError
        The file is unreadable, empty, not numeric, has NaN/Inf, or its labels do not match.
    ShapeError, LayoutError
        The samples do not fit the model (or ``layout``).
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain, stream_score
    >>> d = tempfile.mkdtemp()
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> np.save(os.path.join(d, "y.npy"), np.arange(10) % 2)
    >>> x = os.path.join(d, "x.npy")
    >>> _ = stream_explain(model, x, "saliency", os.path.join(d, "out"), progress=False)
    >>> res = stream_score(model, x, os.path.join(d, "out"), metrics=["deletion"], n=10,
    ...                    n_boot=200, n_perm=200)
    >>> res["methods"], len(res["rows"])
    (['saliency'], 10)
    """
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
