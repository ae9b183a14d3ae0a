"""How well a classifier does: accuracy, ROC-AUC, confusion matrix, precision / recall / F1.

Everything is computed with numpy from true labels and class scores (the tests check each
number against scikit-learn). :func:`model_report` runs a model on data first;
:func:`report_from_scores` takes scores you already have.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..labels import check_labels
from ..errors import DataError, RunDirError, ShapeError

__all__ = ["ModelReport", "model_report", "report_from_scores", "roc_curve", "roc_auc"]

_FORMAT = "trustmap.model_report/1"


# ---- binary building blocks -------------------------------------------------------------
def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve for binary ``y_true`` (bool/0-1) from the rank-sum statistic.

    Tied scores get their average rank, so a tie between a positive and a negative counts
    one half (the Mann-Whitney U). NaN when only one of the two classes is present.

    Parameters
    ----------
    y_true : array (N,) of bool or 0/1
    score : array (N,)
        Larger means "more positive".

    Returns
    -------
    float
        The AUC in [0, 1], or NaN.

    Examples
    --------
    >>> from trustmap.metrics import roc_auc
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``, ties sharing the mean of the ranks they span."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end), 1-based
    run_of = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = mean_rank[run_of]
    return ranks


def roc_curve(y_true: np.ndarray, score: np.ndarray, drop_intermediate: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` like ``sklearn.metrics.roc_curve``.

    Thresholds decrease; the first is ``inf`` (nothing predicted positive). With
    ``drop_intermediate`` points on a straight segment are dropped (they do not change the
    curve or its area). A rate is NaN when its class has no samples.

    Parameters
    ----------
    y_true : array (N,) of bool or 0/1
    score : array (N,)
    drop_intermediate : bool, default True

    Returns
    -------
    fpr, tpr, thresholds : ndarray
        False and true positive rates at each threshold, and the thresholds.

    Examples
    --------
    >>> from trustmap.metrics import roc_curve
    >>> fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y = np.asarray(y_true).astype(bool).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last_of_run]
    fps = 1.0 + last_of_run - tps
    thresholds = s[last_of_run]
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps = np.r_[0.0, fps]
    tps = np.r_[0.0, tps]
    thresholds = np.r_[np.inf, thresholds]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---- the report --------------------------------------------------------------------------
@dataclass
class ModelReport:
    """Evaluation numbers of a classifier on one data set.

    Per-class arrays have length ``n_classes`` and follow ``class_names``. ``confusion`` has
    the true class in rows and the predicted class in columns. ``roc_curves[k]`` is a dict
    with ``fpr``, ``tpr``, ``thresholds`` (one-vs-rest for class ``k``). Build one with
    :func:`model_report` or :func:`report_from_scores`; :meth:`save` / :meth:`load` keep it as JSON.

    Parameters
    ----------
    n, n_classes : int
        Samples and classes.
    class_names : list of str
    accuracy, macro_roc_auc, weighted_roc_auc : float
    class_accuracy, roc_auc, precision, recall, f1, support : ndarray (n_classes,)
    roc_curves : list of dict
    confusion, confusion_normalized : ndarray (n_classes, n_classes)
        Counts, and counts divided by each true class's support.
    macro, weighted : dict of str to float
        Averages of precision, recall and F1.

    Raises
    ------
    RunDirError
        From :meth:`load`: the file is missing, corrupt or not a model report.

    Examples
    --------
    >>> from trustmap.metrics import report_from_scores
    >>> r = report_from_scores([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["a", "b"])
    >>> r.confusion.tolist()
    [[1, 0], [1, 1]]
    >>> r.recall.tolist()
    [1.0, 0.5]
    """

    n: int
    n_classes: int
    class_names: list[str]
    accuracy: float
    class_accuracy: np.ndarray
    roc_auc: np.ndarray
    roc_curves: list[dict[str, np.ndarray]]
    macro_roc_auc: float
    weighted_roc_auc: float
    confusion: np.ndarray
    confusion_normalized: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    macro: dict[str, float] = field(default_factory=dict)
    weighted: dict[str, float] = field(default_factory=dict)

    # ---- persistence ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN and ``inf`` become ``null``; :meth:`from_dict` restores them)."""
        return _io.to_jsonable({
            "format": _FORMAT,
            "n": self.n,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "accuracy": self.accuracy,
            "class_accuracy": self.class_accuracy,
            "roc_auc": self.roc_auc,
            "roc_curves": [{k: c[k] for k in ("fpr", "tpr", "thresholds")} for c in self.roc_curves],
            "macro_roc_auc": self.macro_roc_auc,
            "weighted_roc_auc": self.weighted_roc_auc,
            "confusion": self.confusion,
            "confusion_normalized": self.confusion_normalized,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "macro": self.macro,
            "weighted": self.weighted,
        })

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelReport":
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise RunDirError("not a trustmap model report", parameter="path", expected=_FORMAT,
                              got=d.get("format") if isinstance(d, dict) else type(d).__name__,
                              fix="pass a file written by ModelReport.save")

        def arr(v) -> np.ndarray:  # JSON null -> NaN
            return np.array(v, dtype=np.float64)

        def fl(v) -> float:
            return math.nan if v is None else float(v)

        curves = []
        for c in d["roc_curves"]:
            thr = arr(c["thresholds"])
            if thr.size:
                thr[0] = np.inf
            curves.append({"fpr": arr(c["fpr"]), "tpr": arr(c["tpr"]), "thresholds": thr})
        k = int(d["n_classes"])
        return cls(
            n=int(d["n"]), n_classes=k, class_names=[str(c) for c in d["class_names"]],
            accuracy=fl(d["accuracy"]), class_accuracy=arr(d["class_accuracy"]), roc_auc=arr(d["roc_auc"]),
            roc_curves=curves, macro_roc_auc=fl(d["macro_roc_auc"]), weighted_roc_auc=fl(d["weighted_roc_auc"]),
            confusion=np.array(d["confusion"], dtype=np.int64).reshape(k, k),
            confusion_normalized=arr(d["confusion_normalized"]).reshape(k, k),
            precision=arr(d["precision"]), recall=arr(d["recall"]), f1=arr(d["f1"]),
            support=np.array(d["support"], dtype=np.int64),
            macro={m: fl(v) for m, v in d["macro"].items()},
            weighted={m: fl(v) for m, v in d["weighted"].items()},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON, atomically."""
        return _io.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelReport":
        """Read a report written by :meth:`save`.

        Raises
        ------
        RunDirError
            The file is missing, corrupt or not a model report.
        """
        path = Path(path)
        if not path.exists():
            raise RunDirError("model report file is missing", parameter="path", got=str(path),
                              expected="a JSON file written by ModelReport.save", fix="check the path")
        try:
            d = _io.read_json(path)
            return cls.from_dict(d)
        except RunDirError:
            raise
        except Exception as exc:
            raise RunDirError(f"model report file is corrupt ({type(exc).__name__}: {exc})", parameter="path",
                              got=str(path), fix="write the report again with ModelReport.save") from exc

    # ---- text ----------------------------------------------------------------------
    def summary(self) -> str:
        """A plain-text table: overall numbers, one row per class, the averages, the confusion matrix."""
        name_w = max([len("weighted avg")] + [len(c) for c in self.class_names])

        def num(v: float) -> str:
            return "   n/a" if v is None or not np.isfinite(v) else f"{v:6.3f}"

        lines = [
            f"samples: {self.n}   classes: {self.n_classes}",
            f"accuracy: {self.accuracy:.4f}   ROC-AUC macro: {num(self.macro_roc_auc).strip()}"
            f"   weighted: {num(self.weighted_roc_auc).strip()}",
            "",
            f"{'class':<{name_w}}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'ROC-AUC':>7}  {'support':>7}",
        ]
        for k, name in enumerate(self.class_names):
            lines.append(f"{name:<{name_w}}  {num(self.precision[k]):>9}  {num(self.recall[k]):>6}  "
                         f"{num(self.f1[k]):>6}  {num(self.roc_auc[k]):>7}  {int(self.support[k]):>7}")
        total = int(self.support.sum())
        for label, avg, auc in (("macro avg", self.macro, self.macro_roc_auc),
                                ("weighted avg", self.weighted, self.weighted_roc_auc)):
            lines.append(f"{label:<{name_w}}  {num(avg['precision']):>9}  {num(avg['recall']):>6}  "
                         f"{num(avg['f1']):>6}  {num(auc):>7}  {total:>7}")
        lines += ["", "confusion matrix (rows: true, columns: predicted)"]
        cell = max(5, max(len(str(int(v))) for v in self.confusion.ravel()) + 1,
                   max(len(c) for c in self.class_names) + 1)
        lines.append(" " * name_w + "".join(f"{c[:cell - 1]:>{cell}}" for c in self.class_names))
        for k, name in enumerate(self.class_names):
            lines.append(f"{name:<{name_w}}" + "".join(f"{int(v):>{cell}}" for v in self.confusion[k]))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# ---- entry points ---------------------------------------------------------------------------
def report_from_scores(y_true, probs, class_names: Sequence[str] | None = None) -> ModelReport:
    """A :class:`ModelReport` from true labels and per-class scores.

    Parameters
    ----------
    y_true : array (N,) of class indices, or (N, K) one-hot
    probs : array (N, K)
        Class probabilities or any scores where larger means "more this class"; the
        prediction is the argmax. A 1-D array is read as the probability of class 1 of a
        two-class problem.
    class_names : K names, optional

    Returns
    -------
    ModelReport

    Raises
    ------
    ShapeError
        ``probs`` is not one row per sample and one column per class, labels of another length,
        or not one class name per class.
    DataError
        ``probs`` is ragged, not numeric, or has NaN or Inf.
    LabelError
        ``y_true`` is not class indices in ``0..K-1`` (or one-hot rows).

    Examples
    --------
    >>> from trustmap.metrics import report_from_scores
    >>> r = report_from_scores([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> round(r.accuracy, 3), r.class_names
    (0.667, ['0', '1'])
    """
    return _build(y_true, probs, class_names, stacklevel=3)


def _build(y_true, probs, class_names, stacklevel: int) -> ModelReport:
    p = _check_scores(probs)
    n, k = p.shape
    y = _check_labels(y_true, n, k)
    names = _check_names(class_names, k)

    pred = p.argmax(1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    tp = np.diag(confusion).astype(np.float64)
    fp = predicted - tp
    fn = support - tp

    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    confusion_normalized = _safe_div(confusion, support[:, None])
    weights = support / support.sum()
    macro = {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}
    weighted = {"precision": float(weights @ precision), "recall": float(weights @ recall),
                "f1": float(weights @ f1)}

    aucs = np.empty(k, dtype=np.float64)
    curves: list[dict[str, np.ndarray]] = []
    undefined = []
    for c in range(k):
        pos = y == c
        aucs[c] = roc_auc(pos, p[:, c])
        fpr, tpr, thr = roc_curve(pos, p[:, c])
        curves.append({"fpr": fpr, "tpr": tpr, "thresholds": thr})
        if not np.isfinite(aucs[c]):
            undefined.append(f"{names[c]} ({'absent' if support[c] == 0 else 'the only class present'})")
    if undefined:
        warnings.warn("ROC-AUC is undefined (NaN) for class(es) " + ", ".join(undefined) +
                      ": one-vs-rest needs samples of the class and of the others; the averages skip them",
                      stacklevel=stacklevel)
    ok = np.isfinite(aucs)
    macro_auc = float(aucs[ok].mean()) if ok.any() else math.nan
    weighted_auc = float(np.average(aucs[ok], weights=support[ok])) if ok.any() else math.nan

    return ModelReport(
        n=int(n), n_classes=int(k), class_names=names, accuracy=float((pred == y).mean()),
        class_accuracy=recall.copy(), roc_auc=aucs, roc_curves=curves, macro_roc_auc=macro_auc,
        weighted_roc_auc=weighted_auc, confusion=confusion, confusion_normalized=confusion_normalized,
        precision=precision, recall=recall, f1=f1, support=support.astype(np.int64), macro=macro,
        weighted=weighted,
    )


def model_report(model, X, y, *, layout=None, class_names: Sequence[str] | None = None,
                 batch_size: int | None = None) -> ModelReport:
    """Run ``model`` on ``X`` and report how well it predicts ``y``.

    ``model`` is anything :func:`trustmap.load_model` accepts; ``X`` is in the caller's layout
    (pass ``layout=`` when it is ambiguous); ``y`` holds class indices or one-hot rows.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
    X : array
        Inputs in the caller's layout.
    y : array (N,) of class indices, or (N, K) one-hot
    layout : str, optional
    class_names : K names, optional
    batch_size : int, optional
        Forward-pass batch size (default: the model's memory budget).

    Returns
    -------
    ModelReport

    Raises
    ------
    ModelLoadError
        ``model`` cannot be loaded.
    ShapeError, LayoutError
        ``X`` does not fit the model.
    LabelError
        ``y`` is not class indices of the model's classes.
    NonFiniteError
        The model's scores are NaN or Inf.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from trustmap.metrics import model_report
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3, padding=1), torch.nn.AdaptiveAvgPool1d(1),
    ...                           torch.nn.Flatten())
    >>> X = np.random.default_rng(0).normal(size=(6, 1, 16)).astype(np.float32)
    >>> r = model_report(net, X, [0, 1, 0, 1, 0, 1])
    >>> r.n, r.n_classes, int(r.confusion.sum())
    (6, 2, 6)
    """
    from ..models import load_model

    m = load_model(model)
    probs = m.probs(X, layout, batch_size=batch_size)
    return _build(y, probs, class_names, stacklevel=3)


# ---- validation -------------------------------------------------------------------------------
def _to_numpy(a, parameter: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        arr = np.asarray(a)
    except ValueError as exc:
        raise DataError("ragged input", parameter=parameter, expected="a rectangular array",
                        got="sequences of different lengths", fix="pass a numpy array") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError("array is not numeric", parameter=parameter, expected="numbers", got=str(arr.dtype),
                        fix="convert with np.asarray(..., dtype=float)")
    return arr


def _check_scores(probs) -> np.ndarray:
    p = _to_numpy(probs, "probs").astype(np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ShapeError("scores must be one row per sample and one column per class", parameter="probs",
                         expected="(N, K) with N >= 1 and K >= 2, or (N,) probabilities of class 1",
                         got=f"shape {p.shape}", fix="pass model.probs(X)")
    if not np.isfinite(p).all():
        raise DataError("scores contain NaN or Inf", parameter="probs", expected="finite values",
                        got=f"{int((~np.isfinite(p)).sum())} non-finite value(s)",
                        fix="check the model's outputs for these samples")
    return p


def _check_labels(y_true, n: int, k: int) -> np.ndarray:
    return check_labels(y_true, n, k, parameter="y", classes_desc=f"scores with {k} columns")


def _check_names(class_names, k: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(k)]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ShapeError("one class name per class is needed", parameter="class_names",
                         expected=f"{k} names", got=f"{len(names)} names",
                         fix="pass as many names as the scores have columns")
    return names
