"""Reading run folders of any command into one :class:`~trustmap.report.Run`.

Every command writes a ``trustmap.run/2`` record (``run.json``, see :mod:`trustmap.jobs.record`):
``trustmap demo`` a whole run, ``explain`` / ``locate`` / ``evaluate`` a part of one. :func:`load_runs`
reads one folder or several (e.g. explain + locate + evaluate of the same model and data) and joins
them: the explained samples and their maps, the localizer, the model report and the scores, with
the sections that exist. Maps made on other samples than the ones shown are left out (with a note).
Streamed results (``.npy`` / Parquet maps) are read for the rows in the folder's ``samples.npz``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import RunDirError

__all__ = ["load_runs", "load_any"]


def _record_data(rec: dict, run) -> dict:
    d = dict(rec.get("data") or {})
    labels = (rec.get("labels") or {}).get("source")
    out = {"name": d.get("name") or Path(str(d.get("path") or "data")).stem, "layout": d.get("layout"),
           "shape": d.get("sample_shape"), "n_test": d.get("n", rec.get("n")),
           "classes": list(rec.get("classes") or d.get("classes") or []),
           "labeled": labels not in (None, "none", "predictions"), "source": d.get("path") or d.get("name"),
           "labels": labels}
    if labels not in (None, "none", "predictions"):
        out["labels_from"] = labels + (f" ({(rec.get('labels') or {}).get('path')})"
                                       if (rec.get("labels") or {}).get("path") else "")
    return out


def load_any(run_dir: str | os.PathLike):
    """One run folder of any command (``trustmap.run/1`` demo folders included)."""
    from ..attribution import Attribution
    from ..stream.sinks import read_maps
    from .html import _corrupt, _need, load_run

    run = load_run(run_dir)
    rec = run.manifest
    if rec.get("format") != "trustmap.run/1" and run.data is None and rec.get("data"):
        run.data = _record_data(rec, run)
    for name, rel in (rec.get("maps") or {}).items():  # streamed results: the rows of samples.npz
        path = _need(run.root / rel, f"streamed maps of {name}")
        if run.samples is None or "index" not in run.samples:
            continue
        try:
            maps, targets, mrec = read_maps(path)
            idx = np.asarray(run.samples["index"], dtype=np.int64)
            run.attributions[name] = Attribution(np.asarray(maps[idx]), np.asarray(targets[idx]),
                                                 mrec.get("method", name), mrec.get("params", {}),
                                                 mrec.get("layout", rec.get("samples_layout", "NCL")),
                                                 {"tau": mrec["tau"]} if "tau" in mrec else {}, {"stream": str(path)})
        except RunDirError:
            raise
        except Exception as exc:
            raise _corrupt(path, exc, f"streamed maps of {name}") from exc
    labels = (rec.get("labels") or {}).get("source")
    notes = list(rec.get("notes") or [])
    if labels in ("none", "predictions") and not any("no labels" in n for n in notes):
        notes.append("the data have no labels: the maps explain the predicted classes, the galleries are grouped "
                     "by predicted class, and wherever labels are needed the model's predictions stand in for them")
    rec["notes"] = notes
    return run


def load_runs(run_dirs: str | os.PathLike | Sequence[str | os.PathLike]):
    """One :class:`~trustmap.report.Run` from one run folder or several of the same model and data."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    runs = [load_any(d) for d in run_dirs]
    if not runs:
        raise RunDirError("no run folder given", parameter="run_dir", expected="one or more folders", got=0,
                          fix="pass e.g. runs/explain runs/locate runs/evaluate")
    if len(runs) == 1:
        return runs[0]
    fps = {r.manifest.get("model", {}).get("fingerprint") for r in runs} - {None}
    if len(fps) > 1:
        raise RunDirError("the run folders are of different models", parameter="run_dir",
                          expected="folders made with one model", got=[str(r.root) for r in runs],
                          fix="build one report per model")
    base = next((r for r in runs if r.samples is not None), runs[0])
    manifest = dict(base.manifest)
    manifest["notes"] = []
    manifest["timings"] = {}
    manifest["sources"] = [{"dir": str(r.root), "command": r.manifest.get("command", "demo")} for r in runs]
    for r in runs:
        for n in r.manifest.get("notes") or []:
            if n not in manifest["notes"]:
                manifest["notes"].append(n)
        for k, v in (r.manifest.get("timings") or {}).items():
            manifest["timings"][f"{r.manifest.get('command', 'run')}:{k}"] = v
        if not manifest.get("model") and r.manifest.get("model"):
            manifest["model"] = r.manifest["model"]
        if not manifest.get("classes") and r.manifest.get("classes"):
            manifest["classes"] = r.manifest["classes"]
    base.manifest = manifest
    key = manifest.get("samples_sha256")
    for r in runs:
        if r is base:
            continue
        for field in ("data", "model_report", "history", "scores", "localizer"):
            if getattr(base, field) is None and getattr(r, field) is not None:
                setattr(base, field, getattr(r, field))
        for k, v in r.images.items():
            base.images.setdefault(k, v)
        if r.attributions:
            same = r.samples is not None and r.manifest.get("samples_sha256") == key
            if same:
                for k, a in r.attributions.items():
                    base.attributions.setdefault(k, a)
            else:
                manifest["notes"].append(f"the maps in {r.root.name} ({', '.join(r.attributions)}) are of other "
                                         "samples than the ones shown; not shown")
    if base.data is not None and not base.data.get("classes") and manifest.get("classes"):
        base.data["classes"] = manifest["classes"]
    return base
