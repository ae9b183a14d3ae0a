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

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` takes.
    data : path, dataset name, Dataset, ``(X, y)`` pair or array
        The inputs (see above).
    methods : str or sequence of str
        Registered method names (:func:`~trustmap.explain.list_methods`).
    out_dir : str or path
        The folder written to.
    target : None, ``'label'``, int, or one int per sample
        What each sample is explained for.
    layout : str, optional
        The layout name of the inputs when their shape is ambiguous.
    params : dict, optional
        Method name -> that method's parameters.
    n : int, optional
        Explain only the first ``n`` samples.
    plots : int
        How many samples get an overlay PNG per method.
    split : str
        The split of a built-in dataset.
    safe_mode : bool
        Refuse model files that would run arbitrary code when loaded.
    labels, classes : optional
        Labels beside the data, and the class names.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict of str to list of Path
        Method name -> the files written for it: ``M.npz``, ``M.json``, then the ``M_<i>.png`` overlays.

    Examples
    --------
    >>> import tempfile, numpy as np, torch, trustmap
    >>> from trustmap.explain import run_explain
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2)),
    ...                             input_shape=(1, 6))
    >>> X = np.random.RandomState(0).rand(2, 1, 6).astype(np.float32)
    >>> paths = run_explain(model, X, "saliency", tempfile.mkdtemp(), plots=1)
    >>> [p.name for p in paths["saliency"]]
    ['saliency.npz', 'saliency.json', 'saliency_0.png']
    """
    from ..jobs.commands import explain

    res = explain(model, data, methods, out_dir, split=split, target=target, params=params, layout=layout,
                  labels=labels, classes=classes, n=n, plots=plots, progress=progress, safe_mode=safe_mode)
    out = Path(out_dir)
    return {k: [res["outputs"][k], res["outputs"][k].with_suffix(".json")] +
            [out / f"{k}_{i}.png" for i in range(plots) if (out / f"{k}_{i}.png").exists() and
             f"{k}_{i}" in res["record"]["files"]] for k in res["methods"]}
