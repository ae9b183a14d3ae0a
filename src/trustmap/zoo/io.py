"""Save and load zoo models: weights in ``.safetensors``, everything else in a ``.json`` beside it.

No pickle anywhere: :func:`load` rebuilds the network from :data:`ARCHITECTURES` by name and
config, checks the weights file against the sha256 recorded in the JSON, and loads the
tensors with ``safetensors``.

``save(model, "runs/cnn.safetensors")`` writes ``runs/cnn.safetensors`` and ``runs/cnn.json``;
``save(model, "runs/cnn")`` (a directory) writes ``runs/cnn/model.safetensors`` and
``runs/cnn/model.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import records
from .._io import versions
from ..errors import InputError, ModelLoadError, UnsupportedError
from .models import ARCHITECTURES, ZooModel, n_parameters
from .train import History

__all__ = ["save", "load", "read_info", "FORMAT", "FORMAT_VERSION"]

FORMAT = "trustmap.zoo"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"


def _weights_path(path: str | os.PathLike, *, for_save: bool) -> Path:
    """The ``.safetensors`` path for ``path`` (a file, a ``.json`` beside it, or a directory)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return path
    if path.suffix.lower() == ".json" and not for_save:
        return path.with_suffix(".safetensors")
    if path.is_dir() or (for_save and path.suffix == ""):
        return path / WEIGHTS_NAME
    if not for_save and not path.exists():
        raise ModelLoadError("model file not found", parameter="path",
                             expected="a .safetensors file (with its .json) or a directory holding model.safetensors",
                             got=str(path), fix="check the path")
    raise InputError("unsupported file name", parameter="path",
                     expected="a path ending in .safetensors, or a directory", got=str(path),
                     fix="name the file e.g. 'model.safetensors'")


def save(module: nn.Module, path: str | os.PathLike, *, history: History | dict | None = None,
         classes: list | None = None, meta: dict | None = None) -> Path:
    """Write ``module``'s weights (``.safetensors``) and its config (``.json``), both atomically.

    Parameters
    ----------
    module : ZooModel
        A model built by :func:`trustmap.zoo.build` (it must carry ``arch`` and ``config``).
    path : str | Path
        ``something.safetensors`` (the JSON goes to ``something.json``) or a directory.
    history : History | dict, optional
        The training history, stored in the JSON.
    classes : list, optional
        Class names in output order (set as ``module.classes`` on load).
    meta : dict, optional
        Anything JSON-ready to keep with the model (data set, seed, test accuracy...).

    Returns
    -------
    Path
        The ``.safetensors`` file written (its ``.json`` record lies beside it).

    Raises
    ------
    UnsupportedError
        ``module`` is not a :mod:`trustmap.zoo` model (no ``arch`` and ``config``).
    InputError
        A file name that does not end in ``.safetensors`` (nor names a directory), or a
        ``history`` / ``meta`` of the wrong type.

    Examples
    --------
    >>> import os, tempfile
    >>> from trustmap import zoo
    >>> folder = tempfile.mkdtemp()
    >>> path = zoo.save(zoo.mnist1d_cnn(), os.path.join(folder, "model.safetensors"),
    ...                 classes=[str(i) for i in range(10)])
    >>> path.name
    'model.safetensors'
    >>> same = zoo.load(path)                  # eval mode, weights checked against their sha256
    """
    arch = getattr(module, "arch", None)
    config = getattr(module, "config", None)
    if arch not in ARCHITECTURES or not isinstance(config, dict):
        raise UnsupportedError("only trustmap.zoo models can be saved this way", parameter="module",
                               expected="a model from trustmap.zoo.build (with arch and config)",
                               got=type(module).__name__,
                               fix="for other modules save module.state_dict() with safetensors.torch.save_file")
    weights = _weights_path(path, for_save=True)
    if classes is not None:
        classes = [c if isinstance(c, (str, int, float)) else str(c) for c in classes]
    if isinstance(history, History):
        history = history.to_dict()
    elif history is not None and not isinstance(history, dict):
        raise InputError("history must be a History or a dict", parameter="history",
                         expected="the History from Trainer.fit", got=type(history).__name__,
                         fix="pass history=trainer.fit(...)")
    if meta is not None and not isinstance(meta, dict):
        raise InputError("meta must be a dict", parameter="meta", expected="a JSON-ready dict",
                         got=type(meta).__name__, fix="pass meta={'key': value}")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "config": config,
        "input_shape": list(getattr(module, "input_shape", ()) or ()),
        "classes": classes,
        "n_parameters": n_parameters(module),
        "history": history,
        "meta": meta or {},
        "versions": versions(),
    }
    # the weights first, then the record naming them and their sha256 (trustmap.records)
    return records.save_pair(weights, tensors, info, metadata={"format": FORMAT, "arch": arch})


def read_info(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of a saved model (arch, config, input_shape, classes, history, meta, ...).

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file, its ``.json``, or their folder.

    Returns
    -------
    dict

    Raises
    ------
    ModelLoadError
        No saved model at ``path``, or its JSON is not a trustmap.zoo record.

    Examples
    --------
    >>> import os, tempfile
    >>> from trustmap import zoo
    >>> path = zoo.save(zoo.mnist1d_cnn(), os.path.join(tempfile.mkdtemp(), "m"))
    >>> info = zoo.read_info(path)
    >>> info["arch"], info["input_shape"]
    ('mnist1d_cnn', [1, 40])
    """
    weights = _weights_path(path, for_save=False)
    json_path = weights.with_suffix(".json")
    if not json_path.exists() and not weights.exists():
        raise ModelLoadError("model file not found", parameter="path",
                             expected="a .safetensors file with its .json, or a directory holding model.safetensors",
                             got=str(path), fix="check the path")
    info = records.read_record(json_path, FORMAT, ("arch", "config", "weights_sha256"), parameter="path",
                               error=ModelLoadError, what="model")
    if info["arch"] not in ARCHITECTURES:
        raise ModelLoadError("unknown architecture in the model record", parameter="path",
                             expected="one of " + ", ".join(ARCHITECTURES), got=f"{info['arch']!r} in {json_path}",
                             fix="upgrade trustmap, or check the file came from trustmap.zoo.save")
    if int(info.get("format_version", 1)) > FORMAT_VERSION:
        raise ModelLoadError("the model record was written by a newer trustmap", parameter="path",
                             expected=f"format_version <= {FORMAT_VERSION}", got=str(json_path),
                             fix="upgrade trustmap")
    return info


def load(path: str | os.PathLike) -> ZooModel:
    """Rebuild a saved zoo model (eval mode), checking the weights against the recorded sha256.

    ``module.classes`` is set from the record; use :func:`read_info` for the history and meta.

    Parameters
    ----------
    path : str or Path
        The ``.safetensors`` file, its ``.json``, or the directory :func:`save` wrote.

    Returns
    -------
    ZooModel
        The rebuilt module, in eval mode, with ``classes`` set.

    Raises
    ------
    ModelLoadError
        A missing file, an unknown architecture or config, a record from a newer trustmap, or
        weights that do not match their record.
    InputError
        A path that names neither a ``.safetensors`` / ``.json`` file nor a directory.

    Examples
    --------
    >>> import os, tempfile
    >>> from trustmap import zoo
    >>> folder = tempfile.mkdtemp()
    >>> _ = zoo.save(zoo.mnist1d_cnn(), folder, classes=[str(i) for i in range(10)])
    >>> net = zoo.load(folder)                 # the folder, the .safetensors file or its .json
    >>> net.training, net.classes[:3]
    (False, ['0', '1', '2'])
    """
    from safetensors.torch import load as st_load

    weights = _weights_path(path, for_save=False)
    info = read_info(weights)
    data = records.read_weights_bytes(weights, info, parameter="path", error=ModelLoadError, what="model")
    config = info["config"]
    if not isinstance(config, dict):
        raise ModelLoadError("the model record's config is not an object", parameter="path",
                             expected="a dict of constructor arguments", got=str(weights.with_suffix(".json")),
                             fix="save the model again")
    try:
        # building the module draws its initial weights: from a private stream, so loading a model
        # leaves the caller's global torch RNG where it was (the weights are replaced right after)
        with torch.random.fork_rng(devices=[]):
            module = ARCHITECTURES[info["arch"]](**config)
    except Exception as exc:
        raise ModelLoadError(f"cannot rebuild {info['arch']} from the recorded config ({exc})", parameter="path",
                             expected="constructor arguments of " + info["arch"], got=str(weights.with_suffix(".json")),
                             fix="save the model again with this trustmap version") from exc
    try:
        state = st_load(data)
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the weights ({type(exc).__name__}: {str(exc)[:300]})", parameter="path",
                             expected=f"weights of a {info['arch']} with config {config}", got=str(weights),
                             fix="save the model again") from exc
    module.classes = info.get("classes")
    module.eval()
    return module

