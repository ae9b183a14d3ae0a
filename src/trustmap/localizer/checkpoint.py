"""Training checkpoints of the localizer: written after every epoch, resumed by a later ``fit`` with
the same settings, model and data.

The weights and the record become visible together: the weights are written under a name that
carries their hash and the record (``checkpoint.json``) that names them is written after them
(:func:`trustmap.records.save_versioned`), so a process killed between the two writes resumes from
the previous complete epoch, never from the weights of one epoch and the record of another.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from .. import _io, records
from ..errors import InputError, RunDirError

__all__ = ["CKPT_FORMAT", "fingerprint", "checkpoint_record_path", "save_checkpoint", "load_checkpoint"]

CKPT_FORMAT = "trustmap.localizer-checkpoint/2"


def fingerprint(loc, t, yt, tv, yv) -> str:
    """What a checkpoint must match to be resumed: settings, model, data."""
    h = hashlib.sha256()
    params = loc._json_params()
    for k in ("progress", "checkpoint", "distributed"):  # a checkpoint resumes in one process or several alike
        params.pop(k, None)
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(str(loc.model_fingerprint_).encode())
    for a in (t, yt, tv, yv):
        if a is not None:
            h.update(_io.fingerprint_array(a.detach().cpu().numpy()).encode())
    return h.hexdigest()[:24]


def checkpoint_record_path(checkpoint) -> Path:
    """``checkpoint`` is a folder (the record is ``checkpoint.json`` in it) or a ``.json``/``.safetensors`` name."""
    p = Path(checkpoint)
    if p.suffix in (".safetensors", ".json"):
        return p.with_suffix(".json")
    return p / "checkpoint.json"


def save_checkpoint(loc, fp: str, stage: int, epoch: int, net: nn.Module, opt, extra: dict) -> None:
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    osd = opt.state_dict()
    for pid, pstate in osd["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = val.detach().cpu().reshape(-1).clone() if val.ndim == 0 else \
                    val.detach().cpu().contiguous()
    scalars = {f"{pid}.{key}": (val.ndim == 0) for pid, ps in osd["state"].items() for key, val in ps.items()
               if isinstance(val, torch.Tensor)}
    record = {"format": CKPT_FORMAT, "fingerprint": fp, "stage": stage, "epoch": epoch,
              "param_groups": osd["param_groups"], "scalar_keys": scalars, "history": loc.history_,
              "sweep": extra.get("sweep", [])}
    records.save_versioned(checkpoint_record_path(loc.checkpoint), tensors, record, parameter="checkpoint")


def load_checkpoint(loc, fp: str) -> dict | None:
    if loc.checkpoint is None:
        return None
    js = checkpoint_record_path(loc.checkpoint)
    if not js.exists():
        return None
    record, tensors = records.load_versioned(js, CKPT_FORMAT, ("fingerprint", "stage", "epoch", "param_groups",
                                                               "scalar_keys"),
                                             parameter="checkpoint", error=RunDirError, what="checkpoint")
    if record.get("fingerprint") != fp:
        raise InputError("the checkpoint belongs to another fit (settings, model or data differ)",
                         parameter="checkpoint", expected="a checkpoint written by this same fit",
                         got=str(js), fix="delete it or pass another checkpoint path")
    net_state = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            if record["scalar_keys"].get(f"{pid}.{key}"):
                v = v.reshape(())
            opt_state.setdefault(int(pid), {})[key] = v
    return {"stage": int(record["stage"]), "epoch": int(record["epoch"]), "net": net_state,
            "opt": {"state": opt_state, "param_groups": record["param_groups"]},
            "history": record.get("history", []), "sweep": record.get("sweep", [])}
