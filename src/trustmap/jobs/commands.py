"""The jobs behind ``trustmap explain``, ``locate`` and ``evaluate``: one code path per job, whichever
engine schedules its chunks (``engine='memory'``: the data in memory, results kept and saved as
``.npz`` Attributions; ``'stream'``: the file read a block at a time, results written per chunk and
resumable). ``trustmap explain --engine ray`` hands the same chunks to Ray workers
(:func:`trustmap.stream.ray_explain`). Every job writes a ``trustmap.run/2`` record (``run.json``)
and ``samples.npz`` (the samples the report shows), so ``trustmap report`` reads any of these folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..errors import InputError
from .data import ArraySource, check_classes, class_names, open_data, see_first_row
from .engine import (DEFAULT_CHUNK_ROWS, FileSink, MemorySink, check_chunk_rows, fill, gather, predictions,
                     progress_bar)
from .params import make_explainers
from .record import model_desc, new_record, write_record, write_samples
from .targets import check_target_range, parse_target, target_key

__all__ = ["explain", "locate", "evaluate", "score", "select_explanations", "counterfactual", "REPORT_SAMPLES"]

#: rows of a streamed run kept in ``samples.npz`` for the report (a seeded random subset)
REPORT_SAMPLES = 256
ENGINES = ("memory", "stream")
#: :func:`explain` also takes these: Ray (:func:`trustmap.stream.ray_explain`), or the choice by cost
EXPLAIN_ENGINES = (*ENGINES, "ray", "auto")


def _engine(engine: str, allowed: tuple = ENGINES) -> str:
    if engine not in allowed:
        raise InputError("unknown engine", parameter="engine", expected=" or ".join(repr(e) for e in allowed),
                         got=engine, fix="pass engine='memory' or engine='stream'")
    return engine


def _explain_on_ray(model, data, names, out, *, target, params, chunk_rows, layout, labels, label, key, overwrite,
                    progress, safe_mode, engine_choice, resume) -> dict[str, Any]:
    """:func:`explain` on Ray (a data file only), returned in :func:`explain`'s shape."""
    from ..stream.ray_engine import ray_explain

    res = ray_explain(model, data, names, out, target=target, params=params, chunk_rows=chunk_rows, layout=layout,
                      labels=labels, label=label, key=key, overwrite=overwrite, resume=resume, progress=progress,
                      safe_mode=safe_mode, engine_choice=engine_choice)
    rec = res["record"]
    return {"methods": list(names), "files": [*res["files"].values(), Path(out) / "run.json"],
            "outputs": res["files"], "n": res["n"], "computed": res["computed"], "skipped": res["skipped"],
            "seconds": res["seconds"], "samples_per_s": res["samples_per_s"],
            "labels": rec.get("labels", {}).get("source", "none"), "record": rec}


def _report_rows(src, seed: int) -> np.ndarray:
    if isinstance(src, ArraySource) or src.n <= REPORT_SAMPLES:
        return np.arange(src.n)
    return np.sort(np.random.default_rng(seed).choice(src.n, size=REPORT_SAMPLES, replace=False))


def _samples(out: Path, m, src, seed: int, chunk_rows: int) -> tuple[dict, np.ndarray]:
    rows = _report_rows(src, seed)
    X, y = gather(src, rows, chunk_rows)
    info = write_samples(out / "samples.npz", m, X, src.layout, y=y, index=rows)
    return info, rows


def _load(model, safe_mode: bool):
    from ..models import Model, load_model

    return model if isinstance(model, Model) else load_model(model, safe_mode=safe_mode)


def _save_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with _io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def explain(model, data=None, methods: str | Sequence[str] = "gradcam", out_dir="runs/explain", *,
            dataset: str | None = None, split: str = "test", target=None, params: dict | None = None,
            engine: str = "memory", chunk_rows: int = DEFAULT_CHUNK_ROWS, format: str = "npy", layout=None,
            labels=None, label=None, key=None, classes=None, n: int | None = None, plots: int = 4, seed: int = 0,
            resume: bool = True, overwrite: bool = False, progress: bool = False,
            safe_mode: bool = True, engine_choice: dict | None = None) -> dict[str, Any]:
    """Explain every sample of ``data`` with each of ``methods`` and write the results to ``out_dir``.

    In memory: ``METHOD.npz`` (+ ``.json``) Attributions and ``METHOD_<i>.png`` overlays of the first
    ``plots`` samples. Streamed: ``METHOD.npy`` + ``METHOD.targets.npy`` (or ``METHOD.parquet``)
    written chunk by chunk, resumable. Both: ``samples.npz`` and ``run.json``.

    ``engine``: ``'memory'``, ``'stream'``, ``'ray'`` (a data file on a pool of Ray workers:
    :func:`trustmap.stream.ray_explain`, ``METHOD.parquet`` outputs) or ``'auto'``: Ray where it
    pays, by the rule of :func:`trustmap.stream.choose_engine` (one line on stderr says the rule and
    the choice; ``run.json`` records it as ``engine_choice``), else ``'stream'`` for a data file and
    ``'memory'`` for anything else. ``engine_choice``: a choice made by the caller, to record.

    Returns ``methods``, ``files`` (every path written), ``outputs`` (method -> result path), ``n``,
    ``computed``/``skipped`` (chunks per method), ``seconds``, ``samples_per_s``, ``record``.
    """
    engine = _engine(engine, EXPLAIN_ENGINES)
    chunk_rows = check_chunk_rows(chunk_rows)
    explainers = make_explainers(methods, params)  # every name and option checked before any work
    names = list(explainers)
    target = parse_target(target)
    if engine == "auto":
        import sys

        from ..stream.ray_engine import choose_engine

        from ..stream.sources import STREAM_FORMATS

        one_file = dataset is None and n is None and isinstance(data, (str, os.PathLike)) \
            and Path(data).suffix.lower() in STREAM_FORMATS
        engine_choice = choose_engine(model, data if one_file else None, names, target=target, params=params,
                                      layout=layout, label=label, key=key, labels=labels, safe_mode=safe_mode)
        sys.stderr.write(f"trustmap explain: {engine_choice['line']}\n")
        engine = "ray" if engine_choice["engine"] == "ray" else ("stream" if one_file else "memory")
    if engine == "ray":
        if dataset is not None or n is not None or not isinstance(data, (str, os.PathLike)):
            raise InputError("engine='ray' explains a whole data file", parameter="engine",
                             expected="data= a file path (.npy, .parquet, .h5, .csv), without dataset= or n=",
                             got=f"data={type(data).__name__}, dataset={dataset!r}, n={n!r}",
                             fix="pass the data file's path, or engine='memory'")
        return _explain_on_ray(model, data, names, out_dir, target=target, params=params, chunk_rows=chunk_rows,
                               layout=layout, labels=labels, label=label, key=key, overwrite=overwrite,
                               progress=progress, safe_mode=safe_mode, engine_choice=engine_choice, resume=resume)
    m = _load(model, safe_mode)
    src = open_data(data, dataset=dataset, split=split, seed=seed, layout=layout, labels=labels, label=label,
                    key=key, classes=classes, stream=engine == "stream", n=n)
    out = Path(out_dir)
    try:
        see_first_row(m, src)
        check_classes(None if not classes else list(src.classes), m)
        check_target_range(target, src.y, src.n, m.n_classes)
        producers = {k: (lambda x, t, ex=ex: ex.explain(m, x, target=t, layout=src.layout))
                     for k, ex in explainers.items()}
        if engine == "memory":
            sinks = {k: MemorySink() for k in names}
        else:
            from ..stream.sinks import open_sink

            base = {"model": m.fingerprint(), "data": src.fingerprint(), "layout": src.layout,
                    "target": target_key(target)}
            sinks = {k: FileSink(open_sink(format, out, k, src.n, src.sample_shape,
                                           {**base, "method": k, "params": ex.params}, chunk_rows,
                                           resume=resume, overwrite=overwrite))
                     for k, ex in explainers.items()}
        stats = fill(src, producers, sinks, chunk_rows, target=target, progress=progress, desc="explain")
        out.mkdir(parents=True, exist_ok=True)
        rec = new_record("explain", model=model, m=m, src=src, engine=engine, used_predictions=src.y is None,
                         methods=names,
                         params={k: ex.params for k, ex in explainers.items()}, target=target_key(target),
                         settings={"chunk_rows": chunk_rows, "seed": seed, "split": split if dataset else None})
        if engine_choice is not None:
            rec["engine_choice"] = {k: v for k, v in engine_choice.items() if k != "line"}
        files: list[Path] = []
        outputs: dict[str, Path] = {}
        names_for_plots = class_names(src, m)
        if engine == "memory":
            for k in names:
                att = sinks[k].result(src.X)
                outputs[k] = att.save(out / f"{k}.npz")
                files += [outputs[k], out / f"{k}.json"]
                rec["attributions"][k] = f"{k}.npz"
                for i in range(min(int(plots), len(att))):
                    files.append(_save_png(att.plot(src.X, index=i, class_names=names_for_plots),
                                           out / f"{k}_{i}.png"))
                    rec["files"][f"{k}_{i}"] = f"{k}_{i}.png"
        else:
            rec["maps"] = {}
            rec["stream"] = {"chunk_rows": chunk_rows, "format": format, "computed": stats["computed"],
                             "skipped": stats["skipped"]}
            for k, ex in explainers.items():
                outputs[k] = Path(sinks[k].finish({
                    "kind": "attribution", "method": k, "params": ex.params, "layout": src.layout,
                    "model": model_desc(model, m), "data": src.describe(), "target": target_key(target),
                    "chunk_rows": chunk_rows}))
                files.append(outputs[k])
                rec["maps"][k] = outputs[k].name
        info, _ = _samples(out, m, src, seed, chunk_rows)
        rec.update(info)
        rec["files"]["samples"] = "samples.npz"
        files += [out / "samples.npz", write_record(out, rec)]
    finally:
        src.close()
    rows, sec = stats["rows"], stats["seconds"]
    return {"methods": names, "files": files, "outputs": outputs, "n": int(src.n), "computed": stats["computed"],
            "skipped": stats["skipped"], "seconds": sec, "samples_per_s": rows / sec if sec > 0 and rows else None,
            "labels": rec["labels"]["source"], "record": rec}


def _fit_rows(n: int, fit_samples: int | None, seed: int) -> np.ndarray:
    if fit_samples is None or fit_samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(fit_samples), replace=False))


def locate(model, data=None, out_dir="runs/locate", *, dataset: str | None = None, split: str = "test",
           rows: np.ndarray | None = None, engine: str = "memory", chunk_rows: int = DEFAULT_CHUNK_ROWS,
           format: str = "npy", fit_samples: int | None = 20000, layout=None, labels=None, label=None, key=None,
           classes=None, seed: int = 0, progress: bool = False, resume: bool = True, overwrite: bool = False,
           safe_mode: bool = True, localizer=None, plots: bool = True, fit_note: str | None = None,
           distributed: Any = "auto", device: Any = None, refine: int = 0, **localizer_params) -> dict[str, Any]:
    """Fit the TRUST localizer on (a seeded subset of ``fit_samples`` rows of) ``data`` and write the
    masks of every sample (``refine``: per-sample refinement steps, ``Localizer.locate(refine=...)``).

    Without labels the model's predictions stand in for them (the record and the result say
    ``labels: predictions``). ``rows`` restricts a built-in dataset or in-memory data to those rows
    (e.g. the validation rows ``trustmap train`` set aside). ``localizer``: a fitted Localizer (or
    its path) to skip fitting. Under ``torchrun`` the fit is data-parallel (``distributed``,
    ``device``: see :class:`~trustmap.localizer.Localizer`); rank 0 writes the files.

    Writes ``localizer.safetensors`` (+ ``.json``), ``r2_path.json`` and plots, ``masks.npz`` (in memory)
    or ``masks.npy`` (streamed), ``samples.npz``, ``locate.json`` and ``run.json``.
    """
    from ..localizer import distributed as _distributed

    engine = _engine(engine)
    chunk_rows = check_chunk_rows(chunk_rows)
    if fit_samples is not None and (isinstance(fit_samples, bool) or not isinstance(fit_samples, (int, np.integer))
                                    or fit_samples < 50):
        raise InputError("fit_samples must be a whole number of at least 50", parameter="fit_samples",
                         expected="an int >= 50", got=fit_samples, fix="pass e.g. fit_samples=20000")
    from ..localizer.refine import check_refine

    refine = check_refine(refine, None, "remove")[0]
    with _distributed.session(distributed, device) as sess:
        if sess.world_size > 1 and engine != "memory":
            raise InputError("a streamed locate runs in one process", parameter="engine",
                             expected="engine='memory' under torchrun", got=engine, fix="drop --stream, or torchrun")
        res = _locate(sess, model, data, Path(out_dir), dataset, split, rows, engine, chunk_rows, format, fit_samples,
                      layout, labels, label, key, classes, seed, progress, resume, overwrite, safe_mode, localizer,
                      plots, fit_note, distributed, localizer_params, refine)
        sess.barrier()  # every rank returns once rank 0 has written the files
    return res


def _locate(sess, model, data, out, dataset, split, rows, engine, chunk_rows, format, fit_samples, layout, labels,
            label, key, classes, seed, progress, resume, overwrite, safe_mode, localizer, plots, fit_note,
            distributed, localizer_params, refine: int = 0) -> dict[str, Any]:
    from ..localizer import Localizer
    from ..localizer.runner import fit_localizer, localizer_key, sampling_rate
    from ..models import Model, load_model

    if isinstance(model, Model):
        m = model
    elif sess.device is not None and isinstance(model, (str, os.PathLike)):
        m = load_model(model, safe_mode=safe_mode, device=sess.device)
    else:
        m = _load(model, safe_mode)
    src = open_data(data, dataset=dataset, split=split, seed=seed, layout=layout, labels=labels, label=label,
                    key=key, classes=classes, stream=engine == "stream")
    if rows is not None:
        if not isinstance(src, ArraySource):
            raise InputError("rows= selects rows of in-memory data", parameter="rows", expected="rows=None when "
                             "streaming", got="rows", fix="drop rows=")
        src = src.subset(np.asarray(rows))
    if sess.is_main:
        out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = [fit_note] if fit_note else []
    dist = {"rank": sess.rank, "world_size": sess.world_size}
    try:
        check_classes(None if not classes else list(src.classes), m)
        used_pred = False
        info: dict[str, Any] = {}
        if localizer is None:
            idx = _fit_rows(src.n, fit_samples, seed)
            fit_record = {"data": src.fingerprint(), "model": m.fingerprint(), "rows": len(idx), "seed": int(seed),
                          "labels": getattr(src, "labels_source", None), "world_size": sess.world_size,
                          "params": _io.to_jsonable(localizer_params)}
            loc = None
            if resume and not overwrite and sess.world_size == 1 and (out / "localizer.safetensors").exists() \
                    and (out / "fit.json").exists():
                try:
                    if _io.read_json(out / "fit.json") == _io.to_jsonable(fit_record):
                        loc = Localizer.load(out / "localizer.safetensors", model=m)  # fitted by an earlier run
                        notes.append("reused the localizer fitted by an earlier run with these settings")
                except (ValueError, OSError):  # an unreadable earlier fit is fitted again
                    loc = None
            X, y = gather(src, idx, chunk_rows)
            used_pred = y is None  # the localizer then takes the model's predictions as labels
            if loc is None:
                loc, _paths = fit_localizer(m, X, y, out, layout=src.layout, seed=seed,
                                            val_accuracy=recorded_val_accuracy(model),
                                            fs=sampling_rate(getattr(src, "meta", None)),
                                            progress=bool(progress) and sess.is_main, plots=plots,
                                            write=sess.is_main, distributed=distributed,
                                            checkpoint=(out / "checkpoint") if resume else None, **localizer_params)
                if sess.is_main:
                    _io.write_json(out / "fit.json", fit_record)
            info["fit_samples"] = int(len(idx))
            del X, y
        else:
            loc = localizer if not isinstance(localizer, (str, os.PathLike)) else Localizer.load(localizer, model=m)
            used_pred = src.y is None
        tau = float(loc.tau_)
        r2 = getattr(loc, "r2_", None)
        summary = {"tau": tau, "target_r2": float(getattr(loc, "target_r2_", float("nan"))),
                   "target_reached": bool(getattr(loc, "target_reached_", False)),
                   "r2": None if r2 is None else {"estimate": float(r2.estimate), "low": float(r2.low),
                                                  "high": float(r2.high)},
                   "n": int(src.n), "labels": ("predictions" if used_pred and getattr(src, "labels_source", None)
                                               is None else getattr(src, "labels_source", None) or "none"),
                   "refine": refine, **info, **dist}
        if not sess.is_main:  # rank 0 writes the files
            return {**summary, "masks": str(out / ("masks.npz" if engine == "memory" else "masks.npy"))}
        producers = {"trust": lambda x, t: loc.locate(x, layout=src.layout, refine=refine)}
        if engine == "memory":
            sinks = {"trust": MemorySink()}
        else:
            from ..stream.sinks import open_sink

            sinks = {"trust": FileSink(open_sink(format, out, "masks", src.n, src.sample_shape,
                                                 {"model": m.fingerprint(), "data": src.fingerprint(),
                                                  "layout": src.layout, "localizer": localizer_key(loc), "tau": tau},
                                                 chunk_rows, resume=resume, overwrite=overwrite))}
        stats = fill(src, producers, sinks, chunk_rows, progress=progress, desc="locate")
        rec = new_record("locate", model=model, m=m, src=src, engine=engine, used_predictions=used_pred,
                         methods=["trust"], params={"trust": _io.to_jsonable(loc._json_params())},
                         settings={"chunk_rows": chunk_rows, "seed": seed, "fit_samples": info.get("fit_samples"),
                                   "refine": refine,
                                   "split": split if dataset else None, "fit_on": fit_note, **dist})
        rec["notes"] += notes
        if engine == "memory":
            masks = sinks["trust"].result(src.X).save(out / "masks.npz")
            rec["attributions"]["trust"] = "masks.npz"
        else:
            masks = Path(sinks["trust"].finish({"kind": "masks", "method": "trust", "tau": tau, "layout": src.layout,
                                                "data": src.describe()}))
            rec["maps"] = {"trust": masks.name}
            rec["stream"] = {"chunk_rows": chunk_rows, "format": format, "computed": stats["computed"],
                             "skipped": stats["skipped"]}
        summary["masks"] = str(masks)
        rec["localizer"] = summary
        for k, f in (("localizer", "r2_path.json"), ("localizer_weights", "localizer.safetensors"),
                     ("da_plot", "da_plot.png"), ("path_plot", "path_plot.png"), ("r2_path_png", "r2_path.png")):
            if (out / f).exists():
                rec["files"][k] = f
        rec.update(_samples(out, m, src, seed, chunk_rows)[0])
        rec["files"]["samples"] = "samples.npz"
        write_record(out, rec)
        _io.write_json(out / "locate.json", summary)
    finally:
        src.close()
    files = [out / f for f in rec["files"].values()] + [Path(masks), out / "run.json"]
    return {**summary, "files": [str(f) for f in files], "record": rec,
            **{k: str(out / v) for k, v in rec["files"].items()}}


def recorded_val_accuracy(model) -> float | None:
    """The validation accuracy a zoo model file records (at its best epoch), else None."""
    if not isinstance(model, (str, os.PathLike)) or not str(model).endswith(".safetensors"):
        return None
    try:
        from ..zoo import read_info

        hist = read_info(model).get("history") or {}
        acc = hist.get("val_acc") or []
        best = int(hist.get("best_epoch", -1))
        v = acc[best] if acc and -len(acc) <= best < len(acc) else None
        return None if v is None or not np.isfinite(float(v)) else float(v)
    except Exception:  # no record, or not a zoo model
        return None


def score(m, X, y, attrs: dict, out_dir=None, metrics=None, *, layout=None, mask=None, seed: int = 0,
          plots: bool = True, progress: bool = False, **evaluate_params) -> dict[str, Any]:
    """Score Attributions of ``X`` (:func:`trustmap.metrics.evaluate_explanations`) and write
    ``scores.json`` / ``scores.md`` (and ``curves.png``) to ``out_dir`` when given."""
    from ..metrics.evaluate import evaluate_explanations
    from ..metrics.runner import curves_png

    if isinstance(metrics, str):
        metrics = [s.strip() for s in metrics.split(",") if s.strip()]
    from .engine import progress_bar

    bar = progress_bar(1, f"score {len(attrs)} method(s) on {len(X)} samples", progress, unit="table")
    try:
        scores = evaluate_explanations(m, X, y, attrs, metrics, mask=mask, layout=layout, seed=seed,
                                       **evaluate_params)
    finally:
        if bar is not None:
            bar.update(1)
            bar.close()
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        files += scores.save(out / "scores.json")
        if plots and any(k in scores.metrics for k in ("deletion", "insertion")):
            path = curves_png(scores, out / "curves.png")
            if path is not None:
                files.append(path)
    return {"scores": scores, "methods": scores.methods, "n": int(len(X)), "files": files,
            "markdown": scores.to_markdown()}


def select_explanations(d: Path, src, chunk_rows: int, n: int | None, seed: int):
    """The explanations of a folder (any command's) and the rows of ``src`` they cover."""
    from ..attribution import Attribution
    from ..errors import DataError, MissingFileError
    from ..metrics.runner import load_explanations
    from ..stream.sinks import read_maps
    from .record import RUN_FORMATS

    rec = {}
    if (d / "run.json").is_file():
        try:
            rec = _io.read_json(d / "run.json")
        except ValueError:
            rec = {}
    streamed = rec.get("maps") if isinstance(rec, dict) and rec.get("format") in RUN_FORMATS else None
    if not streamed:  # saved Attributions of the first rows
        attrs = load_explanations(d)
        counts = {len(a) for a in attrs.values()}
        if len(counts) != 1:
            raise DataError("the saved explanations cover different numbers of samples", parameter="explanations_dir",
                            expected="one count for all", got={k: len(a) for k, a in attrs.items()},
                            fix="explain the same samples with every method")
        k = counts.pop()
        if k > src.n:
            raise DataError("the explanations cover more samples than the data have", parameter="data",
                            expected=f"at least {k} samples", got=src.n, fix="pass the data that was explained")
        idx = np.arange(k)
        if n is not None and n < k:
            idx = np.sort(np.random.default_rng(seed).choice(k, size=int(n), replace=False))
            attrs = {name: a[idx] for name, a in attrs.items()}
        X, y = gather(src, idx, chunk_rows)
        prints = {_io.fingerprint_array(np.ascontiguousarray(X)),
                  _io.fingerprint_array(np.ascontiguousarray(X).astype(np.float32))}
        for name, a in attrs.items():
            fp = a.provenance.get("data_sha256")
            if fp is not None and len(idx) == k and fp not in prints:
                raise DataError(f"explanation {name!r} was made for other inputs", parameter="data",
                                expected=f"the data explained (the first {k} samples)",
                                got="a different data fingerprint",
                                fix="pass the same data (and split) given to trustmap explain")
        return attrs, idx, X, y
    fp = (rec.get("data") or {}).get("fingerprint")
    if fp is not None and fp != src.fingerprint():
        raise DataError("the explanations were made for another data file (or the file changed since)",
                        parameter="data", expected="the data that was explained", got=str(src.path),
                        fix="pass the data given to trustmap explain")
    idx = np.arange(src.n) if n is None or n >= src.n else \
        np.sort(np.random.default_rng(seed).choice(src.n, size=int(n), replace=False))
    attrs = {}
    for name, rel in streamed.items():
        p = d / rel
        if not p.exists():
            raise MissingFileError("a streamed result named in run.json is missing", parameter="explanations_dir",
                                   expected=str(p), got="no such file", fix="run the explain/locate step again")
        maps, targets, mrec = read_maps(p)
        if len(targets) != src.n:
            raise DataError("the explanations cover another number of samples", parameter="data",
                            expected=f"{len(targets)} samples", got=src.n, fix="pass the data that was explained")
        attrs[name] = Attribution(np.asarray(maps[idx]), np.asarray(targets[idx]), mrec.get("method", name),
                                  mrec.get("params", {}), mrec.get("layout", src.layout),
                                  {"tau": mrec["tau"]} if "tau" in mrec else {}, {"stream": str(p)})
    X, y = gather(src, idx, chunk_rows)
    return attrs, idx, X, y


def evaluate(model, data=None, out_dir=None, *, dataset: str | None = None, split: str = "test",
             explanations: str | os.PathLike | Sequence | None = None, metrics=None, engine: str = "memory",
             chunk_rows: int = DEFAULT_CHUNK_ROWS, layout=None, labels=None, label=None, key=None, classes=None,
             score_samples: int | None = None, seed: int = 0, progress: bool = False, resume: bool = True,
             overwrite: bool = False, safe_mode: bool = True, history=None, mask=None,
             **evaluate_params) -> dict[str, Any]:
    """The model report (needs labels) and, with ``explanations`` (one folder or several), the scores of
    their maps on the samples they explain.

    Without labels the model report is skipped and the scores use the model's predictions (said in
    the record). ``score_samples``: score a seeded random subset of that many rows (all by default in
    memory; streamed runs default to 2000).
    """
    from ..metrics.model_report import report_from_scores

    engine = _engine(engine)
    chunk_rows = check_chunk_rows(chunk_rows)
    m = _load(model, safe_mode)
    src = open_data(data, dataset=dataset, split=split, seed=seed, layout=layout, labels=labels, label=label,
                    key=key, classes=classes, stream=engine == "stream")
    out = None if out_dir is None else Path(out_dir)
    result: dict[str, Any] = {"files": []}
    try:
        see_first_row(m, src)
        check_classes(None if not classes else list(src.classes), m)
        if src.y is None and not explanations:
            raise InputError("evaluating a model needs labels", parameter="labels",
                             expected="labeled data, or labels= (CLI: --labels FILE)", got="no labels",
                             fix="pass labels='y.npy', or --explanations DIR to score maps without labels")
        rec = new_record("evaluate", model=model, m=m, src=src, engine=engine,
                         used_predictions=src.y is None,
                         settings={"chunk_rows": chunk_rows, "seed": seed, "split": split if dataset else None,
                                   "metrics": metrics, "score_samples": score_samples,
                                   **_io.to_jsonable(evaluate_params)})
        names = class_names(src, m)
        if src.y is not None:
            probs, _ = predictions(m, src, chunk_rows, progress)
            report = report_from_scores(src.y, probs, class_names=names)
            result["report"] = report
            result["accuracy"] = float(report.accuracy)
            if out is not None:
                with _io.atomic_path(out / "probs.npy", suffix=".npy") as tmp:
                    np.save(tmp, probs)
                result["files"].append(out / "probs.npy")
                rec["files"]["probs"] = "probs.npy"
                from ..workflows import write_model_report

                fs = write_model_report(out, report, history)
                result["files"] += fs
                rec["files"].update({"model_report": "report.json", "report_txt": "report.txt"})
                if (out / "model_report.png").exists():
                    rec["files"]["model_report_png"] = "model_report.png"
        else:
            rec["notes"].append("no model report: the data have no labels")
        if explanations:
            dirs = [explanations] if isinstance(explanations, (str, os.PathLike)) else list(explanations)
            attrs, idx, X, y = {}, None, None, None
            for d in dirs:
                a, i, Xd, yd = select_explanations(Path(d), src, chunk_rows,
                                             score_samples if score_samples is not None else
                                             (2000 if engine == "stream" else None), seed)
                if idx is not None and not np.array_equal(i, idx):
                    raise InputError("the explanation folders cover different samples", parameter="explanations",
                                     expected="folders made on the same data", got=[str(x) for x in dirs],
                                     fix="score each folder on its own")
                idx, X, y = i, Xd, yd
                attrs.update(a)
            region = mask if mask is not None else (None if getattr(src, "mask", None) is None else src.mask[idx])
            sc = score(m, X, y, attrs, out, metrics, layout=src.layout, mask=region, seed=seed, progress=progress,
                       **evaluate_params)
            result.update(scores=sc["scores"], methods=sc["methods"], n_scored=sc["n"], markdown=sc["markdown"])
            result["files"] += sc["files"]
            if out is not None:
                rec["files"]["scores"] = "scores.json"
                if (out / "curves.png").exists():
                    rec["files"]["curves"] = "curves.png"
            rec["explanations"] = [str(d) for d in dirs]
            rec["scored_rows"] = int(len(idx))
        if out is not None:
            result["files"].append(write_record(out, rec))
        result["record"] = rec
        result["labels"] = rec["labels"]["source"]
    finally:
        src.close()
    return result


# ---- trustmap counterfactual -------------------------------------------------------------------
def counterfactual(model, data=None, reference=None, out_dir="runs/counterfactual", *, dataset: str | None = None,
                   split: str = "test", reference_labels=None, target=None, method: str = "native_guide",
                   importance: str = "saliency", importance_params: dict | None = None, layout=None,
                   reference_layout=None, labels=None, classes=None, n: int | None = None, plots: int = 4,
                   seed: int = 0, progress: bool = False, safe_mode: bool = True) -> dict[str, Any]:
    """Counterfactuals of every sample of ``data`` (:func:`trustmap.counterfactual`), the neighbours taken
    from ``reference`` (e.g. the training data) and its labels (``reference_labels``, else the file's
    own, else the model's predictions, said in the record).

    ``target``: None (each sample's second most probable class), a class index, ``'label'`` or one class
    per sample (array or file). Writes ``counterfactuals.npz`` (+ ``.json``; :class:`~trustmap.explain.
    counterfactual.Counterfactual`), ``counterfactual_<i>.png`` for the first ``plots`` samples,
    ``samples.npz`` and ``run.json``. Returns ``result`` (the Counterfactual), ``n``, ``success_rate``,
    ``files``, ``labels``, ``reference_labels``, ``record``.
    """
    from ..errors import TargetError
    from ..explain.counterfactual import counterfactual as _native_guide

    if isinstance(target, str) and target.strip().lower() in ("predicted", "pred", "prediction"):
        raise TargetError("a counterfactual's target is another class than the predicted one", parameter="target",
                          expected="a class index, 'label'... or nothing (the second most probable class)",
                          got=target, fix="drop --target, or pass --target 2")
    target = parse_target(target)
    m = _load(model, safe_mode)
    src = open_data(data, dataset=dataset, split=split, seed=seed, layout=layout, labels=labels, classes=classes, n=n)
    if reference is None:
        src.close()
        raise InputError("counterfactuals need reference samples", parameter="reference",
                         expected="a data file of real samples (e.g. the training data)", got=None,
                         fix="pass --reference TRAIN_DATA (with --reference-labels if the file has none)")
    ref = open_data(reference, layout=reference_layout if reference_layout is not None else layout,
                    labels=reference_labels)
    out = Path(out_dir)
    try:
        check_classes(None if not classes else list(src.classes), m)
        X, lay = m.to_internal(src.X, src.layout)
        R, _ = m.to_internal(ref.X, ref.layout, parameter="reference")
        X, R = X.detach().cpu().numpy(), R.detach().cpu().numpy()
        internal = "NCL" if X.ndim == 3 else "NCHW"
        notes = []
        if ref.y is None:
            yr = m.probs(R, layout=internal).argmax(1)
            notes.append("the reference data have no labels: the model's predictions on them stand in for them")
        else:
            yr = np.asarray(ref.y)
        if isinstance(target, str):  # 'label'
            if src.y is None:
                raise TargetError("--target label needs labels", parameter="target", expected="labeled data",
                                  got="no labels", fix="pass --labels FILE, or a class index")
            tg = np.asarray(src.y)
        else:
            if target is not None and np.ndim(target) == 1 and len(target) != src.n:
                raise TargetError("one target per sample is needed", parameter="target",
                                  expected=f"{src.n} class indices", got=len(target),
                                  fix="pass one class index per sample, or a single class index")
            tg = target
        bar = progress_bar(1, f"counterfactuals of {src.n} samples", progress, unit="batch")
        try:
            cf = _native_guide(m, X, target=tg, method=method, reference=R, y_reference=yr, layout=internal,
                               importance=importance, importance_params=importance_params)
        finally:
            if bar is not None:
                bar.update(1)
                bar.close()
        out.mkdir(parents=True, exist_ok=True)
        files: list[Path] = [cf.save(out / "counterfactuals.npz"), out / "counterfactuals.json"]
        rec = new_record("counterfactual", model=model, m=m, src=src, used_predictions=src.y is None,
                         methods=[method], params={method: {"importance": importance,
                                                            "importance_params": importance_params or {}}},
                         target=target_key(target),
                         settings={"seed": seed, "split": split if dataset else None, "reference": str(reference),
                                   "reference_labels": ref.labels_source or "predictions", "n_reference": ref.n})
        rec["notes"] += notes
        rec["files"]["counterfactuals"] = "counterfactuals.npz"
        rec["files"]["counterfactuals_json"] = "counterfactuals.json"
        names = class_names(src, m)
        for i in range(min(int(plots), len(cf))):
            files.append(_save_png(cf.plot(i, class_names=names), out / f"counterfactual_{i}.png"))
            rec["files"][f"counterfactual_{i}"] = f"counterfactual_{i}.png"
        rec.update(write_samples(out / "samples.npz", m, src.X, src.layout, y=src.y))
        rec["files"]["samples"] = "samples.npz"
        summary = {"n": int(src.n), "success_rate": float(np.mean(cf.success)) if len(cf) else None,
                   "mean_window": float(np.mean(cf.window)) if len(cf) else None}
        rec["counterfactual"] = summary
        files += [out / "samples.npz", write_record(out, rec)]
    finally:
        src.close()
        ref.close()
    return {"result": cf, **summary, "files": files, "labels": rec["labels"]["source"],
            "reference_labels": ref.labels_source or "predictions", "record": rec}
