"""Class-average saliency: the mean map over a class's samples, with its SEM and a bootstrap CI."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from ..attribution import Attribution
from ..labels import check_labels
from ..errors import DataError
from ..models import load_model
from .base import check_number
from .registry import get_explainer

__all__ = ["class_average"]


def class_average(model, X, y=None, *, method: str = "saliency", classes: Sequence[int] | None = None,
                  n_per_class: int = 100, correct_only: bool = False, n_boot: int = 1000, ci: float = 0.95,
                  seed: int = 0, layout: str | None = None, **params) -> Attribution:
    """Average ``method``'s maps over (up to) ``n_per_class`` samples of each class.

    Each sample is explained for its own class. For every class the result holds, per input
    position and channel, the mean map, its standard error (``std / sqrt(n)``, ``ddof=1``) and a
    percentile bootstrap confidence interval of the mean (``n_boot`` resamples of the class's
    samples, drawn from ``seed``). All selected samples are explained in one batched call.

    Parameters
    ----------
    model
        Anything :func:`trustmap.load_model` takes.
    X : array
        Inputs in any layout the model accepts.
    y : array of int, optional
        Labels; default the model's predictions.
    method : str
        A registered method (``saliency`` by default); ``**params`` go to it.
    classes : ints, optional
        Which classes (default all labels present).
    n_per_class : int
        A class with more samples contributes ``n_per_class`` of them, drawn at random from ``seed``.
    correct_only : bool
        Use only samples the model classifies correctly (needs ``y``).
    n_boot, ci : int, float
        Bootstrap resamples and the two-sided level of the interval.

    Returns
    -------
    Attribution
        ``maps`` has one row per class (the mean maps, in ``X``'s layout), ``targets`` the classes;
        ``extras`` holds ``sem``, ``ci_low``, ``ci_high`` (shaped like ``maps``) and ``n`` (samples per class).

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.explain import class_average
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2)),
    ...                             input_shape=(1, 6))
    >>> X = np.random.RandomState(0).rand(8, 1, 6).astype(np.float32)
    >>> avg = class_average(model, X, np.array([0, 1] * 4), n_boot=50)
    >>> avg.maps.shape, avg.targets.tolist(), avg.extras["n"].tolist()
    ((2, 1, 6), [0, 1], [4, 4])
    """
    n_per_class = check_number(n_per_class, "n_per_class", minimum=1, integer=True)
    n_boot = check_number(n_boot, "n_boot", minimum=1, integer=True)
    ci = check_number(ci, "ci", minimum=0, maximum=1, open_min=True)
    explainer = get_explainer(method, **params)
    m = load_model(model)
    X = np.asarray(X.detach().cpu() if hasattr(X, "detach") else X)
    lay = m.resolve(X, layout)
    n = len(X)
    if correct_only and y is None:
        raise DataError("correct_only needs the true labels", parameter="y", expected="one label per sample",
                        got=None, fix="pass y, or correct_only=False")
    pred = m.predict(X, layout=lay.name) if (y is None or correct_only) else None
    labels = pred if y is None else check_labels(y, n, m.n_classes, parameter="y", classes_desc="the model's classes")
    keep = np.ones(n, dtype=bool) if not correct_only else (pred == labels)
    wanted = sorted(set(labels[keep].tolist())) if classes is None else [int(c) for c in classes]
    rng = np.random.default_rng(seed)
    chosen, owner = [], []
    for c in wanted:
        idx = np.flatnonzero((labels == c) & keep)
        if idx.size == 0:
            raise DataError(f"no {'correctly classified ' if correct_only else ''}sample of class {c}",
                            parameter="classes", expected="classes with at least one sample", got=c,
                            fix="drop that class from classes=")
        if idx.size > n_per_class:
            idx = np.sort(rng.choice(idx, size=n_per_class, replace=False))
        if idx.size < 2:
            warnings.warn(f"class {c} has one sample: its SEM and interval are undefined (NaN)", stacklevel=2)
        chosen.append(idx)
        owner.append(np.full(idx.size, c))
    sel = np.concatenate(chosen)
    attr = explainer.explain(m, X[sel], target=np.concatenate(owner), layout=lay.name)
    maps = attr.maps.astype(np.float64)
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    means, sems, lows, highs, counts = [], [], [], [], []
    start = 0
    for idx in chosen:
        block = maps[start:start + idx.size].reshape(idx.size, -1)
        start += idx.size
        k = idx.size
        means.append(block.mean(0))
        sems.append(block.std(0, ddof=1) / np.sqrt(k) if k > 1 else np.full(block.shape[1], np.nan))
        lo, hi = _bootstrap(block, n_boot, lo_q, hi_q, rng)
        lows.append(lo)
        highs.append(hi)
        counts.append(k)
    shape = (len(wanted), *attr.maps.shape[1:])
    dtype = attr.maps.dtype
    extras = {"sem": np.stack(sems).reshape(shape).astype(dtype), "ci_low": np.stack(lows).reshape(shape).astype(dtype),
              "ci_high": np.stack(highs).reshape(shape).astype(dtype), "n": np.asarray(counts, dtype=np.int64)}
    prm = {"method": method, "params": attr.params, "n_per_class": n_per_class, "correct_only": bool(correct_only),
           "n_boot": n_boot, "ci": ci, "seed": int(seed)}
    prov = dict(attr.provenance)
    prov["sample_indices"] = sel.tolist()
    return Attribution(np.stack(means).reshape(shape).astype(dtype), np.asarray(wanted), "class_average", prm,
                       attr.layout, extras, prov)


def _bootstrap(block: np.ndarray, n_boot: int, lo_q: float, hi_q: float, rng: np.random.Generator):
    """Percentile interval of the mean of ``block`` (k, P) over ``n_boot`` resamples of its rows."""
    k, p = block.shape
    if k < 2:
        return np.full(p, np.nan), np.full(p, np.nan)
    weights = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot) / k  # (B, k): one resample per row
    lo, hi = np.empty(p), np.empty(p)
    step = max(1, (1 << 23) // max(1, n_boot))  # bound the (B, columns) block at ~64 MB
    for j in range(0, p, step):
        means = weights @ block[:, j:j + step]
        lo[j:j + step], hi[j:j + step] = np.quantile(means, [lo_q, hi_q], axis=0)
    return lo, hi
