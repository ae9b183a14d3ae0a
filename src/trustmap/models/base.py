"""The adapter interface every model kind implements.

Inside trustmap a model is called on internal tensors ``(N, C, *spatial)`` and returns
``(N, K)`` scores with ``K >= 2`` classes. ``logits_t`` is the pre-softmax score (a fused
final softmax or sigmoid is stripped where the adapter can reach the pre-activation;
otherwise the logits are recovered as ``log p`` (softmax) or ``log(p / (1 - p))``
(sigmoid), which give the same probabilities). A single-output sigmoid model is a
two-class model whose logits are ``[0, z]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import DataError, LayerError, ModelOutputError, NonFiniteError, TargetError, UnsupportedError
from ..layout import Layout, resolve_layout

__all__ = ["Model", "LayerInfo", "Capture", "OUTPUT_KINDS", "DEFAULT_BUDGET_BYTES", "preserved_rng", "TorchView",
           "row_slices"]

OUTPUT_KINDS = ("auto", "logits", "probs", "sigmoid")
DEFAULT_BUDGET_BYTES = 256 * 2**20


def row_slices(n: int, rows: int) -> list[slice]:
    """The one chunker: consecutive slices of ``n`` rows, ``rows`` at a time (at least one row).

    Every batched loop in trustmap slices its rows here; how many rows a chunk holds is the
    caller's rule (:meth:`Model.batch_size` for model calls, a working-set bound elsewhere)."""
    rows = max(1, int(rows))
    return [slice(i, min(n, i + rows)) for i in range(0, n, rows)]
ACTIVATION_NAMES = ("relu", "leakyrelu", "elu", "gelu", "silu", "tanh", "sigmoid", "activation", "relu6",
                    "selu", "softplus", "mish", "hardswish", "prelu")
CONV_NAMES = ("conv",)


@dataclass(frozen=True)
class LayerInfo:
    """A layer: its name (what ``capture`` takes), its class, and its output shape for one sample.

    Attributes
    ----------
    name : str
        The layer's name, as :meth:`Model.capture` takes it.
    kind : str
        The layer's class name (``'Conv1d'``, ``'ReLU'``, ``'Dense'``...).
    output_shape : tuple or None
        The output shape for one sample, in the framework's own order; ``None`` where unknown.

    Examples
    --------
    >>> import torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> m = trustmap.load_model(net, input_shape=(1, 32))
    >>> m.layers()[0].name, m.layers()[0].kind
    ('0', 'Conv1d')
    """

    name: str
    kind: str
    output_shape: tuple | None

    def __str__(self) -> str:
        return f"{self.name:<30} {self.kind:<24} {self.output_shape}"


class Capture:
    """Holds the activation of one layer during a forward pass, in ``(N, K, *spatial)`` order.

    What :meth:`Model.capture` yields; ``activation`` is set by the forward passes run inside the block.

    Parameters
    ----------
    layer : str
        The layer's name.
    edit : callable, optional
        ``edit(activation) -> activation``: what the network continues with instead (e.g. an
        ablated activation); ``None`` leaves it unchanged.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> m = trustmap.load_model(net, input_shape=(1, 32))
    >>> with m.capture("1") as cap:                 # the ReLU after the convolution
    ...     _ = m.logits(np.zeros((2, 32), np.float32))
    >>> tuple(cap.activation.shape)
    (2, 4, 30)
    """

    def __init__(self, layer: str, edit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.layer = layer
        self.edit = edit
        self.activation: torch.Tensor | None = None

    def _store(self, act: torch.Tensor) -> torch.Tensor:
        """Record the activation; apply ``edit`` if set; return what the network continues with."""
        self.activation = act
        if self.edit is not None:
            act = self.edit(act)
        return act


def _log_probs(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def sigmoid_logit(p: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(p.dtype).eps
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


class Model:
    """A classifier seen through trustmap: internal layout, logits and probabilities, layers.

    Made by :func:`trustmap.load_model`; every explainer, the localizer and the metrics take one
    (or anything ``load_model`` takes). ``logits(x)`` gives the pre-softmax scores (a fused final
    softmax or sigmoid is stripped), ``probs(x)`` the probabilities, ``predict(x)`` the classes;
    ``layers()`` lists the layers, ``default_layer()`` is the last convolution (after its
    activation), ``capture(layer)`` records activations and gradients; ``n_classes``,
    ``framework`` (``'torch'``, ``'keras'``, ``'onnx'``) and ``differentiable`` describe it.
    Inputs are accepted in any layout (:mod:`trustmap.layout`); a single sigmoid output is a
    two-class model.

    Parameters
    ----------
    rank : int
        1 for signals, 2 for images.
    channels : int
        Input channels.
    spatial : sequence of int or None
        The input's spatial sizes (``None`` entries, or ``None``: learnt from the first input).
    output : 'auto' | 'logits' | 'probs' | 'sigmoid'
        What the model returns; ``'auto'`` looks at the first outputs.
    max_batch : int, optional
        At most this many samples per forward call (default: sized by ``budget_bytes``).
    budget_bytes : int
        The memory budget that sizes forward chunks.
    name : str, optional
        A name for messages (default: the class name).

    Raises
    ------
    InputError
        An unknown ``output`` kind.

    Examples
    --------
    >>> import numpy as np, trustmap
    >>> from trustmap import zoo
    >>> m = trustmap.load_model(zoo.mnist1d_cnn())
    >>> m.probs(np.zeros((4, 40), np.float32)).sum(axis=1).round(5)     # rows sum to 1
    array([1., 1., 1., 1.], dtype=float32)
    >>> [layer.name for layer in m.layers()][:3]      # the MNIST-1D reference CNN
    ['conv1', 'relu1', 'conv2']

    Subclasses implement ``_forward`` (raw outputs in internal layout), ``_pre_activation``
    (logits where reachable), ``layers``, ``capture`` and ``fingerprint``.
    """

    framework: str = "?"
    differentiable: bool = True

    def __init__(self, *, rank: int, channels: int, spatial: Sequence[int | None] | None,
                 output: str = "auto", max_batch: int | None = None,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES, name: str | None = None) -> None:
        if output not in OUTPUT_KINDS:
            from ..errors import InputError

            raise InputError("unknown output kind", parameter="output", expected=" or ".join(OUTPUT_KINDS),
                             got=output, fix="say what the model returns: output='logits' or output='probs'")
        self.rank = int(rank)
        self.channels = int(channels)
        self.spatial = None if spatial is None else tuple(None if s is None else int(s) for s in spatial)
        self.output = output
        self.max_batch = max_batch
        self.budget_bytes = int(budget_bytes)
        self.name = name or type(self).__name__
        self._n_classes: int | None = None
        self._freeze_depth = 0

    # ---- to implement -------------------------------------------------------------
    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        """The scores the model computes before any final activation we strip, ``(N, K)``."""
        raise NotImplementedError

    def layers(self) -> list[LayerInfo]:
        raise NotImplementedError

    def default_layer(self) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def capture(self, layer: str | None = None, edit=None) -> Iterator[Capture]:
        raise UnsupportedError(f"{self.framework} models expose no layers", parameter="layer",
                               fix="use a method that needs no layer (occlusion, lime, kernelshap)")
        yield  # pragma: no cover

    def fingerprint(self) -> str:
        raise NotImplementedError

    def _class_hint(self) -> int | None:
        """The class count read from the architecture, when no probe input can be built."""
        return None

    @contextlib.contextmanager
    def _frozen(self) -> Iterator[None]:
        yield

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    # ---- shared -----------------------------------------------------------------
    @contextlib.contextmanager
    def frozen(self) -> Iterator["Model"]:
        """Evaluation mode, no parameter gradients; everything restored on exit (also on error)."""
        self._freeze_depth += 1
        try:
            if self._freeze_depth == 1:
                with self._frozen():
                    yield self
            else:
                yield self
        finally:
            self._freeze_depth -= 1

    def logits_t(self, t: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores ``(N, K)`` for an internal tensor; differentiable where the model is.

        Raises :class:`~trustmap.errors.ModelOutputError` when the model does not return one row of
        class scores per sample, and :class:`~trustmap.errors.NonFiniteError` when a score is NaN or
        Inf (no method ever turns non-finite scores into finite maps).
        """
        out = self.check_output(self._raw(t), len(t))
        finite = torch.isfinite(out.detach().reshape(len(out), -1)).all(1)
        if not bool(finite.all()):
            raise self.nonfinite_error(t, torch.nonzero(~finite).view(-1))
        if out.ndim == 1:
            out = out[:, None]
        kind = self._output_kind(out)
        if kind == "probs":
            out = _log_probs(out)
        elif kind == "sigmoid":
            out = sigmoid_logit(out)
        if out.shape[1] == 1:  # one sigmoid/logit unit: a two-class model with logits [0, z]
            out = torch.cat([torch.zeros_like(out), out], dim=1)
        return out

    def check_output(self, out, n: int) -> torch.Tensor:
        """``out`` if it is class scores for ``n`` samples, ``(n, K)`` (or ``(n,)``: one logit); else a
        :class:`~trustmap.errors.ModelOutputError` naming the shape."""
        shape = tuple(out.shape) if hasattr(out, "shape") else None
        # a multiple of n rows: a layer edit may batch several variants of each input (Ablation-CAM)
        if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] == 0 or \
                out.shape[0] % max(1, n) != 0 or (out.ndim == 2 and out.shape[1] < 1):
            raise ModelOutputError("the model does not return class scores", parameter="model",
                                   expected=f"one row of K class scores per sample: shape ({n}, K) for {n} "
                                            "input(s) (a classifier's logits or probabilities)",
                                   got=f"shape {shape}" if shape is not None else type(out).__name__,
                                   fix="pool or flatten the output to (N, K) in the model (e.g. a final "
                                       "GlobalAveragePooling/Flatten + Dense/Linear), or wrap it in a module that does")
        if not (out.is_floating_point()):
            out = out.float()
        return out

    def check_shape(self) -> "Model":
        """When the input size is known, run two zero inputs and check the model returns ``(2, K)``
        class scores (a :class:`~trustmap.errors.ModelOutputError` otherwise); returns self."""
        if self.spatial is None or None in self.spatial:
            return self
        probe = torch.zeros((2, self.channels, *self.spatial), dtype=self.dtype, device=self.device)
        with self.frozen(), torch.inference_mode():
            out = self._raw(probe)
        self.check_output(out, 2)
        return self

    def _weights_finite(self) -> bool | None:
        """Whether every weight is finite (``None``: unknown)."""
        return None

    def nonfinite_error(self, t: torch.Tensor, rows, offset: int = 0) -> NonFiniteError:
        """The error for NaN/Inf scores on rows ``rows`` of the internal batch ``t``."""
        rows = [int(r) for r in (rows.tolist() if hasattr(rows, "tolist") else rows)]
        peak = float(t.detach().abs().max()) if t.numel() else 0.0
        weights = self._weights_finite()
        if weights is False:
            return NonFiniteError("the model's weights contain NaN or Inf, so its scores are not finite",
                                  parameter="model", expected="finite weights", got="NaN/Inf weights",
                                  fix="reload or retrain the model (check the training for divergence)")
        first = f"sample {rows[0] + offset}" if rows else "some rows"
        return NonFiniteError(f"the model's scores are not finite (NaN or Inf) for {len(rows) or 'some'} input row(s) "
                              f"(the first: {first})", parameter="x", expected="inputs whose scores are finite",
                              got=f"NaN/Inf scores; the largest |input| is {peak:.3g}",
                              fix="bring the inputs to the scale the model was trained on (e.g. standardize "
                                  "them) and check the model for overflow")

    def nonfinite_rows(self, t: torch.Tensor) -> np.ndarray:
        """Indices of the rows of the internal batch ``t`` whose scores are NaN or Inf (forward only)."""
        bad = []
        with self.frozen(), torch.inference_mode():
            for s in self.chunks(len(t), t[0].numel()):
                out = self.check_output(self._raw(t[s]), s.stop - s.start)
                ok = torch.isfinite(out.reshape(len(out), -1)).all(1).cpu().numpy()
                bad.extend((np.nonzero(~ok)[0] + s.start).tolist())
        return np.asarray(bad, dtype=np.int64)

    def probs_t(self, t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits_t(t), dim=1)

    def _output_kind(self, out: torch.Tensor) -> str:
        """What ``_raw`` returns: 'logits', 'probs' (softmax) or 'sigmoid'."""
        if self.output != "auto":
            return self.output
        detected = "logits"
        with torch.no_grad():
            o = out.detach()
            # rows of K >= 2 non-negative scores summing to one are softmax outputs; a single output
            # cannot be told apart from a logit, so it is taken as a logit (pass output='sigmoid')
            in_unit = bool(((o >= 0) & (o <= 1)).all())
            if o.shape[1] > 1 and in_unit and bool(torch.allclose(o.sum(1), torch.ones_like(o[:, 0]), atol=1e-4)):
                detected = "probs"
        if detected != "logits":
            warnings.warn(
                f"{self.name}: the model's outputs look like probabilities; "
                "logits are recovered from them. Pass output='logits' if that is wrong, or strip the final "
                "activation to give gradient methods the true pre-softmax score.", stacklevel=3)
        self.output = detected
        return detected

    # ---- input handling ------------------------------------------------------------
    def resolve(self, x, layout=None, parameter: str = "x") -> Layout:
        return resolve_layout(tuple(x.shape), rank=self.rank, channels=self.channels, spatial=self.spatial,
                              layout=layout, parameter=parameter)

    def to_internal(self, x, layout=None, parameter: str = "x") -> tuple[torch.Tensor, Layout]:
        """Validate the caller's array and return ``((N, C, *spatial) tensor, its Layout)``."""
        x = check_array(x, parameter)
        lay = self.resolve(x, layout, parameter)
        t = lay.to_internal(x)
        if not isinstance(t, torch.Tensor):
            t = torch.from_numpy(np.ascontiguousarray(t))
        t = t.to(device=self.device, dtype=self.dtype)
        if self.spatial is None or None in self.spatial:
            self.spatial = tuple(t.shape[2:])
        return t.contiguous(), lay

    def batch_size(self, sample_numel: int, factor: float = 64.0) -> int:
        """How many samples one forward chunk takes under the memory budget."""
        if self.max_batch is not None:
            return max(1, int(self.max_batch))
        per = max(1, sample_numel) * 4 * factor
        # on CPU, chunks beyond ~1000 rows stop paying (cache misses); a GPU takes bigger ones
        cap = 4096 if self.device.type != "cpu" else 1024
        return int(max(1, min(cap, self.budget_bytes // per)))

    def chunks(self, n: int, sample_numel: int, factor: float = 64.0) -> Iterator[slice]:
        """Slices of ``n`` samples sized by :meth:`batch_size` (:func:`trustmap.models.base.row_slices`)."""
        return iter(row_slices(n, self.batch_size(sample_numel, factor)))

    def _batched(self, fn: Callable[[torch.Tensor], torch.Tensor], x, layout, batch_size) -> np.ndarray:
        t, _ = self.to_internal(x, layout)
        if batch_size is not None:
            slices = row_slices(len(t), batch_size)
        else:
            slices = list(self.chunks(len(t), t[0].numel()))
        outs = []
        with self.frozen(), torch.inference_mode():
            for s in slices:
                outs.append(fn(t[s]).detach().cpu())
        return torch.cat(outs).numpy()

    def logits(self, x, layout=None, batch_size: int | None = None) -> np.ndarray:
        """Pre-softmax scores ``(N, K)`` for the caller's array (numpy), batched under the budget."""
        return self._batched(self.logits_t, x, layout, batch_size)

    def probs(self, x, layout=None, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` for the caller's array (numpy)."""
        return self._batched(self.probs_t, x, layout, batch_size)

    def predict(self, x, layout=None, batch_size: int | None = None) -> np.ndarray:
        """Predicted class per sample ``(N,)``."""
        return self.logits(x, layout, batch_size).argmax(1)

    @property
    def n_classes(self) -> int:
        """Number of classes K (a single sigmoid output counts as two)."""
        if self._n_classes is None:
            if self.spatial is None or None in self.spatial:
                hint = self._class_hint()
                if hint is not None:
                    return hint
                raise UnsupportedError("the number of classes is not known before the model has seen data",
                                       parameter="input_shape", fix="pass input_shape=(C, *spatial) to load_model")
            probe = torch.zeros((2, self.channels, *self.spatial), dtype=self.dtype, device=self.device)
            with self.frozen(), torch.inference_mode():
                self._n_classes = int(self.logits_t(probe).shape[1])
        return self._n_classes

    def resolve_targets(self, target, x_internal: torch.Tensor | None = None, n: int | None = None,
                        logits: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
        """``None`` (predicted class), an int, or one int per sample -> int array ``(N,)``."""
        n = n if n is not None else len(x_internal)
        k = self.n_classes
        if target is None:
            if logits is None:
                with self.frozen(), torch.inference_mode():
                    logits = torch.cat([self.logits_t(x_internal[s]) for s in self.chunks(n, x_internal[0].numel())])
            logits = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
            return logits.argmax(1).astype(np.int64)
        arr = np.asarray(target)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or
                                       (np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0))):
            raise TargetError("target must be None, an int, or one int per sample", parameter="target",
                              expected="None, int, or int array", got=repr(target)[:80],
                              fix="pass class indices, e.g. target=3 or target=y")
        arr = arr.astype(np.int64).reshape(-1)
        if arr.size == 1:
            arr = np.full(n, int(arr[0]), dtype=np.int64)
        if arr.size != n:
            raise TargetError("one target per sample is needed", parameter="target",
                              expected=f"{n} targets", got=f"{arr.size} targets",
                              fix="pass None, a single int, or an array as long as the batch")
        bad = (arr < 0) | (arr >= k)
        if bad.any():
            raise TargetError("target out of range", parameter="target", expected=f"classes 0..{k - 1}",
                              got=int(arr[bad][0]), fix=f"pick a class index below {k}")
        return arr

    def as_torch(self, layout: str | None = None) -> "torch.nn.Module":
        """A ``torch.nn.Module`` view of this model for tools that expect one (Captum, Quantus).

        ``forward(x)`` takes a tensor in ``layout`` (default: channels-first, ``'NCL'`` for 1D and
        ``'NCHW'`` for 2D models; ``'NLC'``/``'NHWC'`` etc. also work) and returns the pre-softmax
        scores ``(N, K)`` (:meth:`logits_t`), differentiable where the model is. Any loaded model
        has one: a channels-last Keras model seen channels-first, an ONNX model (not
        differentiable). The view holds no parameters and never changes the model's mode or
        weights: each call runs in evaluation mode (:meth:`frozen`).
        """
        return TorchView(self, layout)

    def _unknown_layer(self, layer: str, names: list[str]) -> LayerError:
        if not isinstance(layer, str):
            return LayerError("a layer is named by a string", parameter="layer",
                              expected="one of " + ", ".join(names[:40]), got=repr(layer),
                              fix="pass the layer's name (model.layers() lists them), or None for the default")
        close = [n for n in names if layer.lower() in n.lower() or n.lower() in layer.lower()][:5]
        return LayerError("no layer of that name", parameter="layer", expected="one of " + ", ".join(names[:40]),
                          got=layer, fix=("did you mean " + " or ".join(close) + "?") if close else
                          "call model.layers() to list the names")

    def __repr__(self) -> str:
        sp = "x".join("?" if s is None else str(s) for s in (self.spatial or ("?",)))
        return f"<{type(self).__name__} {self.name!r}: {self.channels} channel(s) x {sp}, output={self.output}>"


class TorchView(torch.nn.Module):
    """What :meth:`Model.as_torch` returns: ``forward(x in layout) -> logits``."""

    def __init__(self, model: Model, layout: str | None = None) -> None:
        super().__init__()
        from ..layout import LAYOUTS

        name = layout if layout is not None else ("NCL" if model.rank == 1 else "NCHW")
        lay = Layout(name)
        if LAYOUTS[name][0] != model.rank:
            from ..errors import LayoutError

            raise LayoutError("layout does not have the model's rank", parameter="layout",
                              expected=f"a rank-{model.rank} layout, e.g. {'NCL' if model.rank == 1 else 'NCHW'}",
                              got=name, fix="pass the layout of the tensors you will feed")
        object.__setattr__(self, "trustmap_model", model)  # not a submodule: the view owns nothing
        self.layout = name
        self._lay = lay
        self.eval()  # the view always evaluates the model in evaluation mode; say so to tools that check

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.trustmap_model
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x))
        t = self._lay.to_internal(x).to(device=m.device, dtype=m.dtype)
        with m.frozen():
            return m.logits_t(t)

    def extra_repr(self) -> str:
        return f"{self.trustmap_model!r}, layout={self.layout!r}"


def check_array(x, parameter: str = "x"):
    """Numeric, finite, non-empty; returns a numpy array or a float tensor.

    Parameters
    ----------
    x : array-like or torch.Tensor
        A batch: the leading axis holds the samples. Lists and tuples are converted with ``np.asarray``.
    parameter : str
        The argument's name, for error messages.

    Returns
    -------
    ndarray or torch.Tensor
        ``x`` (integer arrays as float32, a tensor detached and made floating-point).

    Raises
    ------
    DataError
        Not an array, ragged, not real-valued, empty, or with NaN or Inf values.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.models import check_array
    >>> check_array([[1, 2], [3, 4]]).dtype
    dtype('float32')
    >>> check_array(np.array([[1.0, np.nan]]))
    Traceback (most recent call last):
    ...
    trustmap.errors.DataError: x: 1 NaN or Inf value(s), the first at index (0, 1); ...
    """
    if isinstance(x, torch.Tensor):
        if x.dtype in (torch.bool,) or x.is_complex():
            raise DataError("tensor dtype is not real-valued", parameter=parameter, expected="a float tensor",
                            got=str(x.dtype), fix="convert with x.float()")
        x = x.detach()
        if not x.is_floating_point():
            x = x.float()
        xs = x
        finite = torch.isfinite(xs)
        n_bad = int((~finite).sum())
        first = tuple(int(i) for i in torch.nonzero(~finite)[0]) if n_bad else None
    else:
        if isinstance(x, (list, tuple)):
            try:
                x = np.asarray(x)
            except ValueError as exc:
                raise DataError("ragged input", parameter=parameter, expected="a rectangular array",
                                got="sequences of different lengths", fix="pad or crop to one length") from exc
        if not isinstance(x, np.ndarray):
            raise DataError("input is not an array", parameter=parameter, expected="a numpy array or torch tensor",
                            got=type(x).__name__, fix="convert with np.asarray(x)")
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise DataError("array dtype is not numeric", parameter=parameter, expected="a float or int array",
                            got=str(x.dtype), fix="convert with x.astype(np.float32)")
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        finite = np.isfinite(x)
        n_bad = int((~finite).sum())
        first = tuple(int(i) for i in np.argwhere(~finite)[0]) if n_bad else None
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError("empty batch", parameter=parameter, expected="at least one sample",
                        got=f"shape {tuple(x.shape)}", fix="pass a non-empty array")
    if n_bad:
        raise DataError(f"{n_bad} NaN or Inf value(s), the first at index {first}", parameter=parameter,
                        expected="finite values", got="NaN/Inf",
                        fix="impute or drop those samples (e.g. np.nan_to_num) before explaining")
    return x


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """The global random states (torch CPU and initialized CUDA devices, NumPy's legacy global, Python's
    ``random``) are exactly what they were on entry when the block ends, however it ends: building
    layers (Keras clones, zoo modules) draws from them, and the user's random streams must not move.

    Yields
    ------
    None
        The body of the ``with`` block runs; the states are restored when it exits (normally or by an exception).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.models import preserved_rng
    >>> np.random.seed(0)
    >>> with preserved_rng():
    ...     _ = np.random.rand(5)                   # draws inside the block...
    >>> np.random.rand() == np.random.RandomState(0).rand()     # ...do not move the stream
    True
    """
    import random

    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else None
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(np_state)
        random.setstate(py_state)


#: owner (an nn.Module, a keras.Model) -> (key of its tensors' state, digest): :func:`hash_tensors` skips
#: rehashing weights that have not changed since the last call (a per-call cost on large models)
_HASH_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def hash_tensors(named: Iterator[tuple[str, Any]], owner: Any = None) -> str:
    """sha256 (first 16 hex digits) of named tensors/arrays: names, shapes and bytes.

    With ``owner`` (the object holding the tensors) the digest is cached: it is reused while every
    tensor has the same storage, autograd version counter (bumped by each in-place change: optimizer
    steps, ``load_state_dict``, ``with torch.no_grad(): p.mul_(…)``), shape, dtype and sum; a change
    that bypasses the version counter (``p.data.copy_(…)``, writes through a NumPy view) still changes
    the sum in practice, and the bytes are hashed again.
    """
    items = list(named)
    key = None
    if owner is not None and items and all(isinstance(v, torch.Tensor) for _, v in items):
        with torch.no_grad():
            sums = torch.stack([v.detach().sum().to(torch.float64) if v.is_floating_point() and v.numel()
                                else torch.zeros((), dtype=torch.float64, device=v.device) for _, v in items])
        key = (tuple((n, v.data_ptr(), v._version, tuple(v.shape), v.dtype, v.device) for n, v in items),
               tuple(sums.cpu().tolist()))
        try:
            hit = _HASH_CACHE.get(owner)
        except TypeError:  # not weak-referenceable: no cache
            hit, key = None, None
        if hit is not None and hit[0] == key:
            return hit[1]
    h = hashlib.sha256()
    for name, value in items:
        a = value.detach().cpu().contiguous() if isinstance(value, torch.Tensor) else np.asarray(value)
        a = a.numpy() if isinstance(a, torch.Tensor) else a
        h.update(name.encode())
        h.update(str(a.shape).encode())
        a = np.ascontiguousarray(a)
        h.update(memoryview(a).cast("B") if a.size else b"")  # the bytes, without a copy
    digest = h.hexdigest()[:16]
    if key is not None:
        _HASH_CACHE[owner] = (key, digest)
    return digest


def pick_default_layer(order: list[tuple[str, str, tuple | None]]) -> str | None:
    """Last convolution (followed by its BatchNorm/activation when they come right after it).

    ``order`` lists (name, class name, output shape) in execution order.
    """
    last = None
    for i, (name, kind, _shape) in enumerate(order):
        if any(c in kind.lower() for c in CONV_NAMES) and "transpose" not in kind.lower():
            last = i
    if last is None:
        # no convolution: the last layer that still has spatial axes
        spatial = [i for i, (_, _, s) in enumerate(order) if s is not None and len(s) >= 2]
        return order[spatial[-1]][0] if spatial else None
    j = last
    shape = order[last][2]
    for i in range(last + 1, len(order)):
        kind = order[i][1].lower()
        if order[i][2] != shape:
            break
        if "norm" in kind:
            continue
        if any(a == kind or kind.startswith(a) for a in ACTIVATION_NAMES):
            j = i
            continue
        break
    return order[j][0]


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
