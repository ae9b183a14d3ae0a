"""Streamed runs: explain, evaluate and locate a dataset on disk at constant memory.

Each run cuts the file into chunks of ``chunk_rows`` rows, reads one chunk at a time
(:func:`~trustmap.stream.open_source`), and writes each chunk's results as soon as they are
computed (:func:`~trustmap.stream.open_sink`). Started again after an interruption, a run skips
the chunks already written; its outputs get their final names only when complete. A progress bar
on stderr shows samples done and samples per second.

The chunk is the unit of work *and* of randomness: methods that draw random numbers seed them per
sample within a chunk, so a run gives the same maps whether it ran in one go or was resumed, and
whether it ran here or on Ray workers with the same ``chunk_rows``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..errors import InputError, TargetError
from .sinks import open_sink
from .sources import Source, open_source

__all__ = ["stream_explain", "stream_evaluate", "stream_locate", "stream_score", "DEFAULT_CHUNK_ROWS"]

#: rows per chunk: large enough that per-chunk overhead (ledger, fsync) is small, small enough that a
#: chunk of 12-lead ECGs (5000 x 12 floats each) stays near 1 GiB at the largest.
DEFAULT_CHUNK_ROWS = 4096


def _check_chunk_rows(chunk_rows) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or int(chunk_rows) < 1:
        raise InputError("chunk_rows must be a positive whole number", parameter="chunk_rows",
                         expected="an int >= 1", got=chunk_rows, fix=f"pass e.g. chunk_rows={DEFAULT_CHUNK_ROWS}")
    return int(chunk_rows)


def _targets_for(target, y: np.ndarray | None, a: int, b: int, n: int):
    """The chunk's slice of ``target``: None (prediction), an int, 'label', or one int per sample."""
    if target is None or (isinstance(target, str) and target == "pred"):
        return None
    if isinstance(target, str):
        if target != "label":
            raise TargetError("unknown target", parameter="target", expected="None/'pred', 'label', an int, or "
                              "one int per sample", got=target, fix="pass target='label' or a class index")
        if y is None:
            raise TargetError("target='label' needs labeled data", parameter="target", expected="a file with labels",
                              got="no labels", fix="pass labels= (or a label column), or target=None")
        return y
    if np.ndim(target) == 0:
        return int(target)
    arr = np.asarray(target)
    if len(arr) != n:
        raise TargetError("one target per sample is needed", parameter="target", expected=f"{n} targets",
                          got=f"{len(arr)}", fix="pass one class index per row of the file, or an int")
    return arr[a:b]


def _target_key(target) -> Any:
    if target is None or isinstance(target, (str, int, np.integer)):
        return target if not isinstance(target, np.integer) else int(target)
    return "array:" + _io.fingerprint_array(np.ascontiguousarray(np.asarray(target, dtype=np.int64)))


def _progress(total: int, initial: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="sample", unit_scale=True, smoothing=0.1,
                dynamic_ncols=True)


def _fill(src: Source, sink, chunk_rows: int, compute, desc: str, progress: bool) -> None:
    """Write ``compute(X) -> (maps, targets)`` of every chunk the sink does not hold yet, with a progress bar."""
    bar = _progress(src.n, sink.rows_done, desc, progress)
    try:
        for c, (a, b) in enumerate(src.chunks(chunk_rows)):
            if c in sink.done:
                continue
            x, _ = src.read(a, b)
            maps, targets = compute(x)
            sink.write(c, a, maps, targets)
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
        sink.close()


def _model_desc(model, m) -> dict[str, Any]:
    return {"name": m.name, "framework": m.framework, "fingerprint": m.fingerprint(),
            "source": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__}


def stream_explain(model, data, methods: str | Sequence[str], out_dir, *, target=None,
                   params: dict[str, dict[str, Any]] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                   format: str = "npy", layout=None, label=None, key=None, labels=None, resume: bool = True,
                   overwrite: bool = False, progress: bool = True, safe_mode: bool = True) -> dict[str, Any]:
    """Explain every sample of a data file with ``methods``, a chunk at a time.

    Parameters
    ----------
    model
        A model object or file (anything :func:`trustmap.load_model` takes).
    data
        A data file :func:`trustmap.stream.open_source` streams (``.npy``, ``.parquet``, ``.h5``,
        ``.csv``) or an open :class:`~trustmap.stream.Source`.
    methods
        Method names, a list or one comma-separated string.
    target
        ``None`` (each sample's predicted class), ``'label'``, an int, or one int per sample.
    params
        Parameters per method, e.g. ``{"gradcam": {"layer": "conv2"}}``.
    chunk_rows
        Rows read, explained and written together.
    format
        ``'npy'`` (``METHOD.npy`` + ``METHOD.targets.npy``) or ``'parquet'`` (a ``METHOD.parquet`` folder).
    resume
        Skip the chunks an interrupted run with the same settings already wrote (default).
    overwrite
        Discard whatever the output folder holds for these methods.
    progress
        A progress bar with throughput on stderr.

    Returns
    -------
    dict
        ``files`` (method -> final path), ``computed``/``skipped`` (chunks per method), ``n``,
        ``seconds`` and ``samples_per_s`` (of the work done in this call).
    """
    from ..explain.runner import make_explainers
    from ..models import load_model

    explainers = make_explainers(methods, params)
    names = list(explainers)
    chunk_rows = _check_chunk_rows(chunk_rows)
    m = load_model(model, safe_mode=safe_mode)
    src = open_source(data, layout=layout, label=label, key=key, labels=labels)
    out = Path(out_dir)
    try:
        _targets_for(target, src.y, 0, 0, src.n)  # validate before any work
        base_run = {"model": m.fingerprint(), "data": src.fingerprint(), "layout": src.layout,
                    "target": _target_key(target)}
        sinks = {name: open_sink(format, out, name, src.n, src.sample_shape,
                                 {**base_run, "method": name, "params": ex.params}, chunk_rows,
                                 resume=resume, overwrite=overwrite)
                 for name, ex in explainers.items()}
        chunks = src.chunks(chunk_rows)
        done_all = set.intersection(*(s.done for s in sinks.values()))
        initial = sum(b - a for c, (a, b) in enumerate(chunks) if c in done_all)
        computed = {name: 0 for name in names}
        skipped = {name: len(s.done) for name, s in sinks.items()}
        bar = _progress(src.n, initial, "explain", progress)
        t0 = time.perf_counter()
        rows = 0
        try:
            for c, (a, b) in enumerate(chunks):
                todo = [name for name in names if c not in sinks[name].done]
                if not todo:
                    continue
                x, y = src.read(a, b)
                tgt = _targets_for(target, y, a, b, src.n)
                for name in todo:
                    attr = explainers[name].explain(m, x, target=tgt, layout=src.layout)
                    sinks[name].write(c, a, attr.maps, attr.targets)
                    computed[name] += 1
                rows += b - a
                if bar is not None:
                    bar.update(b - a)
        finally:
            if bar is not None:
                bar.close()
            for s in sinks.values():
                s.close()
        seconds = time.perf_counter() - t0
        files = {}
        for name, ex in explainers.items():
            files[name] = sinks[name].finish({
                "kind": "attribution", "method": name, "params": ex.params, "layout": src.layout,
                "model": _model_desc(model, m), "data": src.describe(), "target": _target_key(target),
                "chunk_rows": chunk_rows})
        _io.write_json(out / "run.json", {
            "model": _model_desc(model, m), "data": src.describe(), "n": src.n, "methods": names,
            "params": {k: v.params for k, v in explainers.items()}, "target": _target_key(target),
            "stream": {"chunk_rows": chunk_rows, "format": format, "computed": computed, "skipped": skipped},
            "files": {k: Path(v).name for k, v in files.items()}, "versions": _io.versions()})
    finally:
        src.close()
    return {"files": files, "computed": computed, "skipped": skipped, "n": src.n, "seconds": seconds,
            "samples_per_s": rows / seconds if seconds > 0 and rows else None}


def stream_evaluate(model, data, out_dir, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, layout=None, label=None,
                    key=None, labels=None, resume: bool = True, overwrite: bool = False, progress: bool = True,
                    safe_mode: bool = True):
    """The model report (accuracy, class-wise accuracy, ROC-AUC, confusion matrix, precision/recall/F1)
    of a labeled data file, a chunk at a time.

    The class probabilities are written to ``probs.npy`` chunk by chunk (resumable like
    :func:`stream_explain`); the report is computed from that file and the labels, and saved as
    ``report.json``. Memory: the labels and the probabilities (``N x K`` floats) for the final
    ROC-AUC step; the inputs are never held whole.

    Returns ``(ModelReport, files)``.
    """
    from ..metrics.model_report import report_from_scores
    from ..models import load_model

    chunk_rows = _check_chunk_rows(chunk_rows)
    m = load_model(model, safe_mode=safe_mode)
    src = open_source(data, layout=layout, label=label, key=key, labels=labels)
    out = Path(out_dir)
    try:
        if src.y is None:
            raise InputError("evaluating a model needs labels", parameter="labels",
                             expected="a label column / dataset, or labels=", got="no labels",
                             fix="pass labels='y.npy' (or name the label column with label=)")
        k = m.n_classes
        sink = open_sink("npy", out, "probs", src.n, (k,), {"model": m.fingerprint(), "data": src.fingerprint(),
                                                            "layout": src.layout, "kind": "probs"},
                         chunk_rows, resume=resume, overwrite=overwrite)
        def probs(x):
            p = m.probs(x, layout=src.layout)
            return p, p.argmax(axis=1)

        _fill(src, sink, chunk_rows, probs, "evaluate", progress)
        probs_path = sink.finish({"kind": "probs", "model": _model_desc(model, m), "data": src.describe()})
        probs = np.load(probs_path, mmap_mode="r")
        names = src.classes if len(src.classes) == k else None
        report = report_from_scores(src.y, np.asarray(probs), class_names=names)
        files = [probs_path, report.save(out / "report.json")]
    finally:
        src.close()
    return report, files


def stream_locate(model, data, out_dir, *, fit_samples: int = 20000, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  format: str = "npy", layout=None, label=None, key=None, labels=None, resume: bool = True,
                  overwrite: bool = False, progress: bool = True, safe_mode: bool = True, seed: int = 0,
                  localizer=None, **localizer_params) -> dict[str, Any]:
    """Fit the TRUST localizer on a random subset of a labeled data file, then write its masks for
    every sample, a chunk at a time.

    The localizer learns one mask generator; ``fit_samples`` rows (a seeded random subset, read
    chunk by chunk) are enough to learn it, and ``locate`` is one forward pass per sample, so the
    masks of millions of samples stream at constant memory. ``localizer`` may be a fitted
    :class:`~trustmap.Localizer` (or the path of a saved one) to skip fitting.

    Writes ``localizer.json`` / ``localizer.safetensors`` (when fitted here), ``masks.npy`` (or
    ``masks.parquet``) with its record, and ``locate.json`` (τ, R² with its interval, the subset).
    """
    from ..localizer import Localizer
    from ..models import load_model

    chunk_rows = _check_chunk_rows(chunk_rows)
    if isinstance(fit_samples, bool) or not isinstance(fit_samples, (int, np.integer)) or fit_samples < 50:
        raise InputError("fit_samples must be a whole number of at least 50", parameter="fit_samples",
                         expected="an int >= 50", got=fit_samples, fix="pass e.g. fit_samples=20000")
    m = load_model(model, safe_mode=safe_mode)
    src = open_source(data, layout=layout, label=label, key=key, labels=labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        info: dict[str, Any] = {}
        if localizer is None:
            if src.y is None:
                raise InputError("fitting the localizer needs labels", parameter="labels",
                                 expected="a label column / dataset, or labels=", got="no labels",
                                 fix="pass labels='y.npy', or a fitted localizer=")
            loc_path = out / "localizer.json"
            fit_record = {"data": src.fingerprint(), "model": m.fingerprint(), "fit_samples": int(fit_samples),
                          "seed": int(seed), "params": _io.to_jsonable(localizer_params)}
            fitted = None
            if resume and not overwrite and loc_path.exists() and (out / "fit.json").exists() \
                    and _io.read_json(out / "fit.json") == _io.to_jsonable(fit_record):
                fitted = Localizer.load(loc_path, model=m)  # fitted by an interrupted run with these settings
            if fitted is None:
                rng = np.random.default_rng(seed)
                idx = np.sort(rng.choice(src.n, size=min(int(fit_samples), src.n), replace=False))
                X, y = _gather(src, idx, chunk_rows)
                fitted = Localizer(seed=seed, layout=src.layout, progress=progress, **localizer_params)
                fitted.fit(m, X, y)
                del X, y
                fitted.save(loc_path)
                _io.write_json(out / "fit.json", fit_record)
            info["fit_samples"] = int(min(int(fit_samples), src.n))
            loc = fitted
        elif isinstance(localizer, (str, os.PathLike)):
            loc = Localizer.load(localizer, model=m)
        else:
            loc = localizer
        tau = float(loc.tau_)
        sink = open_sink(format, out, "masks", src.n, src.sample_shape,
                         {"model": m.fingerprint(), "data": src.fingerprint(), "layout": src.layout,
                          "localizer": _localizer_key(loc), "tau": tau}, chunk_rows, resume=resume, overwrite=overwrite)
        def masks(x):
            attr = loc.locate(x, layout=src.layout)
            return attr.maps, attr.targets

        _fill(src, sink, chunk_rows, masks, "locate", progress)
        masks = sink.finish({"kind": "masks", "method": "trust", "tau": tau, "layout": src.layout,
                             "data": src.describe()})
        r2 = getattr(loc, "r2_", None)
        summary = {"tau": tau, "target_r2": float(getattr(loc, "target_r2_", float("nan"))),
                   "target_reached": bool(getattr(loc, "target_reached_", False)),
                   "r2": None if r2 is None else {"estimate": float(r2.estimate), "low": float(r2.low),
                                                  "high": float(r2.high)},
                   "n": src.n, "masks": str(masks), **info}
        _io.write_json(out / "locate.json", summary)
    finally:
        src.close()
    return summary


def stream_score(model, data, explanations_dir, out_dir=None, metrics=None, *, n: int = 2000, seed: int = 0,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, layout=None, label=None, key=None, labels=None,
                 safe_mode: bool = True, **evaluate_params) -> dict[str, Any]:
    """Score streamed explanations (``trustmap explain --stream`` / :func:`stream_explain`, or the masks
    of :func:`stream_locate`) on a seeded random sample of ``n`` rows of the data file.

    Scores are means over samples with bootstrap intervals, so a few thousand rows give intervals as
    narrow as the comparison needs; the rows are read from the data file and the maps' files
    (``.npy`` memory-mapped) without loading either whole. ``evaluate_params`` go to
    :func:`trustmap.metrics.evaluate_explanations` (``frac``, ``baseline``, ``n_boot``, ...).
    Writes ``scores.json`` / ``scores.md`` (and ``curves.png``) to ``out_dir`` when given.
    """
    from ..attribution import Attribution
    from ..errors import DataError, MissingFileError
    from ..metrics.evaluate import evaluate_explanations
    from ..metrics.runner import _curves_png
    from ..models import load_model
    from .sinks import _FORMAT, read_maps

    d = Path(explanations_dir)
    records = {}
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec = _io.read_json(p)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("format") == _FORMAT and rec.get("kind") in ("attribution", "masks"):
            records[p] = rec
    if not records:
        raise MissingFileError("no streamed explanations in the folder", parameter="explanations_dir",
                               expected="METHOD.json records written by a streamed explain/locate", got=str(d),
                               fix="run trustmap explain --stream --out DIR first")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 10:
        raise InputError("n must be a whole number of at least 10", parameter="n", expected="an int >= 10", got=n,
                         fix="pass e.g. n=2000")
    m = load_model(model, safe_mode=safe_mode)
    src = open_source(data, layout=layout, label=label, key=key, labels=labels)
    try:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(src.n, size=min(int(n), src.n), replace=False))
        attrs = {}
        for p, rec in records.items():
            if rec.get("run", {}).get("data") != src.fingerprint():
                raise DataError(f"{p.stem} was made for another data file (or the file changed since)",
                                parameter="data", expected="the file that was explained", got=str(src.path),
                                fix="pass the data file given to trustmap explain --stream")
            maps, targets, _ = read_maps(p)
            name = "trust" if rec.get("kind") == "masks" else rec.get("method", p.stem)
            attrs[name] = Attribution(np.asarray(maps[idx]), np.asarray(targets[idx]), rec.get("method", name),
                                      rec.get("params", {}), rec.get("layout", src.layout),
                                      {"tau": rec["tau"]} if "tau" in rec else {}, {"stream": str(p)})
        X, y = _gather(src, idx, chunk_rows)
        scores = evaluate_explanations(m, X, y, attrs, metrics, layout=src.layout, seed=seed, **evaluate_params)
        files: list[Path] = []
        if out_dir is not None:
            out = Path(out_dir)
            files += scores.save(out / "scores.json")
            if any(k in scores.metrics for k in ("deletion", "insertion")):
                path = _curves_png(scores, out / "curves.png")
                if path is not None:
                    files.append(path)
    finally:
        src.close()
    return {"scores": scores, "methods": scores.methods, "n": int(len(idx)), "rows": idx, "files": files,
            "markdown": scores.to_markdown()}


def _gather(src: Source, idx: np.ndarray, chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``idx`` (sorted) of ``src``, read chunk by chunk."""
    xs, ys = [], []
    for a, b in src.chunks(chunk_rows):
        sel = idx[(idx >= a) & (idx < b)]
        if len(sel):
            x, y = src.read(int(sel[0]), int(sel[-1]) + 1)
            xs.append(x[sel - sel[0]])
            ys.append(None if y is None else y[sel - sel[0]])
    return np.concatenate(xs), (None if ys[0] is None else np.concatenate(ys))


def _localizer_key(loc) -> str:
    """A fingerprint of a fitted localizer's weights (so masks from another localizer are never mixed in)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(loc.net_.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
