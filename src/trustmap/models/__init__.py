"""Model adapters: ``load_model`` turns a torch module, a Keras model or file, or an ONNX
file into a :class:`Model` that trustmap can explain."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError
from .base import Capture, LayerInfo, Model, check_array, preserved_rng
from .keras_model import KerasModel, import_keras, is_keras_model, load_keras_file
from .onnx_model import OnnxModel, black_box_methods
from .torch_model import TorchModel

__all__ = ["load_model", "Model", "TorchModel", "KerasModel", "OnnxModel", "LayerInfo", "Capture",
           "BLACK_BOX_METHODS", "black_box_methods", "check_array", "import_keras", "preserved_rng"]


def __getattr__(name):  # BLACK_BOX_METHODS is derived from the explainer classes on use (no import cycle)
    if name == "BLACK_BOX_METHODS":
        return black_box_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_model(obj, *, safe_mode: bool = True, custom_objects: dict | None = None, **options) -> Model:
    """Wrap a model (or load a model file) for trustmap. The user's model is never changed.

    A model whose input size is known is run once on two zero inputs: one that does not return
    ``(N, K)`` class scores is refused with a :class:`~trustmap.errors.ModelOutputError` naming
    the shape.

    Parameters
    ----------
    obj : torch.nn.Module, keras.Model, Model, str or path
        A model object, or a file: ``.keras`` / ``.h5`` (Keras 3 on the torch backend, loaded with
        ``compile=False``; legacy tf.keras 2.x ``.h5`` files too), ``.onnx`` (onnxruntime, forward
        only), or a trustmap zoo model (``.safetensors`` with its ``.json`` beside it). A
        :class:`Model` is returned as it is.
    safe_mode : bool
        Keras files: refuse layers whose code would run on load (``Lambda``). Opt out only for
        files you trust; Keras' process-wide flag is restored afterwards.
    custom_objects : dict, optional
        Keras: custom layers and functions by name.
    **options
        Passed to the adapter: ``output`` (``'auto'``, ``'logits'``, ``'probs'`` or ``'sigmoid'``:
        what the model returns), ``max_batch``, ``name``; torch: ``input_shape``, ``dtype``,
        ``device``; ONNX: ``channels_last``.

    Returns
    -------
    Model
        :class:`TorchModel`, :class:`KerasModel` or :class:`OnnxModel`.

    Raises
    ------
    ModelLoadError
        A missing, empty or unreadable file, or an object that is not a model.
    UnsafeModelError
        A Keras file with a ``Lambda`` layer under ``safe_mode=True``.
    ModelOutputError
        Outputs that are not ``(N, K)`` class scores.
    BackendError
        Keras was imported with a backend other than torch.
    DependencyError
        The file needs keras or onnxruntime, and it is not installed.
    InputError
        An unknown ``output`` kind, or a torch ``input_shape`` that is not ``(C, L)`` or ``(C, H, W)``.

    Examples
    --------
    >>> import os, tempfile, numpy as np, trustmap
    >>> from trustmap import zoo
    >>> m = trustmap.load_model(zoo.mnist1d_cnn())      # a torch module
    >>> m.n_classes, m.framework
    (10, 'torch')
    >>> m.probs(np.zeros((8, 40), np.float32)).shape   # probabilities, (8, 10)
    (8, 10)
    >>> m.default_layer()                              # the last convolution, for CAM methods
    'relu3'
    >>> path = os.path.join(tempfile.mkdtemp(), "cnn.keras")
    >>> zoo.keras_mnist1d_cnn().save(path)
    >>> trustmap.load_model(path).framework             # a Keras file, run on torch
    'keras'
    """
    if isinstance(obj, Model):
        return obj
    with preserved_rng():  # building modules and Keras clones draws from the global RNGs
        return _load(obj, safe_mode=safe_mode, custom_objects=custom_objects, **options).check_shape()


def _load(obj, *, safe_mode: bool = True, custom_objects: dict | None = None, **options) -> Model:
    """Wrap a model (or load a model file) for trustmap.

    Parameters
    ----------
    obj : torch.nn.Module | keras.Model | Model | str | Path
        A model object, or a path: ``.keras`` / ``.h5`` (Keras, loaded on the torch backend with
        ``compile=False``), ``.onnx`` (onnxruntime, forward only), or a trustmap zoo model
        (``.safetensors`` with its ``.json`` config beside it).
    safe_mode : bool
        Keras files: refuse layers whose code would run on load (Lambda). Opt out only for
        files you trust.
    **options
        Passed to the adapter: ``output`` ('auto' | 'logits' | 'probs' | 'sigmoid'),
        ``max_batch``, ``name``; torch: ``input_shape``, ``dtype``, ``device``; ONNX: ``channels_last``.
    """
    if isinstance(obj, Model):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        suffix = path.suffix.lower()
        if suffix in (".keras", ".h5", ".hdf5"):
            return KerasModel(load_keras_file(path, safe_mode=safe_mode, custom_objects=custom_objects), **options)
        if suffix == ".onnx":
            return OnnxModel(path, **options)
        if suffix == ".safetensors" or (path.is_dir() and (path / "model.safetensors").exists()):
            from ..zoo import load as zoo_load

            module = zoo_load(path)
            return TorchModel(module, input_shape=getattr(module, "input_shape", None), **options)
        if suffix in (".pt", ".pth"):
            raise ModelLoadError("a .pt/.pth file holds weights without the architecture", parameter="obj",
                                 expected="an nn.Module, .keras, .h5, .onnx or .safetensors model", got=str(path),
                                 fix="build the module, load_state_dict(torch.load(path, weights_only=True)), "
                                     "and pass the module")
        raise ModelLoadError("unknown model file type", parameter="obj",
                             expected=".keras, .h5, .onnx or .safetensors", got=str(path),
                             fix="save the model in one of those formats")
    if is_keras_model(obj):
        return KerasModel(obj, **options)
    import torch

    if isinstance(obj, torch.nn.Module):
        return TorchModel(obj, **options)
    raise ModelLoadError("cannot use this object as a model", parameter="obj",
                         expected="a torch.nn.Module, keras.Model, or a model file path",
                         got=type(obj).__name__, fix="pass the model object or its file")
