"""End-to-end jobs behind the CLI: train a reference model, evaluate a model, the demo.

Each returns plain results and writes its files atomically; the CLI only parses arguments
and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from .errors import InputError

__all__ = ["default_architecture", "train", "evaluate", "demo", "TrainResult", "DemoResult", "DEMO_SETTINGS",
           "write_model_report", "validation_rows", "holdout_of"]


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured.

    Parameters
    ----------
    out_dir : Path
        The output folder.
    model_path : Path
        The trained model (``model.safetensors``; its record is the ``.json`` beside it).
    report : ModelReport
        The model report (on the test split, else on the training data).
    history : History
        The training history (losses and accuracies per epoch).
    files : list of Path
        Every file written.

    Examples
    --------
    >>> from trustmap.workflows import train
    >>> res = train(dataset="mnist1d", out_dir="runs/train", epochs=1)  # doctest: +SKIP
    >>> res.to_dict()["model"]  # doctest: +SKIP
    'runs/train/model.safetensors'
    """

    out_dir: Path
    model_path: Path
    report: Any
    history: Any
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "model": str(self.model_path),
                "accuracy": float(self.report.accuracy), "files": [str(f) for f in self.files],
                "epochs": len(self.history.train_loss) if self.history is not None else None}


def _dataset(dataset: str | None, data, *, split: str, seed: int, layout: str | None, labels=None,
             classes=None):
    """A built-in dataset or a data file as a Dataset (through the one data entry, :func:`trustmap.jobs.open_data`)."""
    from .jobs import ArraySource, open_data

    if (dataset is None) == (data is None):
        from . import datasets

        raise InputError("give exactly one of a built-in dataset or a data file", parameter="dataset/data",
                         expected="dataset='mnist1d' or data='beats.csv'",
                         got=f"dataset={dataset!r}, data={data!r}",
                         fix="pass one of them (built-in names: " + ", ".join(datasets.NAMES) + ")")
    src = open_data(data, dataset=dataset, split=split, seed=seed, layout=layout, labels=labels, classes=classes)
    assert isinstance(src, ArraySource)
    ds = src.dataset
    if src.y is not None and (ds.y is None or not np.array_equal(ds.y, src.y)):
        ds = ds.subset(np.arange(len(ds.X)))
        ds.y = src.y
    ds.classes = list(src.classes)
    ds.meta = {**ds.meta, "labels_source": src.labels_source}
    return ds


def default_architecture(channels: int, spatial: tuple[int, ...], n_classes: int) -> tuple[str, dict]:
    """The zoo network that suits data of this shape: MNIST-1D CNN for one-channel signals,
    the FCN for multi-channel signals, the 2D CNN for images.

    Parameters
    ----------
    channels : int
        Input channels.
    spatial : tuple of int
        The spatial shape: ``(length,)`` for signals, ``(height, width)`` for images.
    n_classes : int
        Number of classes.

    Returns
    -------
    tuple of (str, dict)
        The zoo name and its keyword arguments for :func:`trustmap.zoo.build`.

    Examples
    --------
    >>> from trustmap.workflows import default_architecture
    >>> default_architecture(1, (40,), 10)
    ('mnist1d_cnn', {'n_classes': 10, 'length': 40})
    >>> default_architecture(3, (28, 28), 2)[0]
    'mnist2d_cnn'
    """
    if len(spatial) == 2:
        return "mnist2d_cnn", {"in_channels": channels, "size": tuple(spatial), "n_classes": n_classes}
    if channels == 1:
        return "mnist1d_cnn", {"n_classes": n_classes, "length": int(spatial[0])}
    return "ecg_fcn", {"in_channels": channels, "length": int(spatial[0]), "n_classes": n_classes}


def _figures(out_dir: Path, report, history) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from .plot import plot_model_report

    fig = plot_model_report(report, history=history)
    path = out_dir / "model_report.png"
    with _io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return [path]


def write_model_report(out_dir: str | os.PathLike, report, history=None) -> list[Path]:
    """``report.json``, ``report.txt``, ``history.json`` (when given) and ``model_report.png`` in ``out_dir``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The output folder.
    report : ModelReport
        A model report (:func:`trustmap.metrics.model_report`).
    history : History, optional
        A training history; written to ``history.json`` and drawn in the figure.

    Returns
    -------
    list of Path
        The files written (no figure without matplotlib).

    Examples
    --------
    >>> import tempfile, numpy as np, torch, trustmap
    >>> from trustmap.metrics import model_report
    >>> from trustmap.workflows import write_model_report
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), input_shape=(1, 4))
    >>> X, y = np.random.default_rng(0).normal(size=(8, 1, 4)).astype(np.float32), np.array([0, 1] * 4)
    >>> files = write_model_report(tempfile.mkdtemp(), model_report(model, X, y))
    >>> [f.name for f in files][:2]
    ['report.json', 'report.txt']
    """
    out_dir = Path(out_dir)
    files = [_io.write_json(out_dir / "report.json", report.to_dict())]
    files.append(_io.write_text(out_dir / "report.txt", report.summary() + "\n"))
    if history is not None:
        files.append(_io.write_json(out_dir / "history.json", history.to_dict()))
    return files + _figures(out_dir, report, history)


def validation_rows(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """The rows :class:`trustmap.zoo.Trainer` holds out for validation (early stopping) when it is not
    given ``X_val``: the same seeded draw, so they can be recorded (and later used to fit the localizer
    on data the classifier was not trained on).

    Parameters
    ----------
    n : int
        Number of training rows.
    val_fraction : float
        The trainer's validation fraction.
    seed : int
        The trainer's seed.

    Returns
    -------
    numpy.ndarray
        The sorted int64 row indices (empty when no row, or every row, would be held out).

    Examples
    --------
    >>> from trustmap.workflows import validation_rows
    >>> len(validation_rows(100, 0.1, 0))
    10
    >>> validation_rows(100, 0.0, 0).size
    0
    """
    import torch

    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        return np.zeros(0, dtype=np.int64)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return np.sort(perm[:n_val].numpy().astype(np.int64))


def holdout_of(model, dataset: str | None) -> dict | None:
    """The validation rows a model trained by :func:`train` did not train on (``{"split", "rows", "seed"}``),
    when the model file records them for this ``dataset``; else None.

    Parameters
    ----------
    model : str, os.PathLike or object
        A model file (anything else gives None).
    dataset : str or None
        The built-in dataset the rows must belong to.

    Returns
    -------
    dict or None
        The record's ``meta.holdout``, or None.

    Examples
    --------
    >>> from trustmap.workflows import holdout_of
    >>> holdout_of("no/such/model.safetensors", "mnist1d") is None
    True
    """
    if not isinstance(model, (str, os.PathLike)) or dataset is None:
        return None
    p = Path(model)
    if p.suffix != ".safetensors" or not p.with_suffix(".json").is_file():
        return None
    try:
        from . import zoo

        meta = (zoo.read_info(p).get("meta") or {})
    except Exception:  # not a zoo model record
        return None
    hold = meta.get("holdout")
    if isinstance(hold, dict) and hold.get("dataset") == dataset and hold.get("rows"):
        return hold
    return None


def train(*, dataset: str | None = "mnist1d", data: str | None = None, test_data: str | None = None,
          arch: str | None = None, out_dir: str | os.PathLike = "runs/train", epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, patience: int | None = None, seed: int = 0,
          layout: str | None = None, progress: bool = True, meta: dict | None = None, labels=None,
          classes=None) -> TrainResult:
    """Train a zoo network on a built-in dataset (or data files) and write model + report.

    Training settings left ``None`` come from ``zoo.RECIPES`` for the architecture (the measured
    fast recipe for the MNIST-1D CNN), else from ``zoo.Trainer``'s defaults. The validation rows the
    trainer sets aside (for early stopping; never trained on) are recorded in the model's record
    (``meta.holdout``) and ``run.json``: ``trustmap locate`` fits the localizer on them.

    Parameters
    ----------
    dataset : str or None, default "mnist1d"
        A built-in dataset; its test split gives the report. Give exactly one of ``dataset`` and ``data``.
    data, test_data : str, optional
        A data file to train on, and one to report on (else the report is on the training data).
    arch : str, optional
        A zoo architecture (default: :func:`default_architecture` for the data's shape).
    out_dir : str or os.PathLike, default "runs/train"
        The output folder.
    epochs, batch_size, lr, patience : optional
        Training settings (default: the recipe, else the trainer's defaults).
    seed : int, default 0
        Seed of the weights, the validation split and the data.
    layout : str, optional
        The data's layout.
    progress : bool, default True
        Show progress bars.
    meta : dict, optional
        Extra entries for the model record's ``meta``.
    labels, classes : optional
        Labels for ``data`` and class names.

    Returns
    -------
    TrainResult
        The model, the report, the history and the files written.

    Raises
    ------
    InputError
        Both or neither of ``dataset`` and ``data``, or unlabeled training data.

    Examples
    --------
    >>> from trustmap.workflows import train
    >>> res = train(dataset="mnist1d", out_dir="runs/train", epochs=1, progress=False)  # doctest: +SKIP
    >>> res.report.accuracy  # doctest: +SKIP
    """
    import torch

    from . import zoo
    from .jobs import new_record
    from .layout import as_layout
    from .metrics import model_report

    train_set = _dataset(dataset, data, split="train", seed=seed, layout=layout, labels=labels, classes=classes)
    if train_set.y is None:
        raise InputError("the dataset has no labels", parameter="dataset", expected="a labeled dataset",
                         got=train_set.name, fix="pick a labeled dataset (e.g. mnist1d) or pass labels (--labels)")
    if dataset is not None:
        test_set = _dataset(dataset, None, split="test", seed=seed, layout=None, classes=classes)
    elif test_data is not None:
        test_set = _dataset(None, test_data, split="test", seed=seed, layout=layout, classes=classes)
    else:
        test_set = None
    lay = as_layout(train_set.layout)
    internal = lay.to_internal(train_set.X)
    n_classes = max(len(train_set.classes), int(train_set.y.max()) + 1)
    name, kwargs = default_architecture(internal.shape[1], tuple(internal.shape[2:]), n_classes)
    if arch is not None:
        name = arch
    torch.manual_seed(seed)
    module = zoo.build(name, **kwargs)
    settings = dict(zoo.RECIPES.get(name, {}))
    settings.update({k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience).items()
                     if v is not None})
    trainer = zoo.Trainer(**settings, seed=seed, progress=progress)
    history = trainer.fit(module, train_set.X, train_set.y, layout=train_set.layout)
    val = validation_rows(len(train_set.X), float(getattr(trainer, "val_fraction", 0.0) or 0.0), seed)
    holdout = {"dataset": train_set.name if dataset is not None else None, "split": "train", "seed": seed,
               "rows": val.tolist(), "n": int(len(val)),
               "data_sha256": _io.fingerprint_array(np.ascontiguousarray(train_set.X[val])) if len(val) else None,
               "role": "validation (early stopping); never trained on"}
    out = Path(out_dir)
    model_path = zoo.save(module, out / "model.safetensors", history=history, classes=list(train_set.classes),
                          meta={"dataset": train_set.name, "seed": seed, "holdout": holdout, **(meta or {})})
    eval_set = test_set if test_set is not None else train_set
    report = model_report(module, eval_set.X, eval_set.y, layout=eval_set.layout,
                          class_names=list(train_set.classes) or None)
    files = [model_path, model_path.with_suffix(".json")] + write_model_report(out, report, history)
    from .models import load_model

    m = load_model(module)
    rec = new_record("train", model=model_path, m=m, arch=name, config=kwargs,
                     data={"name": train_set.name, "n": int(len(train_set.X)), "layout": train_set.layout,
                           "fingerprint": _io.fingerprint_array(np.ascontiguousarray(train_set.X))},
                     labels={"source": train_set.meta.get("labels_source") or "data"},
                     classes=list(train_set.classes), settings={**settings, "seed": seed},
                     holdout={k: v for k, v in holdout.items() if k != "rows"},
                     evaluated_on="test split" if test_set is not None else "the training data")
    rec["files"].update({"model_report": "report.json", "history": "history.json", "report_txt": "report.txt"})
    if (out / "model_report.png").exists():
        rec["files"]["model_report_png"] = "model_report.png"
    files.append(_io.write_json(out / "run.json", rec))
    return TrainResult(out, model_path, report, history, files)


def evaluate(model, *, dataset: str | None = None, data: str | None = None, split: str = "test",
             out_dir: str | os.PathLike | None = None, layout: str | None = None, seed: int = 0,
             history=None, labels=None, classes=None):
    """Model report (accuracy, class-wise accuracy, ROC-AUC, confusion, P/R/F1) on labeled data;
    returns ``(report, files)`` (the job: :func:`trustmap.jobs.commands.evaluate`).

    Parameters
    ----------
    model : str, os.PathLike or model object
        The model.
    dataset : str, optional
        A built-in dataset; or give ``data``.
    data : str, optional
        A labeled data file.
    split : str, default "test"
        The built-in dataset's split.
    out_dir : str or os.PathLike, optional
        Where to write the report files (none written when None).
    layout : str, optional
        The data's layout.
    seed : int, default 0
        The dataset's seed.
    history : History, optional
        A training history drawn in the figure.
    labels, classes : optional
        Labels for ``data`` and class names.

    Returns
    -------
    tuple of (ModelReport, list of Path)
        The report and the files written.

    Examples
    --------
    >>> from trustmap.workflows import evaluate
    >>> report, files = evaluate("runs/train/model.safetensors", dataset="mnist1d")  # doctest: +SKIP
    """
    from .jobs.commands import evaluate as job

    res = job(model, data, out_dir, dataset=dataset, split=split, layout=layout, seed=seed, history=history,
              labels=labels, classes=classes)
    return res["report"], [Path(f) for f in res["files"]]


# ---- the demo ------------------------------------------------------------------------------------
#: sizes of the demo's steps; ``quick`` is the smallest setting (tests, CI)
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"n_explain": 200, "n_fit": 4000, "loc_epochs": 20, "train_epochs": None, "n_boot": 1000,
             "n_perm": 2000, "gallery": 3, "steps": "auto"},
    "quick": {"n_explain": 24, "n_fit": 600, "loc_epochs": 2, "train_epochs": 2, "n_boot": 200, "n_perm": 200,
              "gallery": 2, "steps": 20},
}


@dataclass
class DemoResult:
    """What :func:`demo` wrote and measured.

    Parameters
    ----------
    out_dir : Path
        The run directory.
    report_path : Path or None
        ``report.html`` (None when the report was not asked for).
    model_path : Path or None
        The model trained here (None when the user gave a model).
    report : ModelReport or None
        The model report (None for unlabeled data).
    manifest : dict
        The run's record (``run.json``).
    files : list of Path
        Every file written.
    failures : list of dict
        ``{"step", "error"}`` for each step that failed (empty when all ran).

    Examples
    --------
    >>> from trustmap.workflows import demo
    >>> res = demo(out_dir="runs/demo", quick=True)  # doctest: +SKIP
    >>> print(res.summary())  # doctest: +SKIP
    """

    out_dir: Path
    report_path: Path | None
    model_path: Path | None
    report: Any
    manifest: dict
    files: list[Path] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        model = self.model_path if self.model_path is not None else (self.manifest.get("model") or {}).get("file")
        return {"out_dir": str(self.out_dir), "report": None if self.report_path is None else str(self.report_path),
                "model": None if model is None else str(model), "failures": list(self.failures),
                "labels": (self.manifest.get("labels") or {}).get("source"),
                "accuracy": None if self.report is None else float(self.report.accuracy),
                "methods": list(self.manifest.get("attributions", {})),
                "timings": self.manifest.get("timings", {}), "notes": self.manifest.get("notes", []),
                "files": [str(f) for f in self.files]}

    def summary(self) -> str:
        lines = []
        if self.report is not None:
            lines.append(f"test accuracy {self.report.accuracy:.3f}")
        lines.append(f"explainers: {', '.join(self.manifest.get('attributions', {})) or 'none'}")
        loc = self.manifest.get("localizer")
        if loc:
            r2 = loc["r2"]
            ext = int(loc.get("tau_grid_extended", 0) or 0)
            lines.append(f"localizer: tau = {loc['tau']:.4g}, held-out R² = {r2['estimate']:.3f} "
                         f"[{r2['low']:.3f}, {r2['high']:.3f}]"
                         + (f" (target {loc['target_r2']:.3f} {'reached' if loc['target_reached'] else 'NOT reached'}"
                            f" on calibration" + (f"; the 'auto' tau path extended {ext}x" if ext else "") + ")"
                            if "target_reached" in loc and "target_r2" in loc else ""))
        lines += [f"note: {n}" for n in self.manifest.get("notes", [])]
        lines += [f"FAILED {f['step']}: {f['error']}" for f in self.failures]
        lines.append(f"took {sum(self.manifest.get('timings', {}).values()):.0f} s")
        if self.report_path is not None:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def _class_counts(y, k: int) -> list[int]:
    return [] if y is None else np.bincount(np.asarray(y, dtype=np.int64), minlength=k).tolist()


def _data_summary(name: str, train_set, test_set, notes: list[str]) -> dict:
    from .layout import as_layout

    lay = as_layout(test_set.layout)
    internal_shape = tuple(np.asarray(lay.to_internal(test_set.X[:1])).shape[1:])
    k = max(len(test_set.classes or train_set.classes or []),
            *(int(np.max(s.y)) + 1 for s in (train_set, test_set) if s is not None and s.y is not None), 0)
    meta = dict(getattr(test_set, "meta", {}) or {})
    return _io.to_jsonable({
        "name": name, "layout": test_set.layout, "shape": list(test_set.X.shape[1:]),
        "channels": internal_shape[0], "length": list(internal_shape[1:]),
        "n_train": None if train_set is None else int(len(train_set.X)), "n_test": int(len(test_set.X)),
        "classes": list(test_set.classes or (train_set.classes if train_set is not None else []) or []),
        "class_counts": {s: c for s, c in (("train", _class_counts(None if train_set is None else train_set.y, k)),
                                           ("test", _class_counts(test_set.y, k))) if c},
        "labeled": test_set.y is not None, "ground_truth_region": test_set.mask is not None,
        "source": meta.get("source", name), "meta": meta, "notes": notes,
    })


def _split_dataset(ds, frac_test: float, seed: int):
    """A seeded stratified split of a user's labeled data into (train, test)."""
    rng = np.random.default_rng(seed)
    n = len(ds.X)
    if ds.y is None:
        idx = rng.permutation(n)
        cut = int(round(n * (1 - frac_test)))
        return ds.subset(np.sort(idx[:cut])), ds.subset(np.sort(idx[cut:]))
    test = []
    for c in np.unique(ds.y):
        members = rng.permutation(np.flatnonzero(ds.y == c))
        test.extend(members[: max(1, int(round(len(members) * frac_test)))].tolist())
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return ds.subset(np.flatnonzero(~mask)), ds.subset(np.flatnonzero(mask))


def demo(*, out_dir: str | os.PathLike = "runs/demo", dataset: str | None = "mnist1d", model=None,
         data: str | os.PathLike | None = None, test_data: str | os.PathLike | None = None,
         layout: str | None = None, methods: list[str] | str | None = None, quick: bool = False,
         n_explain: int | None = None, epochs: int | None = None, localizer_epochs: int | None = None,
         seed: int = 0, progress: bool = True, retrain: bool = False, report: bool = True, labels=None,
         classes=None, params: dict | None = None) -> DemoResult:
    """The main job: train (or reuse) a reference CNN, fit the TRUST localizer, run every registered
    explainer on test samples, score them, and write the run directory and its HTML report.

    Parameters
    ----------
    out_dir : the run directory (layout: :mod:`trustmap.report`).
    dataset : a built-in dataset (``trustmap.datasets.NAMES``); its train split trains the model,
        its test split (never trained on) fits the localizer and is explained and scored.
    model : the user's model file (or object) instead of training one; give ``data`` (and
        optionally ``test_data``) or a built-in ``dataset``. Without ``test_data`` the data file is
        split 70/30 (stratified, ``seed``).
    data, test_data, layout, labels, classes : the user's data files, their layout, labels beside
        them and class names.
    methods : explainers to run (default: every registered one, ``trustmap.explain.list_methods()``);
        ``params``: their options ``{method: {key: value}}``.
    quick : the smallest setting (``DEMO_SETTINGS['quick']``): for tests and CI.
    n_explain : test samples explained and scored (default 200; quick 24).
    epochs, localizer_epochs : training epochs of the classifier (default: its recipe) and the localizer.
    retrain : train again even when a matching model is cached in ``out_dir``.
    report : also build ``out_dir/report.html``.

    The localizer is fitted on data the classifier did not train on: the test split of a built-in
    dataset, or the 70 % part of the user's file (a user's model was trained elsewhere). Unlabeled
    data: a ``model`` is required; its predictions stand in for the labels (the localizer and R²
    then explain the model's own decisions) and the model report is skipped; both are said in the
    report. ``DemoResult.failures`` lists every step that failed (empty when all ran).

    Returns
    -------
    DemoResult
        The run directory, the report, the model, the manifest and the files written.

    Raises
    ------
    InputError
        An unknown built-in dataset, a bad ``n_explain``, data files without a model, or unlabeled
        data without a model.

    Examples
    --------
    >>> from trustmap.workflows import demo
    >>> res = demo(out_dir="runs/demo", quick=True, progress=False)  # doctest: +SKIP
    >>> res.failures  # doctest: +SKIP
    []
    """
    import time
    import warnings

    from . import datasets as _datasets
    from . import zoo
    from .errors import TrustmapError
    from .explain import list_methods
    from .jobs import ArraySource, MemorySink, fill, make_explainers, method_names
    from .jobs.commands import score
    from .jobs.data import parse_classes
    from .jobs.record import model_desc, new_record
    from .models import load_model
    from .report import SYNTHESIS_METHODS, build_report

    cfg = dict(DEMO_SETTINGS["quick" if quick else "full"])
    if n_explain is not None:
        if isinstance(n_explain, bool) or not isinstance(n_explain, (int, np.integer)) or n_explain < 2:
            raise InputError("n_explain must be an int >= 2", parameter="n_explain", expected="e.g. 200",
                             got=n_explain, fix="pass a number of test samples to explain")
        cfg["n_explain"] = int(n_explain)
    if localizer_epochs is not None:
        cfg["loc_epochs"] = int(localizer_epochs)
    if epochs is not None:
        cfg["train_epochs"] = int(epochs)
    if model is None and dataset is None and data is not None:
        raise InputError("data files need the model that should be explained", parameter="model",
                         expected="--model FILE with --data FILE", got=None,
                         fix="pass model=..., or use a built-in dataset (the demo trains a model on it)")
    names = list_methods() if methods is None else method_names(methods)
    explainers = make_explainers(names, params)  # every name and option checked before any work
    class_list = parse_classes(classes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    notes: list[str] = []
    failures: list[dict[str, str]] = []
    files: dict[str, str] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    # ---- data -------------------------------------------------------------------------------
    if data is not None:
        full = _dataset(None, data, split="test", seed=seed, layout=layout, labels=labels, classes=class_list)
        if test_data is not None:
            train_set = full
            test_set = _dataset(None, test_data, split="test", seed=seed, layout=layout, classes=class_list)
        else:
            train_set, test_set = _split_dataset(full, 0.3, seed)
            notes.append("the data file was split 70/30 (stratified): 70% fits the localizer, 30% is explained")
        ds_name = full.name
        labels_source = full.meta.get("labels_source")
    else:
        if dataset not in _datasets.NAMES:
            raise InputError("unknown built-in dataset", parameter="dataset", expected="one of " +
                             ", ".join(_datasets.NAMES), got=dataset, fix="pick a built-in name, or pass data=")
        train_set = _dataset(dataset, None, split="train", seed=seed, layout=None, classes=class_list)
        test_set = _dataset(dataset, None, split="test", seed=seed, layout=None, classes=class_list)
        ds_name = dataset
        labels_source = "dataset" if test_set.y is not None else None
    labeled = train_set.y is not None and test_set.y is not None
    if not labeled and model is None:
        raise InputError(f"{ds_name} has no labels, so no classifier can be trained on it and nothing scored "
                         "against labels", parameter="model", expected="a classifier for these inputs",
                         got=None, fix=f"pass a model trained elsewhere (e.g. --model beats_cnn.safetensors with "
                                       f"--dataset {ds_name}); its predictions then stand in for the labels, "
                                       "or pick a labeled dataset (mnist1d, basicmotions, digits, synthetic-*)")
    lap("data")

    # ---- model ------------------------------------------------------------------------------
    history = None
    mreport = None
    if model is None:
        model_path = out / "model.safetensors"
        key = {"dataset": ds_name, "seed": seed, "epochs": cfg["train_epochs"]}
        info: dict = {}
        cached = model_path.exists() and model_path.with_suffix(".json").exists() and not retrain
        if cached:
            try:
                info = zoo.read_info(model_path)
            except Exception:  # an unreadable cache is retrained, not trusted
                info = {}
            meta = info.get("meta") or {}
            cached = all(meta.get(k) == v for k, v in key.items())
        if cached:
            module = zoo.load(model_path)
            history = zoo.History.from_dict(info["history"]) if info.get("history") else None
            mreport, _ = evaluate(module, dataset=ds_name, split="test", seed=seed, out_dir=out, history=history,
                                  classes=class_list)
            notes.append(f"reused the cached model {model_path.name} (pass retrain=True / --retrain to train again)")
        else:
            res = train(dataset=ds_name, out_dir=out, epochs=cfg["train_epochs"], seed=seed, progress=progress,
                        meta={"epochs": cfg["train_epochs"]}, classes=class_list)
            module, history, mreport = zoo.load(model_path), res.history, res.report
        m = load_model(module)
        files.update({"model": model_path.name, "model_record": model_path.with_suffix(".json").name})
        rec = zoo.read_info(model_path)
        minfo = {**model_desc(model_path.name, m), "architecture": rec.get("arch") or rec.get("name"),
                 "config": rec.get("config"), "trained_here": not cached}
    else:
        m = load_model(model)
        model_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
        minfo = {**model_desc(model, m), "trained_here": False}
        if labeled:
            from .metrics import model_report

            mreport = model_report(m, test_set.X, test_set.y, layout=test_set.layout,
                                   class_names=list(test_set.classes) or None)
            write_model_report(out, mreport, None)
    if mreport is not None:
        files.update({"model_report": "report.json", "report_txt": "report.txt"})
        if (out / "model_report.png").exists():
            files["model_report_png"] = "model_report.png"
        if history is not None and (out / "history.json").exists():
            files["history"] = "history.json"
    else:
        notes.append("no model report: the data have no labels")
    lap("model")

    # ---- the explained samples ------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    n = min(cfg["n_explain"], len(test_set.X))
    index = np.sort(rng.permutation(len(test_set.X))[:n])
    shown = ArraySource(test_set.subset(index), name=ds_name)
    Xs, lay = shown.X, shown.layout
    probs = m.probs(Xs, layout=lay)
    pred = probs.argmax(axis=1)
    ys = np.asarray(test_set.y)[index] if labeled else pred
    if not labeled:
        notes.append("the data have no labels: the model's predictions stand in for them (galleries are grouped "
                     "by predicted class; R² measures how much of the model's own decisions the features carry)")
    arrays = {"X": Xs, "pred": pred, "probs": probs, "index": index}
    if labeled:
        arrays["y"] = ys
    with _io.atomic_path(out / "samples.npz", suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    files["samples"] = "samples.npz"
    summary = _data_summary(ds_name, train_set, test_set, [])
    _io.write_json(out / "data.json", summary)
    files["data"] = "data.json"
    lap("samples")

    # ---- the localizer: fitted on data the classifier did not train on -----------------------------
    attributions: dict[str, str] = {}
    att_objs: dict[str, Any] = {}
    loc_summary = None
    fit_set = train_set if data is not None and test_data is None and model is not None else test_set
    if data is not None and test_data is not None:
        fit_set = train_set  # the user's model was trained elsewhere: --data is new to it
    fit_on = ("the 70% part of the data file" if fit_set is train_set and data is not None and test_data is None
              else ("--data (the user's model was trained elsewhere)" if fit_set is train_set
                    else f"the test split of {ds_name} (never trained on)"))
    y_fit = fit_set.y  # None: the localizer takes the model's predictions as labels
    nf = min(cfg["n_fit"], len(fit_set.X))
    fit_idx = np.sort(np.random.default_rng(seed + 1).permutation(len(fit_set.X))[:nf])
    try:
        from .localizer.runner import fit_localizer

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loc, _paths = fit_localizer(m, fit_set.X[fit_idx], None if y_fit is None else np.asarray(y_fit)[fit_idx],
                                        out / "localizer",
                                        layout=fit_set.layout, epochs=cfg["loc_epochs"], seed=seed,
                                        progress=progress, n_boot=cfg["n_boot"])
        notes += [f"localizer: {w.message}" for w in caught]
        sink = MemorySink()
        fill(shown, {"trust": lambda x, t: loc.locate(x, layout=lay)}, {"trust": sink}, 4096)
        att_objs["trust"] = sink.result(Xs)
        loc_summary = {"tau": float(loc.tau_), "target_r2": float(loc.target_r2_),
                       "target_reached": bool(loc.target_reached_),
                       "tau_grid_extended": int(getattr(loc, "tau_grid_extended_", 0)),
                       "r2": {"estimate": float(loc.r2_.estimate), "low": float(loc.r2_.low),
                              "high": float(loc.r2_.high)},
                       "fit_on": fit_on, "fit_samples": int(nf),
                       "labels": "labels" if fit_set.y is not None else "predictions"}
        notes.append(f"the localizer was fitted on {nf} samples of {fit_on}")
        files.update({"localizer": "localizer/r2_path.json",
                      "localizer_weights": "localizer/localizer.safetensors"})
        for key, name in (("da_plot", "da_plot.png"), ("path_plot", "path_plot.png")):
            if (out / "localizer" / name).exists():
                files[key] = f"localizer/{name}"
    except TrustmapError as exc:
        notes.append(f"the localizer could not be fitted on {ds_name}: {exc}")
        failures.append({"step": "localizer", "error": str(exc)})
    lap("localizer")

    # ---- the explainers: the explain job on the shown samples, one method at a time ------------------
    for name, ex in explainers.items():
        try:
            t0 = time.perf_counter()
            src = shown if not getattr(type(ex), "synthesizes_inputs", name in SYNTHESIS_METHODS) \
                else shown.subset(np.arange(min(len(Xs), 8)))
            sink = MemorySink()
            fill(src, {name: lambda x, t, ex=ex: ex.explain(m, x, target=t, layout=lay)}, {name: sink}, 4096,
                 progress=progress, desc=name)
            att_objs[name] = sink.result(src.X)
            timings[f"explain:{name}"] = round(time.perf_counter() - t0, 2)
        except TrustmapError as exc:
            notes.append(f"{name} was skipped: {exc}")
            failures.append({"step": f"explain:{name}", "error": str(exc)})
    for name, att in att_objs.items():
        att.save(out / "attributions" / f"{name}.npz")
        attributions[name] = f"attributions/{name}.npz"
    clock = time.perf_counter()

    # ---- scores ------------------------------------------------------------------------------------
    scored = {k: v for k, v in att_objs.items()
              if not getattr(type(explainers[k]) if k in explainers else None, "synthesizes_inputs",
                             k in SYNTHESIS_METHODS)}
    if scored:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score(m, Xs, ys, scored, out / "scores", None,
                      mask=None if test_set.mask is None else test_set.mask[index], layout=lay,
                      n_boot=cfg["n_boot"], n_perm=cfg["n_perm"], steps=cfg["steps"], seed=seed, progress=progress)
            files["scores"] = "scores/scores.json"
            if (out / "scores" / "curves.png").exists():
                files["curves"] = "scores/curves.png"
        except TrustmapError as exc:
            notes.append(f"the explanations could not be scored: {exc}")
            failures.append({"step": "scores", "error": str(exc)})
    lap("scores")

    manifest = new_record(
        "demo", engine="memory",
        settings={"dataset": ds_name, "data": None if data is None else str(data),
                  "test_data": None if test_data is None else str(test_data), "seed": seed, "quick": quick,
                  **cfg, "n_explain": int(n), "methods": names},
        data={**summary, "fingerprint": shown.fingerprint()},
        labels={"source": labels_source or "predictions", **({"path": str(labels)} if isinstance(labels, (str, os.PathLike)) else {})},
        classes=list(summary.get("classes") or []), methods=names,
        params={k: ex.params for k, ex in explainers.items()}, n=int(n),
        samples_layout=lay, samples_sha256=_io.fingerprint_array(Xs), files=files, attributions=attributions,
        localizer=loc_summary, timings=timings, notes=notes, failures=failures)
    manifest["model"] = minfo
    _io.write_json(out / "run.json", manifest)
    report_path = None
    if report:
        report_path = build_report(out)
        timings["report"] = round(time.perf_counter() - clock, 2)
        manifest["timings"] = timings
        _io.write_json(out / "run.json", manifest)
    written = [out / "run.json"] + [out / f for f in files.values()] + [out / a for a in attributions.values()]
    return DemoResult(out, report_path, model_path if model is None else None, mreport, manifest,
                      written + ([report_path] if report_path else []), failures)
