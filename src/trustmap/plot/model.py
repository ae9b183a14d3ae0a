"""Figures of how a classifier does: training curves, ROC curves, confusion matrix, per-class
accuracy, and a grid of all of them."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from ._style import class_colors, new_figure

__all__ = ["plot_training_curves", "plot_roc", "plot_confusion", "plot_class_accuracy", "plot_model_report"]

_HISTORY_KEYS = ("train_loss", "val_loss", "train_acc", "val_acc")


# ---- inputs -------------------------------------------------------------------------------
def _history(history) -> dict[str, np.ndarray]:
    """``{key: array}`` for the keys the history has (object attributes or dict entries)."""
    if isinstance(history, Mapping):
        get = history.get
    else:
        def get(key, default=None):
            return getattr(history, key, default)
    out = {}
    for key in _HISTORY_KEYS:
        v = get(key, None)
        if v is None:
            continue
        arr = np.asarray(v, dtype=np.float64).reshape(-1)  # None (from JSON) -> NaN
        if np.isfinite(arr).any():  # an all-NaN curve (e.g. no validation set) is not drawn
            out[key] = arr
    if not out:
        raise InputError("the history holds no curves", parameter="history",
                         expected="lists " + ", ".join(_HISTORY_KEYS) + " (attributes or dict keys)",
                         got=type(history).__name__, fix="pass the History returned by the trainer")
    best = get("best_epoch", None)
    n_epochs = max(len(v) for v in out.values())
    if isinstance(best, (int, np.integer)) and 0 <= int(best) < n_epochs:  # -1: not set
        out["best_epoch"] = np.asarray(int(best))
    return out


def _check_report(report) -> Any:
    from ..metrics.model_report import ModelReport

    if not isinstance(report, ModelReport):
        raise InputError("a ModelReport is needed", parameter="report", expected="trustmap.metrics.ModelReport",
                         got=type(report).__name__,
                         fix="make one with trustmap.metrics.model_report(model, X, y) or report_from_scores")
    return report


# ---- drawing on given axes --------------------------------------------------------------------
def _draw_curve_panel(ax, h: dict, kind: str) -> None:
    label = {"loss": "loss", "acc": "accuracy"}[kind]
    drawn = False
    for split, style in (("train", "-"), ("val", "--")):
        key = f"{split}_{kind}"
        if key in h:
            epochs = np.arange(1, h[key].size + 1)
            ax.plot(epochs, h[key], style, marker="o" if h[key].size < 30 else None, ms=3,
                    label="training" if split == "train" else "validation")
            drawn = True
    if "best_epoch" in h and drawn:
        best = int(np.asarray(h["best_epoch"]).reshape(-1)[0])
        ax.axvline(best + 1, color="grey", lw=0.8, ls=":", label=f"best epoch ({best + 1})")
    if not drawn:
        ax.text(0.5, 0.5, f"no {label} recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize="small")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"{label} during training")
    ax.grid(alpha=0.3)


def _draw_roc(ax, report) -> None:
    colors = class_colors(report.n_classes)
    for k, name in enumerate(report.class_names):
        curve = report.roc_curves[k]
        auc = report.roc_auc[k]
        if not np.isfinite(auc):
            ax.plot([], [], color=colors[k], label=f"{name} (AUC undefined)")
            continue
        ax.plot(curve["fpr"], curve["tpr"], color=colors[k], lw=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    macro = report.macro_roc_auc
    ax.set_title("ROC one-vs-rest" + (f" (macro AUC {macro:.3f})" if np.isfinite(macro) else ""))
    ax.legend(fontsize="small" if report.n_classes <= 10 else "x-small", loc="lower right",
              ncol=1 if report.n_classes <= 12 else 2)
    ax.grid(alpha=0.3)


def _draw_confusion(ax, report, normalized: bool):
    k = report.n_classes
    data = report.confusion_normalized if normalized else report.confusion
    vmax = 1.0 if normalized else max(1, int(data.max()))
    im = ax.imshow(data, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    ticks = np.arange(k)
    rotate = max(len(c) for c in report.class_names) > 3 or k > 8
    ax.set_xticks(ticks, report.class_names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_yticks(ticks, report.class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix" + (" (rows sum to 1)" if normalized else " (counts)"))
    if k <= 20:
        size = "medium" if k <= 6 else ("small" if k <= 12 else "x-small")
        for i in range(k):
            for j in range(k):
                v = data[i, j]
                text = f"{v:.2f}" if normalized else f"{int(v)}"
                if normalized and k <= 8:
                    text += f"\n({int(report.confusion[i, j])})"
                ax.text(j, i, text, ha="center", va="center", fontsize=size,
                        color="white" if v > 0.6 * vmax else "black")
    return im


def _draw_class_accuracy(ax, report) -> None:
    k = report.n_classes
    colors = class_colors(k)
    acc = report.class_accuracy
    bars = ax.bar(np.arange(k), acc, color=colors, edgecolor="black", lw=0.5)
    for b, v, s in zip(bars, acc, report.support):
        ax.text(b.get_x() + b.get_width() / 2, v + 0.02, f"{v:.2f}" if s else "n/a", ha="center", va="bottom",
                fontsize="small" if k <= 10 else "x-small")
    ax.axhline(report.accuracy, color="black", lw=1, ls="--")
    rotate = max(len(c) for c in report.class_names) > 3 or k > 8
    ax.set_xticks(np.arange(k), report.class_names, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("true class")
    ax.set_ylabel("accuracy (recall)")
    ax.set_title(f"accuracy per class (dashed: overall {report.accuracy:.3f})")
    ax.grid(axis="y", alpha=0.3)


# ---- public ---------------------------------------------------------------------------------
def plot_training_curves(history):
    """Loss and accuracy per epoch (training solid, validation dashed); returns a Figure.

    ``history``: an object with lists ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``
    (missing or all-NaN ones are skipped), or a dict of them (e.g. ``History.to_dict()``);
    a ``best_epoch`` (0-based, ``-1`` for none) is marked.

    Parameters
    ----------
    history : History or dict

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``history`` has none of the four lists.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> from trustmap.plot import plot_training_curves
    >>> fig = plot_training_curves({"train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.7, 0.6],
    ...                             "train_acc": [0.5, 0.7, 0.8], "val_acc": [0.5, 0.6, 0.7], "best_epoch": 2})
    >>> type(fig).__name__
    'Figure'
    """
    h = _history(history)
    fig = new_figure((10.0, 3.8))
    ax_loss, ax_acc = fig.subplots(1, 2)
    _draw_curve_panel(ax_loss, h, "loss")
    _draw_curve_panel(ax_acc, h, "acc")
    return fig


def plot_roc(report):
    """One ROC curve per class (one-vs-rest) with its AUC in the legend; returns a Figure.

    Parameters
    ----------
    report : ModelReport or its ``to_dict()``

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``report`` is not a model report.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> from trustmap.metrics import report_from_scores
    >>> from trustmap.plot import plot_roc
    >>> r = report_from_scores([0, 1, 1, 0], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> type(plot_roc(r)).__name__
    'Figure'
    """
    report = _check_report(report)
    fig = new_figure((5.6, 5.2))
    _draw_roc(fig.subplots(), report)
    return fig


def plot_confusion(report, normalized: bool = True):
    """Confusion matrix (rows: true class) with annotated cells and a colorbar; returns a Figure.

    Parameters
    ----------
    report : ModelReport or its ``to_dict()``
    normalized : bool, default True
        Colour by each true class's share (counts are still written in the cells).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``report`` is not a model report.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> from trustmap.metrics import report_from_scores
    >>> from trustmap.plot import plot_confusion
    >>> r = report_from_scores([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["cat", "dog"])
    >>> type(plot_confusion(r, normalized=False)).__name__
    'Figure'
    """
    report = _check_report(report)
    k = report.n_classes
    side = min(12.0, 3.5 + 0.55 * k)
    fig = new_figure((side + 1.2, side))
    ax = fig.subplots()
    im = _draw_confusion(ax, report, normalized)
    fig.colorbar(im, ax=ax, label="fraction of the true class" if normalized else "samples", shrink=0.85)
    return fig


def plot_class_accuracy(report):
    """Accuracy (recall) of each class as bars, with the overall accuracy; returns a Figure.

    Parameters
    ----------
    report : ModelReport or its ``to_dict()``

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``report`` is not a model report.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> from trustmap.metrics import report_from_scores
    >>> from trustmap.plot import plot_class_accuracy
    >>> r = report_from_scores([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> type(plot_class_accuracy(r)).__name__
    'Figure'
    """
    report = _check_report(report)
    fig = new_figure((max(5.0, 1.2 + 0.55 * report.n_classes), 4.0))
    _draw_class_accuracy(fig.subplots(), report)
    return fig


def plot_model_report(report, history=None):
    """A grid: training curves (when ``history`` is given) above ROC, confusion matrix and
    per-class accuracy; returns a Figure.

    Parameters
    ----------
    report : ModelReport or its ``to_dict()``
    history : History or dict, optional
        As :func:`plot_training_curves`.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        ``report`` is not a model report, or ``history`` has none of its lists.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> from trustmap.metrics import report_from_scores
    >>> from trustmap.plot import plot_model_report
    >>> r = report_from_scores([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> type(plot_model_report(r)).__name__
    'Figure'
    """
    report = _check_report(report)
    h = _history(history) if history is not None else None
    k = report.n_classes
    width = max(16.0, 3 * (3.5 + 0.45 * k))
    bottom = width / 3 * 0.85
    kinds = [kind for kind in ("loss", "acc") if h is not None and any(f"{s}_{kind}" in h for s in ("train", "val"))]
    top = 3.8 if kinds else 0.0
    fig = new_figure((width, bottom + top + 0.6))
    if kinds:
        gs = fig.add_gridspec(2, 6, height_ratios=[top, bottom])
        span = 6 // len(kinds)
        for i, kind in enumerate(kinds):
            _draw_curve_panel(fig.add_subplot(gs[0, i * span:(i + 1) * span]), h, kind)
        row = 1
    else:
        gs = fig.add_gridspec(1, 6)
        row = 0
    _draw_roc(fig.add_subplot(gs[row, 0:2]), report)
    ax_cm = fig.add_subplot(gs[row, 2:4])
    im = _draw_confusion(ax_cm, report, normalized=True)
    fig.colorbar(im, ax=ax_cm, label="fraction of the true class", shrink=0.8)
    _draw_class_accuracy(fig.add_subplot(gs[row, 4:6]), report)
    fig.suptitle(f"{report.n} samples, {k} classes: accuracy {report.accuracy:.3f}"
                 + (f", macro ROC-AUC {report.macro_roc_auc:.3f}" if np.isfinite(report.macro_roc_auc) else "")
                 + f", macro F1 {report.macro['f1']:.3f}")
    return fig
