"""The one run record (``run.json``) every command writes, and the samples file the report reads.

Format ``trustmap.run/2`` (a JSON object):

================  ===================================================================================
``format``        ``"trustmap.run/2"``
``command``       ``train``, ``explain``, ``locate``, ``evaluate``, ``counterfactual`` or ``demo``
``created``       UTC time
``engine``        ``memory``, ``stream`` or ``ray`` (how the chunks were scheduled)
``model``         name, framework, fingerprint (of the weights), file
``data``          name, path, format, n, sample shape, layout, fingerprint (of the samples or the file)
``labels``        ``source``: ``dataset`` | ``data`` | ``file`` | ``array`` | ``predictions`` | ``none``;
                  ``path`` of a labels file
``classes``       class names in class-index order (``[]``: indices)
``target``        the target given (``null``: the predicted class)
``methods``       method names; ``params``: their options
``settings``      the command's other settings
``files``         key -> path relative to the folder (``samples``, ``scores``, ``model_report``, ...)
``attributions``  method -> ``.npz`` Attribution of the samples in ``samples.npz``
``maps``          method -> streamed maps (``.npy`` / Parquet) with ``samples.npz``'s ``index`` into them
``n``             samples the command covered
``notes``         sentences for the reader (e.g. predictions stood in for labels)
``timings``       seconds per step; ``versions``: library versions
================  ===================================================================================

:func:`trustmap.report.build_report` reads any folder (or several) holding such a record.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io

__all__ = ["RUN_FORMAT", "RUN_FORMATS", "new_record", "model_desc", "write_samples", "labels_record",
           "write_record"]

RUN_FORMAT = "trustmap.run/2"
#: formats the report reads (``/1``: demo folders of earlier versions)
RUN_FORMATS = ("trustmap.run/1", RUN_FORMAT)


def model_desc(model, m) -> dict[str, Any]:
    """The model's name, framework, fingerprint and file (or the object's type).

    Parameters
    ----------
    model : object or path
        What the user passed.
    m : Model
        The loaded model.

    Returns
    -------
    dict

    Examples
    --------
    >>> import torch, trustmap
    >>> from trustmap.jobs import model_desc
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model_desc(net, trustmap.load_model(net, input_shape=(1, 16)))["framework"]
    'torch'
    """
    desc = {"name": m.name, "framework": m.framework, "fingerprint": m.fingerprint(),
            "file": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__,
            "n_classes": int(m.n_classes)}
    module = getattr(m, "module", None) or getattr(m, "model", None)
    try:
        desc["parameters"] = int(sum(p.numel() for p in module.parameters()))
    except Exception:  # not a torch module
        pass
    return desc


def labels_record(src, used_predictions: bool = False) -> dict[str, Any]:
    source = getattr(src, "labels_source", None)
    if source is None:
        source = "predictions" if used_predictions else "none"
    rec = {"source": source}
    if getattr(src, "labels_path", None):
        rec["path"] = src.labels_path
    return rec


def new_record(command: str, *, model=None, m=None, src=None, engine: str = "memory",
               used_predictions: bool = False, **fields) -> dict[str, Any]:
    """A ``trustmap.run/2`` record with the common fields filled from the model and the source.

    Parameters
    ----------
    command : str
        The job (``'explain'``, ``'locate'``...).
    model : object or path, optional
    m : Model, optional
    src : Source, optional
    engine : str, default 'memory'
    used_predictions : bool, default False
        Targets came from the model's predictions (no labels).
    **fields
        Further top-level fields.

    Returns
    -------
    dict

    Examples
    --------
    >>> from trustmap.jobs import RUN_FORMAT, new_record
    >>> rec = new_record("explain", engine="stream")
    >>> rec["format"] == RUN_FORMAT, rec["command"]
    (True, 'explain')
    """
    rec: dict[str, Any] = {
        "format": RUN_FORMAT, "command": command, "engine": engine,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "files": {}, "attributions": {}, "notes": [], "timings": {}, "versions": _io.versions(),
    }
    if m is not None:
        rec["model"] = model_desc(model, m)
    if src is not None:
        desc = src.describe()
        desc.update({"name": getattr(src, "name", desc.get("name")), "fingerprint": src.fingerprint(),
                     "n": int(src.n)})
        rec["data"] = desc
        rec["labels"] = labels_record(src, used_predictions)
        rec["classes"] = list(src.classes or [])
        rec["n"] = int(src.n)
        if used_predictions and getattr(src, "labels_source", None) is None:
            rec["notes"].append("the data have no labels: the model's predictions stand in for them")
    rec.update(fields)
    return rec


def write_record(out_dir, rec: dict[str, Any]) -> Path:
    return _io.write_json(Path(out_dir) / "run.json", rec)


def write_samples(path, m, X: np.ndarray, layout: str, *, y=None, index=None) -> dict[str, Any]:
    """``samples.npz`` for the report: ``X``, ``pred``, ``probs``, ``index`` (rows of the data) and ``y``
    (when labeled). Returns ``{"samples_layout", "samples_sha256"}`` for the run record.

    Parameters
    ----------
    path : str or Path
        The ``samples.npz`` to write (atomically).
    m : Model
    X : ndarray
        The samples, in ``layout``.
    layout : str
    y : ndarray, optional
    index : ndarray, optional
        Their rows in the data (default ``0..N-1``).

    Returns
    -------
    dict

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.jobs import write_samples
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> path = os.path.join(tempfile.mkdtemp(), "samples.npz")
    >>> info = write_samples(path, trustmap.load_model(net), np.zeros((3, 1, 16), np.float32), "NCL")
    >>> info["samples_layout"], sorted(np.load(path).files)
    ('NCL', ['X', 'index', 'pred', 'probs'])
    """
    X = np.ascontiguousarray(X)
    probs = m.probs(X, layout=layout)
    arrays = {"X": X, "pred": probs.argmax(axis=1), "probs": probs,
              "index": np.arange(len(X)) if index is None else np.asarray(index)}
    if y is not None:
        arrays["y"] = np.asarray(y)
    with _io.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return {"samples_layout": layout, "samples_sha256": _io.fingerprint_array(X)}
