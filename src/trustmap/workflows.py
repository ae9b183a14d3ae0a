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

__all__ = ["get_data", "default_architecture", "train", "evaluate", "demo", "TrainResult"]


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    report: Any
    history: Any
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out_dir": str(self.out_dir), "model": str(self.model_path),
                "accuracy": float(self.report.accuracy), "files": [str(f) for f in self.files],
                "epochs": len(self.history.train_loss) if self.history is not None else None}


def get_data(dataset: str | None = None, data: str | os.PathLike | None = None, *, split: str = "train",
             seed: int = 0, layout: str | None = None):
    """A built-in dataset by name, or a data file; returns a ``trustmap.datasets.Dataset``."""
    from . import datasets

    if (dataset is None) == (data is None):
        raise InputError("give exactly one of a built-in dataset or a data file", parameter="dataset/data",
                         expected="dataset='mnist1d' or data='beats.csv'",
                         got=f"dataset={dataset!r}, data={data!r}",
                         fix="pass one of them (built-in names: " + ", ".join(datasets.NAMES) + ")")
    if dataset is not None:
        return datasets.load(dataset, split=split, seed=seed)
    return datasets.read(data, layout=layout)


def default_architecture(channels: int, spatial: tuple[int, ...], n_classes: int) -> tuple[str, dict]:
    """The zoo network that suits data of this shape: MNIST-1D CNN for one-channel signals,
    the FCN for multi-channel signals, the 2D CNN for images."""
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


def _write_report(out_dir: Path, report, history) -> list[Path]:
    files = [_io.write_json(out_dir / "report.json", report.to_dict())]
    files.append(_io.write_text(out_dir / "report.txt", report.summary() + "\n"))
    if history is not None:
        files.append(_io.write_json(out_dir / "history.json", history.to_dict()))
    return files + _figures(out_dir, report, history)


def train(*, dataset: str | None = "mnist1d", data: str | None = None, test_data: str | None = None,
          arch: str | None = None, out_dir: str | os.PathLike = "runs/train", epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None, patience: int | None = None, seed: int = 0,
          layout: str | None = None, progress: bool = True) -> TrainResult:
    """Train a zoo network on a built-in dataset (or data files) and write model + report.

    Training settings left ``None`` come from ``zoo.RECIPES`` for the architecture (the measured
    fast recipe for the MNIST-1D CNN), else from ``zoo.Trainer``'s defaults.
    """
    import torch

    from . import zoo
    from .layout import as_layout
    from .metrics import model_report

    train_set = get_data(dataset, data, split="train", seed=seed, layout=layout)
    if train_set.y is None:
        raise InputError("the dataset has no labels", parameter="dataset", expected="a labeled dataset",
                         got=train_set.name, fix="pick a labeled dataset (e.g. mnist1d) or a file with labels")
    if dataset is not None:
        test_set = get_data(dataset, None, split="test", seed=seed)
    elif test_data is not None:
        test_set = get_data(None, test_data, layout=layout)
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
    out = Path(out_dir)
    model_path = zoo.save(module, out / "model.safetensors", history=history, classes=list(train_set.classes),
                          meta={"dataset": train_set.name, "seed": seed})
    eval_set = test_set if test_set is not None else train_set
    report = model_report(module, eval_set.X, eval_set.y, layout=eval_set.layout,
                          class_names=list(train_set.classes) or None)
    files = [model_path, model_path.with_suffix(".json")] + _write_report(out, report, history)
    return TrainResult(out, model_path, report, history, files)


def evaluate(model, *, dataset: str | None = None, data: str | None = None, split: str = "test",
             out_dir: str | os.PathLike | None = None, layout: str | None = None, seed: int = 0,
             history=None):
    """Model report (accuracy, class-wise accuracy, ROC-AUC, confusion, P/R/F1) on labeled data."""
    from .metrics import model_report

    ds = get_data(dataset, data, split=split, seed=seed, layout=layout)
    if ds.y is None:
        raise InputError("the data have no labels", parameter="data", expected="labeled data",
                         got=ds.name, fix="pass a file with a label column or a labeled built-in dataset")
    report = model_report(model, ds.X, ds.y, layout=ds.layout, class_names=list(ds.classes) or None)
    files: list[Path] = []
    if out_dir is not None:
        files = _write_report(Path(out_dir), report, history)
    return report, files


def demo(*, out_dir: str | os.PathLike = "runs/demo", dataset: str = "mnist1d", epochs: int | None = None,
         seed: int = 0, progress: bool = True, retrain: bool = False) -> TrainResult:
    """The main job on built-in data: train (or reuse) the reference CNN and write its report."""
    from . import zoo

    out = Path(out_dir)
    model_path = out / "model.safetensors"
    cached = model_path.exists() and model_path.with_suffix(".json").exists() and not retrain
    if cached:
        try:
            info = zoo.read_info(model_path)
        except Exception:  # an unreadable cache is retrained, not trusted
            info = {}
        meta = info.get("meta") or {}
        cached = meta.get("dataset") == dataset and meta.get("seed") == seed
    if not cached:
        return train(dataset=dataset, out_dir=out, epochs=epochs, seed=seed, progress=progress)
    module = zoo.load(model_path)
    history = zoo.History.from_dict(info["history"]) if info.get("history") else None
    report, files = evaluate(module, dataset=dataset, split="test", seed=seed, out_dir=out, history=history)
    return TrainResult(out, model_path, report, history, [model_path] + files)

