"""``run_explain``: explain a dataset with several methods and write the results to a folder.

The in-memory engine of the one explain job (:func:`trustmap.jobs.commands.explain`); the CLI's
``trustmap explain`` calls that job directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..jobs.params import make_explainers

__all__ = ["run_explain", "make_explainers"]


def run_explain(model, data, methods: str | Sequence[str], out_dir: str | os.PathLike, *, target=None,
                layout: str | None = None, params: dict[str, dict[str, Any]] | None = None,
                n: int | None = None, plots: int = 4, split: str = "test", safe_mode: bool = True,
                labels=None, classes=None, progress: bool = False) -> dict[str, list[Path]]:
    """Explain ``data`` with each of ``methods`` and write the results under ``out_dir``.

    For each method ``M`` it writes ``M.npz`` with its JSON record ``M.json`` (an
    :class:`~trustmap.Attribution`, reload with ``Attribution.load``) and ``M_<i>.png``, the
    overlays of the first ``plots`` samples; ``samples.npz`` and ``run.json`` (``trustmap.run/2``)
    beside them.

    ``data``: a data file, a built-in dataset name (its ``split``), a Dataset, an ``(X, y)`` pair or
    an array. ``target``: ``None`` (predicted class), ``'label'``, an int, or one int per sample.
    ``params``: options per method, e.g. ``{"gradcam": {"layer": "conv2"}}``. ``n``: the first ``n``
    samples only. ``labels``/``classes``: labels beside the data and class names.

    Returns method name -> the paths written for it (the ``.npz`` first).
    """
    from ..jobs.commands import explain

    res = explain(model, data, methods, out_dir, split=split, target=target, params=params, layout=layout,
                  labels=labels, classes=classes, n=n, plots=plots, progress=progress, safe_mode=safe_mode)
    out = Path(out_dir)
    return {k: [res["outputs"][k], res["outputs"][k].with_suffix(".json")] +
            [out / f"{k}_{i}.png" for i in range(plots) if (out / f"{k}_{i}.png").exists() and
             f"{k}_{i}" in res["record"]["files"]] for k in res["methods"]}
