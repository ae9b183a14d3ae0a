"""``run_explain``: explain a dataset with several methods and write the results to a folder.

The CLI ``trustmap explain --model M --data D --method gradcam,saliency --out DIR`` is a thin
wrapper around :func:`run_explain`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..errors import InputError
from ..models import load_model
from .registry import get_explainer, list_methods

__all__ = ["run_explain", "load_data", "make_explainers"]


def _data_module():
    try:
        from .. import datasets as mod  # type: ignore[attr-defined]
    except ImportError:
        from .. import data as mod
    return mod


def load_data(data, layout: str | None = None, split: str = "test"):
    """``(X, y or None, layout name or None, class names or None)`` from a path, a built-in dataset
    name, a :class:`~trustmap.data.Dataset`, an ``(X, y)`` pair, or an array."""
    mod = _data_module()
    if isinstance(data, (str, os.PathLike)):
        if isinstance(data, str) and data in getattr(mod, "NAMES", ()) and not Path(data).exists():
            ds = mod.load(data, split=split)
        else:
            ds = mod.read(data, layout=layout)
        data = ds
    if isinstance(data, mod.Dataset):
        return data.X, data.y, layout or data.layout, list(data.classes) or None
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1], layout, None
    return data, None, layout, None


def _methods(methods) -> list[str]:
    if isinstance(methods, str):
        names = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        names = [str(m) for m in methods]
    if not names:
        raise InputError("no method given", parameter="methods", expected="one or more of " + ", ".join(list_methods()),
                         got=methods, fix="pass e.g. methods='gradcam,saliency'")
    return names


def make_explainers(methods, params: dict[str, dict[str, Any]] | None = None) -> dict:
    """``{name: explainer}`` for method names (a list or one comma-separated string) and their
    parameters ``{name: {...}}``; every name and parameter is checked before any work."""
    names = _methods(methods)
    params = dict(params or {})
    unknown = [k for k in params if k not in names]
    if unknown:
        raise InputError("parameters given for a method that is not run", parameter="params",
                         expected="keys among " + ", ".join(names), got=unknown[0],
                         fix="add the method to methods=, or drop its parameters")
    return {name: get_explainer(name, **params.get(name, {})) for name in names}


def run_explain(model, data, methods: str | Sequence[str], out_dir: str | os.PathLike, *, target=None,
                layout: str | None = None, params: dict[str, dict[str, Any]] | None = None,
                n: int | None = None, plots: int = 4, split: str = "test", safe_mode: bool = True,
                ) -> dict[str, list[Path]]:
    """Explain ``data`` with each of ``methods`` and write the results under ``out_dir``.

    For each method ``M`` it writes ``M.npz`` with its JSON record ``M.json`` (an
    :class:`~trustmap.Attribution`, reload with ``Attribution.load``) and ``M_<i>.png``, the
    overlays of the first ``plots`` samples. A ``run.json`` beside them records the inputs.

    Parameters
    ----------
    model
        A model object or file (anything :func:`trustmap.load_model` takes).
    data
        A data file (``.npz``, ``.npy``, ``.csv``, ``.parquet``, ``.h5``, ``.ts``), a built-in
        dataset name (its ``split``), a Dataset, an ``(X, y)`` pair or an array.
    methods
        Method names, as a list or one comma-separated string.
    target
        ``None`` (each sample's predicted class), an int, or one int per sample.
    layout
        The layout of the data when its shape is ambiguous.
    params
        Parameters per method, e.g. ``{"gradcam": {"layer": "conv2"}}``.
    n
        Explain only the first ``n`` samples.
    plots
        How many samples get a PNG overlay per method (0: none).
    safe_mode
        Passed to :func:`trustmap.load_model` for Keras files.

    Returns
    -------
    dict
        method name -> the paths written for it (the ``.npz`` first).
    """
    explainers = make_explainers(methods, params)  # validate all first
    names = list(explainers)
    m = load_model(model, safe_mode=safe_mode)
    X, _y, lay, class_names = load_data(data, layout, split)
    if n is not None:
        X = X[: int(n)]
        if target is not None and np.ndim(target) == 1:
            target = np.asarray(target)[: int(n)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for name, ex in explainers.items():
        attr = ex.explain(m, X, target=target, layout=lay)
        paths = [attr.save(out / f"{name}.npz"), out / f"{name}.json"]
        paths += _plots(attr, X, out, name, plots, class_names)
        written[name] = paths
    _io.write_json(out / "run.json", {
        "model": {"name": m.name, "framework": m.framework, "fingerprint": m.fingerprint(),
                  "source": str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__},
        "data": str(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__,
        "n": int(len(X)), "methods": names, "params": {k: v.params for k, v in explainers.items()},
        "target": None if target is None else np.asarray(target).tolist(),
        "files": {k: [p.name for p in v] for k, v in written.items()},
        "versions": _io.versions(),
    })
    return written


def _plots(attr, X, out: Path, name: str, count: int, class_names) -> list[Path]:
    if count <= 0:
        return []
    x_np = np.asarray(X.detach().cpu() if hasattr(X, "detach") else X)
    paths = []
    for i in range(min(int(count), len(attr))):
        fig = attr.plot(x_np, index=i, class_names=class_names)
        path = out / f"{name}_{i}.png"
        with _io.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        paths.append(path)
    return paths
