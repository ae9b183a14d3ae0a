"""Fitted localizers on disk: the mask network's weights and the baseline statistics in
``.safetensors``, everything else in the ``.json`` record beside it (:mod:`trustmap.records`).
No pickle."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from torch import nn

from .. import _io, records
from ..errors import InputError, RunDirError
from ..models import load_model
from . import r2 as _r2
from .baseline import BaselineStats, legacy_name
from .common import safe_fingerprint
from .model import MaskNet

__all__ = ["FORMAT", "REQUIRED", "BASELINE_NAMES", "save", "load"]

#: written into every record: its baseline names are those of :mod:`trustmap.baselines` (a record
#: without it is older, and its 'mean' is the training-set mean, now 'dataset_mean')
BASELINE_NAMES = "trustmap.baselines"

FORMAT = "trustmap.localizer/2"
#: keys a record must hold to be loaded (a missing one is named in the error)
REQUIRED = ("params", "settings", "backbone_kind", "rank", "channels", "spatial", "layout", "n_classes",
            "mask_channels", "blur_sigma", "tau", "tau_index", "tau_grid", "target_r2", "target_reached", "r2",
            "r2_path", "calibration_path", "split")


def save(loc, path) -> Path:
    st_path, _ = records.pair_paths(path, "localizer")
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in loc.net_.state_dict().items()}
    tensors["base.mean"] = loc.base_stats_.train_mean.detach().cpu().contiguous()
    tensors["base.std"] = loc.base_stats_.train_std.detach().cpu().contiguous()
    tensors["log_prior"] = loc.log_prior_.detach().cpu().contiguous()
    record = {
        "format": FORMAT,
        "params": loc._json_params(),
        "settings": loc.settings_,
        "backbone_kind": loc.backbone_kind_,
        "rank": loc.rank_, "channels": loc.channels_, "spatial": list(loc.spatial_), "layout": loc.layout_,
        "n_classes": loc.n_classes_, "mask_channels": loc.mask_channels_, "blur_sigma": loc.base_stats_.blur_sigma,
        "tau": loc.tau_, "tau_index": loc.tau_index_, "tau_grid": loc.tau_grid_.tolist(),
        "target_r2": loc.target_r2_, "target_reached": loc.target_reached_,
        "r2": loc.r2_.to_dict(), "r2_path": loc.r2_path_.to_dict(),
        "calibration_path": loc.calibration_path_.to_dict(), "split": loc.split_,
        "r_metric": loc.r_metric_, "labels_source": getattr(loc, "labels_source_", "given"),
        "r2_meaning": getattr(loc, "r2_meaning_", None), "fit_accuracy": getattr(loc, "fit_accuracy_", None),
        "val_accuracy": getattr(loc, "val_accuracy_", None),
        "model_fingerprint": loc.model_fingerprint_, "history": loc.history_,
        "world_size": int(getattr(loc, "world_size_", 1)),
        # the baseline names follow trustmap.baselines ('mean': per sample; 'dataset_mean': training set)
        "baseline_names": BASELINE_NAMES,
        "fs": getattr(loc, "fs_", None),
        "tau_grid_extended": int(getattr(loc, "tau_grid_extended_", 0)),
        "extension_tried": getattr(loc, "extension_tried_", None),
        "versions": _io.versions(),
    }
    p = Path(path)
    if p.exists() and not p.is_dir() and p.suffix != ".safetensors":
        raise InputError("cannot save the localizer under a file", parameter="path",
                         expected="a folder (it is created) or a name ending in .safetensors", got=str(p),
                         fix="pass a folder path, or e.g. 'localizer.safetensors'")
    return records.save_pair(st_path, tensors, record, parameter="path")


def load(cls, path, model=None, backbone: nn.Module | None = None):
    st_path, _ = records.pair_paths(path, "localizer")
    if not st_path.exists() and not st_path.with_suffix(".json").exists():
        raise RunDirError("localizer file is missing", parameter="path",
                          expected="a .safetensors file with its .json record beside it", got=str(st_path),
                          fix="save the localizer with Localizer.save(path)")
    record, tensors = records.load_pair(st_path, FORMAT, REQUIRED, parameter="path", error=RunDirError,
                                        what="localizer")
    for key in ("base.mean", "base.std", "log_prior"):
        if key not in tensors:
            raise RunDirError(f"the localizer's weights lack the tensor {key!r}", parameter="path",
                              expected="the tensors Localizer.save writes", got=str(st_path),
                              fix="fit and save the localizer again")
    params = dict(record["params"])
    settings = dict(record["settings"])
    if record.get("baseline_names") != BASELINE_NAMES:  # an older record: 'mean' was the training-set mean
        settings["baseline"] = legacy_name(settings.get("baseline", "zero"))
        if params.get("baseline") == "mean":
            params["baseline"] = "dataset_mean"
    kind = record["backbone_kind"]
    if kind == "custom":
        if backbone is None:
            raise InputError("this localizer was fitted with a custom backbone", parameter="backbone",
                             expected=f"a module like the one fitted ({params.get('backbone')})", got=None,
                             fix="pass backbone=<the same architecture> to Localizer.load")
        params["backbone"] = backbone
    else:
        params["backbone"] = kind
    params["checkpoint"] = None
    if params.get("r_metric") not in ("auto", "acc", "prob", "loss"):
        params["r_metric"] = "auto"
    obj = cls(**{k: (tuple(v) if isinstance(v, list) and k != "tau" else v) for k, v in params.items()
                 if k in cls._PARAMS})
    obj.settings_ = settings
    obj.r_metric_ = record.get("r_metric") or settings.get("r_metric") or record["r2"].get("metric", "acc")
    settings.setdefault("r_metric", obj.r_metric_)
    obj.labels_source_ = record.get("labels_source", "given")
    obj.r2_meaning_ = record.get("r2_meaning")
    obj.fit_accuracy_ = record.get("fit_accuracy")
    obj.val_accuracy_ = record.get("val_accuracy")
    obj.rank_, obj.channels_ = int(record["rank"]), int(record["channels"])
    obj.spatial_, obj.layout_ = tuple(record["spatial"]), record["layout"]
    obj.n_classes_, obj.mask_channels_ = int(record["n_classes"]), int(record["mask_channels"])
    obj.model_ = None
    obj.backbone_kind_ = kind
    bb, _ = obj._make_backbone(obj.rank_, obj.channels_, obj.mask_channels_)
    net = MaskNet(bb, obj.rank_, obj.mask_channels_, settings["budget"], settings["sink"], obj._entries_per_group())
    state = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError("the backbone does not match the saved weights", parameter="backbone",
                         got=str(exc)[:200], fix="pass the same architecture the localizer was fitted with") from exc
    net.eval()
    obj.net_ = net
    obj.base_stats_ = BaselineStats(tensors["base.mean"], tensors["base.std"], float(record["blur_sigma"]))
    obj.log_prior_ = tensors["log_prior"]
    obj.tau_, obj.tau_index_ = float(record["tau"]), int(record["tau_index"])
    obj.tau_grid_ = np.asarray(record["tau_grid"], dtype=np.float64)
    obj.target_r2_, obj.target_reached_ = float(record["target_r2"]), bool(record["target_reached"])
    obj.r2_ = _r2.R2Estimate(**record["r2"])
    obj.r2_ci_ = (obj.r2_.low, obj.r2_.high)
    obj.r2_path_ = _r2.R2Path.from_dict(record["r2_path"])
    obj.calibration_path_ = _r2.R2Path.from_dict(record["calibration_path"])
    obj.split_ = record["split"]
    obj.model_fingerprint_ = record.get("model_fingerprint")
    obj.history_ = record.get("history", [])
    obj.world_size_ = int(record.get("world_size", 1))
    obj.fs_ = None if record.get("fs") is None else float(record["fs"])
    obj.tau_grid_extended_ = int(record.get("tau_grid_extended", 0))
    obj.extension_tried_ = record.get("extension_tried")
    if model is not None:
        m = load_model(model)
        fp = safe_fingerprint(m)
        if fp is not None and obj.model_fingerprint_ is not None and fp != obj.model_fingerprint_:
            warnings.warn("the model passed to Localizer.load is not the one the localizer was fitted for "
                          "(weights differ)", stacklevel=3)
        obj.model_ = m
        net.to(device=m.device, dtype=m.dtype)
        obj.base_stats_ = obj.base_stats_.to(device=m.device, dtype=m.dtype)
        obj.log_prior_ = obj.log_prior_.to(device=m.device, dtype=m.dtype)
    return obj
