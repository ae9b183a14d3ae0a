"""Galleries and summaries: success / failure galleries, class-average maps with confidence
bands (and marginal plots for images), metric comparison charts with intervals.

Every function returns a :class:`matplotlib.figure.Figure` and never shows it. Arrays are
given in the caller's layout (``layout=``, or the Attribution's own) and converted once
through :mod:`trustmap.layout`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError, InputError, ShapeError
from ..layout import Layout, as_layout
from ._style import (SIGNAL_CMAP, SIGNED_CMAP, TIME_LABEL, as_numpy, attribution_scale, channel_labels,
                     class_colors, new_figure, overlay, scalar_mappable)

__all__ = ["select_gallery", "sample_title", "plot_gallery", "plot_method_grid", "plot_class_average", "plot_metric_comparison"]

#: the gallery groups, in display order
GROUPS = ("correct, most confident", "correct, least confident", "wrong, most confident", "wrong, least confident")


def _internal(arr, lay: Layout, parameter: str) -> np.ndarray:
    a = as_numpy(arr, parameter)
    if a.ndim != lay.ndim:
        raise ShapeError(f"array does not have the rank of layout {lay.name}", parameter=parameter,
                         expected=f"{lay.ndim} axes (batch axis included)", got=f"shape {a.shape}",
                         fix="pass the whole batch in the layout you named")
    return np.asarray(lay.to_internal(a), dtype=np.float64)


def _maps_and_layout(maps, layout):
    """``(internal maps, Layout, targets or None)`` from an Attribution or an array in ``layout``."""
    from ..attribution import Attribution

    if isinstance(maps, Attribution):
        lay = Layout(maps.layout)
        return np.asarray(maps.internal(), dtype=np.float64), lay, np.asarray(maps.targets)
    lay = as_layout(layout)
    if lay is None:
        raise InputError("the layout of an array of maps is needed", parameter="layout",
                         expected="a layout name such as 'NCL', 'NLC' or 'NCHW'", got=None,
                         fix="pass layout=..., or pass an Attribution")
    return _internal(maps, lay, "maps"), lay, None


def select_gallery(y_true, y_pred, confidence, n: int = 4) -> dict[str, np.ndarray]:
    """Indices of the success and failure cases: for correct and for wrong predictions, the ``n``
    most and the ``n`` least confident (``confidence``: the predicted class's probability).

    A sample appears in at most one group of its kind (a small group is not padded with the
    other end). Groups with no sample are returned empty.

    Parameters
    ----------
    y_true, y_pred : array (N,) of int
    confidence : array (N,)
    n : int, default 4

    Returns
    -------
    dict of str to ndarray
        Sample indices under ``'correct, most confident'``, ``'correct, least confident'``,
        ``'wrong, most confident'`` and ``'wrong, least confident'``.

    Raises
    ------
    ShapeError
        The three arrays do not have one entry per sample each.
    InputError
        ``n`` is not a positive int.

    Examples
    --------
    >>> from trustmap.plot import select_gallery
    >>> groups = select_gallery([0, 1, 1, 0], [0, 1, 0, 0], [0.9, 0.6, 0.8, 0.7], n=1)
    >>> groups["correct, most confident"].tolist(), groups["wrong, most confident"].tolist()
    ([0], [2])
    """
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if not (len(y) == len(p) == len(c)):
        raise ShapeError("labels, predictions and confidences differ in length", parameter="y_pred",
                         expected=f"{len(y)} values each", got=(len(y), len(p), len(c)),
                         fix="pass one value per sample")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError("n must be a positive int", parameter="n", expected="an int >= 1", got=n, fix="e.g. n=4")
    out: dict[str, np.ndarray] = {}
    for ok, (most, least) in ((True, GROUPS[:2]), (False, GROUPS[2:])):
        idx = np.flatnonzero((y == p) == ok)
        order = idx[np.argsort(-c[idx], kind="stable")]
        top = order[:n]
        rest = np.setdiff1d(order, top, assume_unique=True)
        bottom = rest[np.argsort(c[rest], kind="stable")][:n]
        out[most], out[least] = top, bottom
    return out


def sample_title(i, y, p, conf, class_names) -> str:
    """'#i · true A · pred B · p=0.93' for sample ``i`` (class names where given; parts without data left out)."""
    def name(k):
        k = int(k)
        return class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)

    parts = [f"#{int(i)}"]
    if y is not None:
        parts.append(f"true {name(y[i])}")
    if p is not None:
        parts.append(f"pred {name(p[i])}")
    if conf is not None:
        parts.append(f"p={float(conf[i]):.2f}")
    return " · ".join(parts)


def plot_gallery(x, maps, indices: Sequence[int] | Mapping[str, Sequence[int]], *, layout: str | None = None,
                 y_true=None, y_pred=None, confidence=None, class_names: Sequence[str] | None = None,
                 channel_names: Sequence[str] | None = None, ncols: int | None = None, cmap: str | None = None,
                 title: str | None = None):
    """A gallery of samples with their maps: the success and failure cases of one method.

    Parameters
    ----------
    x : array
        The input batch, in ``layout`` (or in the Attribution's layout).
    maps : Attribution or array
        Maps of the same batch.
    indices : list of int, or dict group name -> list of int
        Which samples to draw. A dict (e.g. from :func:`select_gallery`) draws one row of
        panels per non-empty group, labelled with the group's name.
    y_true, y_pred, confidence : optional
        Shown in each panel's title.
    ncols : int, optional
        Panels per row for a plain list (default: up to 4).

    1D signals: every sample is a panel with one row per channel, the trace over its map as
    a band. 2D: the image in grey with the map overlaid (maps with several channels are
    summed over channels). Each sample's map is scaled to its own largest ``|value|`` (maps
    of different samples are not comparable in absolute units); each row of panels has a
    colorbar showing that relative scale.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeError
        ``maps`` do not have ``x``'s shape.
    InputError
        An index out of range, or no sample to draw.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_gallery
    >>> x = np.random.default_rng(0).normal(size=(4, 1, 40))
    >>> fig = plot_gallery(x, np.abs(x), [0, 2], layout="NCL", y_true=[0, 1, 1, 0])
    >>> type(fig).__name__
    'Figure'
    """
    m, lay, _ = _maps_and_layout(maps, layout)
    xs = _internal(x, lay, "x")
    if xs.shape[0] != m.shape[0] or xs.shape[2:] != m.shape[2:] or m.shape[1] not in (1, xs.shape[1]):
        raise ShapeError("input and maps do not match", parameter="maps", expected=f"maps shaped like x {xs.shape}",
                         got=f"shape {m.shape}", fix="pass the maps computed on x")
    if isinstance(indices, Mapping):
        groups = [(str(k), [int(i) for i in v]) for k, v in indices.items() if len(v)]
    else:
        groups = [("", [int(i) for i in indices])]
    if not groups or not any(g for _, g in groups):
        raise InputError("no sample to draw", parameter="indices", expected="at least one index", got=indices,
                         fix="pass sample indices, e.g. from select_gallery")
    n = xs.shape[0]
    groups = [(k, v) for k, v in groups if v]
    for _, g in groups:
        for i in g:
            if not 0 <= i < n:
                raise InputError("sample index out of range", parameter="indices", expected=f"0 .. {n - 1}", got=i,
                                 fix="pick samples of the batch")
    if not isinstance(indices, Mapping):
        k = int(ncols) if ncols else min(4, len(groups[0][1]))
        flat = groups[0][1]
        groups = [("", flat[j:j + k]) for j in range(0, len(flat), k)]
    ncol = max(len(g) for _, g in groups)
    yv = None if y_true is None else np.asarray(y_true).reshape(-1)
    pv = None if y_pred is None else np.asarray(y_pred).reshape(-1)
    cv = None if confidence is None else np.asarray(confidence, dtype=np.float64).reshape(-1)
    signed = bool(np.nanmin(m) < 0)
    cmap = cmap or (SIGNED_CMAP if signed else (SIGNAL_CMAP if lay.rank == 1 else "inferno"))
    from matplotlib.colors import Normalize

    norm = Normalize(-1.0, 1.0) if signed else Normalize(0.0, 1.0)
    c = xs.shape[1]
    rows_per = c if lay.rank == 1 else 1
    row_h = (0.8 * rows_per + 0.9) if lay.rank == 1 else 3.0
    fig = new_figure((3.3 * ncol + 1.2, row_h * len(groups) + (0.4 if title else 0.0)))
    subs = fig.subfigures(len(groups), 1, squeeze=False)[:, 0] if len(groups) > 1 else [fig]
    labels = channel_labels(channel_names, c)
    for sub, (gname, g) in zip(subs, groups):
        group_axes = []
        if lay.rank == 1:
            grid = sub.add_gridspec(rows_per, ncol, hspace=0.08)
        else:
            grid = sub.add_gridspec(1, ncol)
        for j, i in enumerate(g):
            mi = m[i] if m.shape[1] == c else np.broadcast_to(m[i], xs[i].shape)
            scale = float(np.nanmax(np.abs(mi))) or 1.0
            mi = mi / scale
            if lay.rank == 1:
                for ch in range(c):
                    ax = sub.add_subplot(grid[ch, j])
                    trace = xs[i, ch]
                    lo, hi = float(trace.min()), float(trace.max())
                    pad = 0.08 * (hi - lo) if hi > lo else 0.1
                    length = trace.shape[-1]
                    ax.imshow(mi[ch][None, :], aspect="auto", extent=(-0.5, length - 0.5, lo - pad, hi + pad),
                              origin="lower", cmap=cmap, norm=norm, interpolation="nearest", zorder=0)
                    ax.plot(np.arange(length), trace, color="black", lw=0.8, zorder=2)
                    ax.set_xlim(-0.5, length - 0.5)
                    ax.set_ylim(lo - pad, hi + pad)
                    ax.tick_params(labelsize=6)
                    ax.set_ylabel(labels[ch] if c > 1 else "value", fontsize=7)
                    if ch < c - 1:
                        ax.tick_params(labelbottom=False)
                    else:
                        ax.set_xlabel(TIME_LABEL, fontsize=7)
                    if ch == 0:
                        ax.set_title(sample_title(i, yv, pv, cv, class_names), fontsize=8)
                    group_axes.append(ax)
            else:
                ax = sub.add_subplot(grid[0, j])
                grey = xs[i].mean(axis=0)
                heat = mi.sum(axis=0) if mi.shape[0] > 1 else mi[0]
                heat = heat / (float(np.nanmax(np.abs(heat))) or 1.0)
                overlay(ax, grey, heat, cmap, norm)
                ax.set_xlabel("x / pixel", fontsize=7)
                ax.set_ylabel("y / pixel", fontsize=7)
                ax.tick_params(labelsize=6)
                ax.set_title(sample_title(i, yv, pv, cv, class_names), fontsize=8)
                group_axes.append(ax)
        if gname:
            sub.suptitle(gname, fontsize=10, fontweight="bold", x=0.01, ha="left")
        sub.colorbar(scalar_mappable(cmap, norm), ax=group_axes, shrink=0.9, aspect=15,
                     label="relative map")
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def _boot_ci(rows: np.ndarray, n_boot: int, level: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over axis 0 (rows: (n, ...))."""
    n = rows.shape[0]
    if n < 2:
        return rows[0].copy(), rows[0].copy()
    flat = rows.reshape(n, -1)
    means = np.empty((n_boot, flat.shape[1]))
    for b0 in range(0, n_boot, 64):
        b1 = min(n_boot, b0 + 64)
        idx = rng.integers(0, n, size=(b1 - b0, n))
        means[b0:b1] = flat[idx].mean(axis=1)
    q = (1 - level) / 2
    lo, hi = np.quantile(means, [q, 1 - q], axis=0)
    return lo.reshape(rows.shape[1:]), hi.reshape(rows.shape[1:])


def plot_class_average(maps, labels=None, *, layout: str | None = None, classes: Sequence[int] | None = None,
                       class_names: Sequence[str] | None = None, channel_names: Sequence[str] | None = None,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0, title: str | None = None):
    """Class-average maps with confidence bands.

    ``maps`` (an Attribution or an array in ``layout``) holds one map per sample; ``labels``
    (default: the Attribution's targets) groups them. For every class the mean map is drawn with
    a percentile bootstrap interval of the mean (``n_boot`` resamples of the class's samples).

    1D signals: a column per class, one row per channel, the mean as a line with its band.
    2D: a column per class with the mean map (and its colorbar) and, as marginal plots, the
    mean map summed over rows (top) and over columns (right), each with its bootstrap band.

    Parameters
    ----------
    maps : Attribution or array
    labels : array (N,) of int, optional
        Default: the Attribution's targets.
    layout : str, optional
    classes : sequence of int, optional
        Classes to draw (default: all present).
    class_names, channel_names : sequence of str, optional
    n_boot : int, default 1000
    level : float, default 0.95
    seed : int, default 0
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        No ``labels`` for an array, a bad ``n_boot`` / ``level``, or a class without samples.
    ShapeError
        ``labels`` not one per map.
    DataError
        Maps with NaN or Inf.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_class_average
    >>> maps = np.random.default_rng(0).random((6, 1, 30))
    >>> fig = plot_class_average(maps, [0, 1, 0, 1, 0, 1], layout="NCL", n_boot=50)
    >>> type(fig).__name__
    'Figure'
    """
    m, lay, targets = _maps_and_layout(maps, layout)
    lab = targets if labels is None else np.asarray(labels).reshape(-1)
    if lab is None:
        raise InputError("labels are needed to group the maps", parameter="labels", expected="one int per map",
                         got=None, fix="pass labels=y, or an Attribution")
    lab = lab.astype(np.int64)
    if lab.shape[0] != m.shape[0]:
        raise ShapeError("one label per map is needed", parameter="labels", expected=f"{m.shape[0]} labels",
                         got=f"{lab.shape[0]} labels", fix="pass labels aligned with the maps")
    wanted = sorted(set(lab.tolist())) if classes is None else [int(k) for k in classes]
    for k in wanted:
        if not np.any(lab == k):
            raise DataError(f"no map of class {k}", parameter="classes", expected="classes present in labels",
                            got=k, fix="drop the class")
    rng = np.random.default_rng(seed)
    cname = (lambda k: class_names[k] if class_names is not None and 0 <= k < len(class_names) else f"class {k}")
    stats = {}
    for k in wanted:
        rows = m[lab == k]
        stats[k] = (rows, rows.mean(axis=0), *_boot_ci(rows, int(n_boot), float(level), rng))
    pct = int(round(level * 100))
    colors = class_colors(max(wanted) + 1 if wanted else 1)
    ncol = min(4, len(wanted))
    nrow = -(-len(wanted) // ncol)
    if lay.rank == 1:
        c, length = m.shape[1], m.shape[2]
        names = channel_labels(channel_names, c)
        fig = new_figure((3.4 * ncol + 0.6, (0.9 * c + 0.9) * nrow + 0.5))
        axes = fig.subplots(nrow * c, ncol, sharex=True, squeeze=False)
        t = np.arange(length)
        for j, k in enumerate(wanted):
            r, col = divmod(j, ncol)
            rows, mean, lo, hi = stats[k]
            for ch in range(c):
                ax = axes[r * c + ch, col]
                ax.fill_between(t, lo[ch], hi[ch], color=colors[k], alpha=0.3, linewidth=0, label=f"{pct}% CI")
                ax.plot(t, mean[ch], color=colors[k], lw=1.2, label="mean")
                if lo[ch].min() < 0 < hi[ch].max():
                    ax.axhline(0, color="0.6", lw=0.5)
                ax.tick_params(labelsize=7)
                ax.set_ylabel(names[ch] if c > 1 else "mean attribution", fontsize=7)
                ax.set_xlabel(TIME_LABEL, fontsize=7)
                if ch == 0:
                    ax.set_title(f"{cname(k)} (n = {len(rows)})", fontsize=9)
        for j in range(len(wanted), nrow * ncol):
            r, col = divmod(j, ncol)
            for ch in range(c):
                axes[r * c + ch, col].set_visible(False)
        axes[0, 0].legend(fontsize=7, loc="upper right")
    else:
        fig = new_figure((4.2 * ncol, 4.0 * nrow + (0.4 if title else 0.0)))
        subs = np.asarray(fig.subfigures(nrow, ncol, squeeze=False))
        vals = np.concatenate([stats[k][1].sum(axis=0).ravel() for k in wanted])
        cm, norm, clabel = attribution_scale(vals, None, "inferno")
        for j, k in enumerate(wanted):
            rows, mean, lo, hi = stats[k]
            sub = subs[divmod(j, ncol)]
            g = sub.add_gridspec(2, 2, width_ratios=(4, 1.3), height_ratios=(1.3, 4))
            ax = sub.add_subplot(g[1, 0])
            top = sub.add_subplot(g[0, 0], sharex=ax)
            right = sub.add_subplot(g[1, 1], sharey=ax)
            img = mean.sum(axis=0)
            ax.imshow(img, cmap=cm, norm=norm, interpolation="nearest", aspect="auto")
            ax.set_xlabel("x / pixel", fontsize=8)
            ax.set_ylabel("y / pixel", fontsize=8)
            ax.tick_params(labelsize=7)
            per = rows.sum(axis=1)  # (n, H, W)
            col_rows, row_rows = per.sum(axis=1), per.sum(axis=2)  # over rows -> (n, W); over columns -> (n, H)
            cl, ch_ = _boot_ci(col_rows, int(n_boot), float(level), rng)
            rl, rh = _boot_ci(row_rows, int(n_boot), float(level), rng)
            xs_ = np.arange(img.shape[1])
            ys_ = np.arange(img.shape[0])
            top.fill_between(xs_, cl, ch_, color=colors[k], alpha=0.3, linewidth=0)
            top.plot(xs_, col_rows.mean(axis=0), color=colors[k], lw=1.2)
            top.set_ylabel("Σ rows", fontsize=7)
            top.tick_params(labelsize=6, labelbottom=False)
            right.fill_betweenx(ys_, rl, rh, color=colors[k], alpha=0.3, linewidth=0)
            right.plot(row_rows.mean(axis=0), ys_, color=colors[k], lw=1.2)
            right.set_xlabel("Σ columns", fontsize=7)
            right.tick_params(labelsize=6, labelleft=False)
            sub.suptitle(f"{cname(k)} (n = {len(rows)}), {pct}% CI", fontsize=9)
            sub.colorbar(scalar_mappable(cm, norm), ax=[ax, right], location="bottom", shrink=0.8, aspect=30,
                         label="mean " + clabel + " (shared scale)")
        for j in range(len(wanted), nrow * ncol):
            subs[divmod(j, ncol)].set_visible(False)
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def plot_metric_comparison(scores, metrics: Sequence[str] | None = None, title: str | None = None):
    """One panel per metric: every method's value with its confidence interval (error bars),
    the best method highlighted. ``scores``: an ``ExplanationScores`` or its ``to_dict()``.

    Parameters
    ----------
    scores : ExplanationScores or dict
    metrics : sequence of str, optional
        Metrics to draw (default: all in ``scores``).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``scores`` is not an ExplanationScores (or its dict), or an unknown metric.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.plot import plot_metric_comparison
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> X = np.random.default_rng(0).normal(size=(4, 1, 16)).astype(np.float32)
    >>> maps = {"saliency": trustmap.explain(net, X, method="saliency"), "random": np.random.rand(4, 1, 16)}
    >>> scores = trustmap.evaluate(net, X, attributions=maps, metrics=["deletion"], n_boot=200, n_perm=200)
    >>> type(plot_metric_comparison(scores)).__name__
    'Figure'
    """
    d = scores.to_dict() if hasattr(scores, "to_dict") else dict(scores)
    try:
        methods, cells = list(d["methods"]), d["cells"]
        hib = d.get("higher_is_better", {})
        mets = list(d["metrics"]) if metrics is None else [str(x) for x in metrics]
    except (KeyError, TypeError) as exc:
        raise InputError("not an explanation score table", parameter="scores",
                         expected="an ExplanationScores or its to_dict()", got=type(scores).__name__,
                         fix="pass trustmap.metrics.evaluate_explanations(...)") from exc
    mets = [m for m in mets if any(_finite(cells[meth].get(m, {}).get("value")) for meth in methods)]
    if not mets or not methods:
        raise InputError("no finite metric value to draw", parameter="scores", expected="at least one value",
                         got=d.get("metrics"), fix="score some explanations first")
    ncol = min(3, len(mets))
    nrow = -(-len(mets) // ncol)
    fig = new_figure((4.2 * ncol, 0.32 * len(methods) * nrow + 1.2 * nrow + 0.4))
    axes = np.asarray(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    pos = np.arange(len(methods))[::-1]
    for ax, met in zip(axes, mets):
        vals = np.array([_num(cells[m].get(met, {}).get("value")) for m in methods])
        lo = np.array([_num(cells[m].get(met, {}).get("low")) for m in methods])
        hi = np.array([_num(cells[m].get(met, {}).get("high")) for m in methods])
        up = bool(hib.get(met, True))
        best = int(np.nanargmax(vals) if up else np.nanargmin(vals))
        err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        err = np.where(np.isfinite(err), err, 0.0)
        colors = ["tab:orange" if i == best else "tab:blue" for i in range(len(methods))]
        ax.barh(pos, np.where(np.isfinite(vals), vals, 0.0), color=colors, alpha=0.35, height=0.7)
        ax.errorbar(vals, pos, xerr=err, fmt="o", color="k", ms=3, capsize=2, lw=1)
        ax.set_yticks(pos)
        ax.set_yticklabels(methods, fontsize=7)
        ax.set_xlabel(f"{met} ({'higher' if up else 'lower'} is better)", fontsize=8)
        ax.set_ylabel("method", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.axvline(0, color="0.6", lw=0.5)
        ax.set_title(f"{met} {'↑' if up else '↓'}", fontsize=9)
    for ax in axes[len(mets):]:
        ax.set_visible(False)
    level = d.get("settings", {}).get("level")
    fig.suptitle(title or (f"Metrics with {int(round(level * 100))}% bootstrap intervals (best in orange)"
                           if level else "Metrics with intervals (best in orange)"), fontsize=10)
    return fig


def _finite(v: Any) -> bool:
    try:
        return v is not None and bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def _num(v: Any) -> float:
    return float(v) if _finite(v) else np.nan


def plot_method_grid(x, maps: Mapping[str, Any], *, index: int = 0, layout: str | None = None,
                     ncols: int | None = None, channel_names: Sequence[str] | None = None,
                     title: str | None = None):
    """Many methods' maps of one sample in a compact grid (the report's "all methods" view).

    ``maps``: method name -> Attribution or array (a batch in ``layout``). Each panel is one
    method; 1D signals have one row per channel inside a panel (the trace over its band), 2D
    the image with the map overlaid (summed over channels). Every map is scaled to its own
    largest ``|value|`` so methods with different units share a colour scale: non-negative maps
    on a sequential scale 0..1, signed maps on a diverging scale -1..1 (a colorbar for each
    kind drawn). ``ncols``: panels per row (default 3 for signals, 5 for images).

    Parameters
    ----------
    x : array
        The input batch in ``layout``.
    maps : dict name -> Attribution or array
    index : int, default 0
    layout : str, optional
    ncols : int, optional
    channel_names : sequence of str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``maps`` empty or ``index`` out of range.
    ShapeError
        A map's shape is not ``x``'s.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_method_grid
    >>> x = np.random.default_rng(0).normal(size=(2, 1, 40))
    >>> fig = plot_method_grid(x, {"a": x, "b": np.abs(x), "c": -x}, layout="NCL")
    >>> type(fig).__name__
    'Figure'
    """
    from matplotlib.colors import Normalize

    from ._style import check_index

    if not isinstance(maps, Mapping) or not maps:
        raise InputError("maps must be a non-empty dict of method name -> map", parameter="maps",
                         expected="{'saliency': attribution, ...}", got=type(maps).__name__,
                         fix="pass a dict with at least one entry")
    items = []
    lay = None
    for name, v in maps.items():
        mi, lay_i, _ = _maps_and_layout(v, layout)
        if lay is None:
            lay = lay_i
        elif lay_i.rank != lay.rank:
            raise ShapeError("maps of different ranks", parameter="maps", expected="all 1D or all 2D",
                             got=f"{name}: {lay_i.name}", fix="pass maps of one input")
        items.append((str(name), mi))
    xs = _internal(x, as_layout(layout) or lay, "x")
    i = check_index(index, xs.shape[0])
    xi = xs[i]
    c = xi.shape[0]
    names = channel_labels(channel_names, c)
    n = len(items)
    k = int(ncols) if ncols else min(n, 3 if lay.rank == 1 else 5)
    nrow = -(-n // k)
    rows_per = c if lay.rank == 1 else 1
    fig = new_figure((3.6 * k + 1.2, ((0.65 * rows_per + 0.75) if lay.rank == 1 else 2.7) * nrow + 0.5))
    grid = fig.add_gridspec(nrow * rows_per, k)
    kinds: dict[str, list] = {"seq": [], "div": []}
    scales = {"seq": (SIGNAL_CMAP if lay.rank == 1 else "inferno", Normalize(0.0, 1.0)),
              "div": (SIGNED_CMAP, Normalize(-1.0, 1.0))}
    for j, (name, mi) in enumerate(items):
        if mi.shape[0] <= i or mi.shape[2:] != xs.shape[2:] or mi.shape[1] not in (1, c):
            raise ShapeError("maps and input differ in shape", parameter=f"maps[{name!r}]",
                             expected=f"a batch shaped like x {xs.shape}", got=f"shape {mi.shape}",
                             fix="pass maps computed on x")
        m = np.broadcast_to(mi[i], xi.shape) if mi.shape[1] == 1 else mi[i]
        m = m / (float(np.nanmax(np.abs(m))) or 1.0)
        kind = "div" if np.nanmin(m) < 0 else "seq"
        cmap, norm = scales[kind]
        r, col = divmod(j, k)
        if lay.rank == 1:
            length = xi.shape[-1]
            for ch in range(c):
                ax = fig.add_subplot(grid[r * rows_per + ch, col])
                tr = xi[ch]
                lo, hi = float(tr.min()), float(tr.max())
                pad = 0.08 * (hi - lo) if hi > lo else 0.1
                ax.imshow(m[ch][None, :], aspect="auto", extent=(-0.5, length - 0.5, lo - pad, hi + pad),
                          origin="lower", cmap=cmap, norm=norm, interpolation="nearest", zorder=0)
                ax.plot(np.arange(length), tr, color="black", lw=0.8, zorder=2)
                ax.set_xlim(-0.5, length - 0.5)
                ax.set_ylim(lo - pad, hi + pad)
                ax.tick_params(labelsize=6)
                ax.set_ylabel(names[ch] if c > 1 else "value", fontsize=7)
                if ch == 0:
                    ax.set_title(name, fontsize=9)
                if ch == c - 1:
                    ax.set_xlabel(TIME_LABEL, fontsize=7)
                else:
                    ax.tick_params(labelbottom=False)
                kinds[kind].append(ax)
        else:
            ax = fig.add_subplot(grid[r, col])
            heat = m.sum(axis=0) if m.shape[0] > 1 else m[0]
            heat = heat / (float(np.nanmax(np.abs(heat))) or 1.0)
            overlay(ax, xi.mean(axis=0), heat, cmap, norm)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("x / pixel", fontsize=7)
            ax.set_ylabel("y / pixel", fontsize=7)
            ax.tick_params(labelsize=6)
            kinds[kind].append(ax)
    every = kinds["seq"] + kinds["div"]
    for kind, axes in kinds.items():
        if axes:  # both scales beside the whole grid (side by side, never overlapping)
            fig.colorbar(scalar_mappable(*scales[kind]), ax=every, shrink=0.6, aspect=25,
                         label="relative map" + (" (signed)" if kind == "div" else ""))
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig
