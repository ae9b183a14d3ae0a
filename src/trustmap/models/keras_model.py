"""Adapter for Keras 3 models, run on Keras' torch backend.

trustmap works on a private clone of the user's model (same weights; a fused final
softmax/sigmoid replaced by a linear activation so logits are reachable). The user's
model object is never called, edited or hooked. Lambda layers are cloned around the same
function object (nothing is deserialized). Where no clone can be made (a custom layer whose
config does not rebuild it), the model itself is run: ``frozen()`` and ``capture()`` restore
everything they touch (``requires_grad``, the patched layer call).

Keras' process-wide safe-mode flag is exactly what it was after every load, whatever happens
(:func:`preserved_safe_mode`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import BackendError, DependencyError, ModelLoadError, UnsafeModelError, UnsupportedError
from .base import Capture, LayerInfo, Model, hash_tensors, pick_default_layer

__all__ = ["KerasModel", "import_keras", "load_keras_file", "is_keras_model", "keras_safe_mode",
           "preserved_safe_mode"]

_UNSAFE_LAYERS = ("Lambda", "TFOpLambda", "SlicingOpLambda")
_ACTIVATION_LAYERS = ("Activation", "Softmax", "ReLU")


def import_keras():
    """Import keras on the torch backend (setting ``KERAS_BACKEND=torch`` first).

    Returns
    -------
    module
        The ``keras`` module, running on torch.

    Raises
    ------
    BackendError
        keras was already imported with another backend.
    DependencyError
        keras is not installed.

    Examples
    --------
    >>> from trustmap.models import import_keras
    >>> keras = import_keras()
    >>> keras.backend.backend()
    'torch'
    """
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        backend = keras.backend.backend()
        if backend != "torch":
            raise BackendError("keras was already imported with another backend", parameter="KERAS_BACKEND",
                               expected="torch", got=backend,
                               fix="set KERAS_BACKEND=torch before importing keras (or import trustmap first)")
        return keras
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError as exc:
        raise DependencyError("keras is not installed", parameter="model", expected="keras>=3",
                              got="no module named keras", fix="pip install 'trustmap[keras]'") from exc
    if keras.backend.backend() != "torch":  # pragma: no cover - env var is honoured by keras
        raise BackendError("keras did not start on the torch backend", parameter="KERAS_BACKEND",
                           expected="torch", got=keras.backend.backend(), fix="set KERAS_BACKEND=torch")
    return keras


def is_keras_model(obj: Any) -> bool:
    if "keras" not in sys.modules:
        return False
    mod = type(obj).__module__
    return mod.startswith("keras") or any(c.__module__.startswith("keras.") for c in type(obj).__mro__[1:3])


def _config_layers(config: Any) -> Iterator[str]:
    """Every ``class_name`` in a (possibly nested) Keras config."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield str(config["class_name"])
        for v in config.values():
            yield from _config_layers(v)
    elif isinstance(config, list):
        for v in config:
            yield from _config_layers(v)


def keras_safe_mode():
    """Keras' process-wide safe-mode setting: ``None`` (unset: safe), ``True`` or ``False`` (unsafe
    deserialization enabled, e.g. by ``keras.config.enable_unsafe_deserialization()``)."""
    import_keras()
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("safe_mode_saving")


@contextlib.contextmanager
def preserved_safe_mode() -> Iterator[None]:
    """Whatever happens inside (success, an exception, KeyboardInterrupt), Keras' global safe-mode
    setting is exactly what it was on entry."""
    import_keras()
    from keras.src.backend.common import global_state

    before = global_state.get_global_attribute("safe_mode_saving")
    try:
        yield
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)


def _read_config(path: Path) -> Any:
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelLoadError("the .h5 file holds weights only (no model_config)", parameter="path",
                                 expected="a full model saved with model.save('file.h5')", got=str(path),
                                 fix="build the model in code and call model.load_weights(path), then pass the model")
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def load_keras_file(path: str | os.PathLike, *, safe_mode: bool = True, custom_objects: dict | None = None):
    """Load a ``.keras`` or legacy ``.h5`` file with ``compile=False``; Lambda layers need ``safe_mode=False``."""
    keras = import_keras()
    path = Path(path)
    if not path.exists():
        raise ModelLoadError("model file not found", parameter="path", got=str(path),
                             fix="check the path")
    try:
        config = _read_config(path)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot read the model file ({type(exc).__name__}: {exc})", parameter="path",
                             expected="a complete .keras or .h5 file", got=str(path),
                             fix="the file may be truncated or not a Keras model; save it again") from exc
    unsafe = sorted({c for c in _config_layers(config) if c in _UNSAFE_LAYERS})
    if unsafe and safe_mode:
        raise UnsafeModelError(f"the model contains {', '.join(unsafe)} layer(s), whose code would run on load",
                               parameter="safe_mode", expected="a model without Lambda layers", got=str(path),
                               fix="if you trust this file, pass safe_mode=False (and custom_objects for its functions)")
    try:
        # keras scopes safe_mode to the call for .keras and .h5 alike; preserved_safe_mode() makes sure
        # the process-wide flag is what it was, whatever happens (never enable_unsafe_deserialization())
        with preserved_safe_mode():
            return keras.saving.load_model(path, compile=False, safe_mode=bool(safe_mode),
                                           custom_objects=custom_objects)
    except Exception as exc:
        raise ModelLoadError(f"keras could not load the file ({type(exc).__name__}: {str(exc)[:300]})",
                             parameter="path", got=str(path),
                             fix="check the file is complete; custom layers need custom_objects={...}") from exc


def _clone_lambda(keras, layer):
    """A new Lambda layer around the same function object: the function is already in this process
    (the user built the model or loaded it with ``safe_mode=False``), so nothing is deserialized and
    Keras' safe mode is never consulted or changed."""
    return type(layer)(layer.function, output_shape=getattr(layer, "_output_shape", None),
                       mask=getattr(layer, "mask", None), arguments=dict(getattr(layer, "arguments", {}) or {}),
                       name=layer.name)


def _linear_clone(keras, model):
    """Clone with the same weights and the last layer's softmax/sigmoid made linear.

    Returns (clone, the stripped final activation: 'softmax' | 'sigmoid' | None).
    """
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    act_name = getattr(act, "__name__", str(act)) if act is not None else None
    kind = None
    if type(last).__name__ not in _ACTIVATION_LAYERS and act_name in ("softmax", "sigmoid"):
        kind = act_name

        def clone_fn(layer):
            if isinstance(layer, keras.layers.Lambda):
                return _clone_lambda(keras, layer)
            cfg = layer.get_config()
            if layer.name == last.name:
                cfg["activation"] = "linear"
            return layer.__class__.from_config(cfg)
    else:
        def clone_fn(layer):
            if isinstance(layer, keras.layers.Lambda):
                return _clone_lambda(keras, layer)
            return layer.__class__.from_config(layer.get_config())

    try:
        with preserved_safe_mode():
            clone = keras.models.clone_model(model, clone_function=clone_fn)
    except Exception as exc:
        raise UnsupportedError(f"this Keras model cannot be cloned ({type(exc).__name__}: {exc})",
                               parameter="model", expected="a Sequential or Functional Keras model",
                               got=type(model).__name__,
                               fix="rebuild a subclassed model as a Functional model, or export it to ONNX") from exc
    clone.set_weights(model.get_weights())
    if type(last).__name__ in _ACTIVATION_LAYERS:
        cfg = last.get_config()
        a = cfg.get("activation", "softmax" if type(last).__name__ == "Softmax" else None)
        if a in ("softmax", "sigmoid"):
            kind = a
            clone = keras.Model(clone.inputs, clone.layers[-2].output)
    return clone, kind


class KerasModel(Model):
    """A Keras 3 model on the torch backend; channels-last models are converted at the boundary.

    trustmap runs a private clone of the model (same weights, a final softmax or sigmoid made
    linear); the user's model is never changed.

    Parameters
    ----------
    model : keras.Model
        A built Keras model with 1D ``(N, L, C)`` or 2D ``(N, H, W, C)`` input (or channels-first).
    output : 'auto' | 'logits' | 'probs' | 'sigmoid'
        What the model returns (ignored when a final softmax/sigmoid was stripped).
    max_batch : int, optional
        At most this many samples per forward call (default: sized by a memory budget).
    name : str, optional
        A name for messages (default: the model's name).

    Raises
    ------
    ModelLoadError
        ``model`` is not a built ``keras.Model``, or its input is not 1D or 2D.
    BackendError
        keras was imported with a backend other than torch.
    DependencyError
        keras is not installed.
    InputError
        An unknown ``output``.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap import zoo
    >>> from trustmap.models import KerasModel
    >>> m = KerasModel(zoo.keras_mnist1d_cnn())
    >>> m.framework, m.n_classes, m.default_layer()
    ('keras', 10, 'conv3')
    >>> m.probs(np.zeros((2, 40), np.float32)).shape
    (2, 10)
    """

    framework = "keras"

    def __init__(self, model, *, output: str = "auto", max_batch: int | None = None, name: str | None = None,
                 **kw) -> None:
        keras = import_keras()
        if not isinstance(model, keras.Model):
            raise ModelLoadError("not a Keras model", parameter="model", expected="a keras.Model",
                                 got=type(model).__name__, fix="pass a keras.Model or a .keras/.h5 path")
        if not model.built or not model.inputs:
            raise ModelLoadError("the Keras model is not built", parameter="model",
                                 expected="a model with a known input shape", got=type(model).__name__,
                                 fix="build it with keras.Input(shape=...) or call model.build(input_shape)")
        shape = tuple(model.inputs[0].shape)  # (None, *spatial, C) or (None, C, *spatial)
        if len(shape) not in (3, 4):
            raise ModelLoadError("only 1D and 2D inputs are supported", parameter="model",
                                 expected="input (N, L, C) or (N, H, W, C)", got=shape,
                                 fix="reshape the model's input to a 1D signal or a 2D image")
        first_conv = next((l for l in model.layers if "conv" in type(l).__name__.lower()), None)
        fmt = getattr(first_conv, "data_format", "channels_last") if first_conv is not None else "channels_last"
        self.channels_last = fmt != "channels_first"
        channels = shape[-1] if self.channels_last else shape[1]
        spatial = shape[1:-1] if self.channels_last else shape[2:]
        self.keras_model = model
        try:
            clone, kind = _linear_clone(keras, model)
            self.private_copy = True
            for v in clone.weights:
                v.value.requires_grad_(False)
        except UnsupportedError as exc:
            # no private copy (e.g. a custom layer without a usable get_config): run the user's model
            # itself; frozen() switches its weights' requires_grad off and restores them, capture()
            # restores the layer it patches, and a final softmax stays (logits are recovered as log p)
            warnings.warn(f"{model.name}: {exc.what}; trustmap runs the model itself (nothing is changed, "
                          "gradient methods explain log-probabilities if it ends in a softmax)", stacklevel=3)
            clone, kind = model, None
            self.private_copy = False
        self._clone = clone
        # a Functional model saved with a list of inputs wants a list (else keras warns every call)
        self._list_input = isinstance(getattr(clone, "_inputs_struct", None), list)
        self.final_activation = kind
        super().__init__(rank=len(shape) - 2, channels=int(channels), spatial=spatial,
                         output="logits" if kind else output, max_batch=max_batch,
                         name=name or model.name, **kw)

    @property
    def device(self) -> torch.device:
        w = self._clone.weights
        return w[0].value.device if w else torch.device("cpu")

    @contextlib.contextmanager
    def _frozen(self) -> Iterator[None]:
        if self.private_copy:  # the clone's weights never need gradients
            yield
            return
        values = [v.value for v in self._clone.weights]
        flags = [t.requires_grad for t in values]
        try:
            for t in values:
                t.requires_grad_(False)
            yield
        finally:
            for t, f in zip(values, flags):
                t.requires_grad_(f)

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(v.value).all()) for v in self._clone.weights
                   if torch.is_floating_point(v.value))

    def _to_native(self, t: torch.Tensor) -> torch.Tensor:
        return torch.movedim(t, 1, -1) if self.channels_last else t

    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        x = self._to_native(t)
        return self._clone([x] if self._list_input else x, training=False)

    def _layer(self, name: str):
        try:
            return self._clone.get_layer(name)
        except ValueError:
            raise self._unknown_layer(name, [l.name for l in self.keras_model.layers]) from None

    @contextlib.contextmanager
    def capture(self, layer: str | None = None, edit=None) -> Iterator[Capture]:
        """Record (and optionally replace) one layer's output, given as ``(N, K, *spatial)``.

        Fused activations are part of the layer, so a Conv layer with ``activation='relu'``
        gives its post-ReLU output.
        """
        layer = layer or self.default_layer()
        target = self._layer(layer)
        cap = Capture(layer, edit)
        original = target.call
        move = self.channels_last

        def call(*args, **kwargs):
            out = original(*args, **kwargs)
            spatial_out = out.ndim > 2
            act = torch.movedim(out, -1, 1) if (move and spatial_out) else out
            act = cap._store(act)
            return torch.movedim(act, 1, -1) if (move and spatial_out) else act

        object.__setattr__(target, "call", call)
        try:
            yield cap
        finally:
            object.__delattr__(target, "call")

    def layers(self) -> list[LayerInfo]:
        out = []
        for l in self.keras_model.layers:
            try:
                shape = tuple(l.output.shape[1:])
            except Exception:
                shape = None
            out.append(LayerInfo(l.name, type(l).__name__, shape))
        return out

    def default_layer(self) -> str:
        order = [(i.name, i.kind, i.output_shape) for i in self.layers()]
        name = pick_default_layer(order)
        if name is None:
            raise self._unknown_layer("<last convolution>", [o[0] for o in order])
        return name

    def fingerprint(self) -> str:
        return hash_tensors(((v.path, v.value) for v in self.keras_model.weights), owner=self.keras_model)
