"""Adapter for any ``torch.nn.Module`` classifier taking ``(N, C, *spatial)`` input."""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import InputError, ModelLoadError
from .base import Capture, LayerInfo, Model, hash_tensors, pick_default_layer

__all__ = ["TorchModel"]

_FINAL = {nn.Softmax: "softmax", nn.Sigmoid: "sigmoid", nn.LogSoftmax: "log_softmax"}


def _infer_input(module: nn.Module) -> tuple[int, int] | None:
    """(rank, channels) from the first convolution registered in the module."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return (1 if isinstance(m, nn.Conv1d) else 2), int(m.in_channels)
        if isinstance(m, (nn.LazyConv1d, nn.LazyConv2d)):
            break
    return None


class TorchModel(Model):
    """A PyTorch classifier. The user's module is never modified: train/eval mode and
    ``requires_grad`` are restored after every call, hooks are always removed.

    Parameters
    ----------
    module : nn.Module
        The classifier. Input ``(N, C, L)`` or ``(N, C, H, W)``.
    input_shape : (C, *spatial), optional
        Needed when the module has no Conv1d/Conv2d to read the channel count from;
        spatial sizes may be ``None`` for fully convolutional models.
    output : 'auto' | 'logits' | 'probs' | 'sigmoid'
        What the module returns. A final ``nn.Softmax``/``nn.Sigmoid``/``nn.LogSoftmax`` of an
        ``nn.Sequential`` is stripped and logits are read before it.
    dtype : torch dtype, optional
        Run in this dtype (e.g. ``torch.float64``) on a private copy of the module.
    device : str or torch.device, optional
        Where to run (default: where the module's parameters are).
    max_batch : int, optional
        At most this many samples per forward call (default: sized by a memory budget).
    name : str, optional
        A name for messages (default: the module's class name).

    Raises
    ------
    ModelLoadError
        ``module`` is not an ``nn.Module``, or it has no Conv1d/Conv2d and no ``input_shape``.
    InputError
        An ``input_shape`` that is not ``(C, L)`` or ``(C, H, W)``, or an unknown ``output``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from trustmap.models import TorchModel
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> m = TorchModel(net, input_shape=(1, 32))
    >>> m.n_classes, m.framework, m.default_layer()
    (3, 'torch', '1')
    >>> m.probs(np.zeros((2, 32), np.float32)).shape           # (N, L) signals: one channel
    (2, 3)
    """

    framework = "torch"

    def __init__(self, module: nn.Module, *, input_shape: Sequence[int | None] | None = None,
                 output: str = "auto", dtype: torch.dtype | None = None, device=None,
                 max_batch: int | None = None, name: str | None = None, **kw) -> None:
        if not isinstance(module, nn.Module):
            raise ModelLoadError("not a torch module", parameter="model", expected="a torch.nn.Module",
                                 got=type(module).__name__, fix="pass the nn.Module itself")
        if input_shape is not None:
            input_shape = tuple(input_shape)
            if len(input_shape) not in (2, 3):
                raise InputError("input_shape must be (C, L) or (C, H, W)", parameter="input_shape",
                                 expected="2 or 3 sizes", got=input_shape, fix="e.g. input_shape=(12, 250)")
            rank, channels, spatial = len(input_shape) - 1, int(input_shape[0]), input_shape[1:]
        else:
            inferred = _infer_input(module)
            if inferred is None:
                raise ModelLoadError("cannot tell the input channels of this module (no Conv1d/Conv2d found)",
                                     parameter="input_shape", expected="input_shape=(C, *spatial)", got=None,
                                     fix="pass input_shape=(channels, length) or (channels, height, width)")
            rank, channels = inferred
            spatial = (None,) * rank
        self.module = module
        body, kind = module, output
        self.final_activation: str | None = None
        if isinstance(module, nn.Sequential) and len(module) > 1 and type(module[-1]) in _FINAL:
            body = module[:-1]  # a new Sequential sharing the submodules; the user's is untouched
            self.final_activation = _FINAL[type(module[-1])]
            kind = "logits"  # the body returns the pre-activation scores
        if dtype is not None and dtype != next((p.dtype for p in module.parameters()), torch.float32):
            body = copy.deepcopy(body).to(dtype)
        self._body = body
        self._dtype = dtype or next((p.dtype for p in module.parameters()), torch.float32)
        self._device = torch.device(device) if device is not None else next(
            (p.device for p in module.parameters()), torch.device("cpu"))
        if device is not None and self._device != next((p.device for p in module.parameters()), self._device):
            self._body = copy.deepcopy(self._body).to(self._device)
        super().__init__(rank=rank, channels=channels, spatial=spatial, output=kind, max_batch=max_batch,
                         name=name or type(module).__name__, **kw)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        out = self._body(t)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in list(self._body.parameters()) + list(self._body.buffers())
                   if v.is_floating_point())

    @contextlib.contextmanager
    def _frozen(self) -> Iterator[None]:
        mods = list(self._body.modules())
        modes = [m.training for m in mods]
        params = list(self._body.parameters())
        grads = [p.requires_grad for p in params]
        try:
            self._body.eval()
            for p in params:
                p.requires_grad_(False)
            yield
        finally:
            for m, mode in zip(mods, modes):
                m.training = mode
            for p, g in zip(params, grads):
                p.requires_grad_(g)

    def _modules(self) -> dict[str, nn.Module]:
        return {n: m for n, m in self._body.named_modules() if n}

    @contextlib.contextmanager
    def capture(self, layer: str | None = None, edit=None) -> Iterator[Capture]:
        """Record (and optionally replace, via ``edit``) one module's output; hook removed on exit."""
        layer = layer or self.default_layer()
        mods = self._modules()
        if layer not in mods:
            raise self._unknown_layer(layer, list(mods))
        cap = Capture(layer, edit)

        def hook(_m, _inp, out):
            if isinstance(out, (tuple, list)):
                return type(out)([cap._store(out[0]), *out[1:]])
            return cap._store(out)

        handle = mods[layer].register_forward_hook(hook)
        try:
            yield cap
        finally:
            handle.remove()

    def _trace(self) -> list[tuple[str, str, tuple | None]]:
        """(name, class, output shape) of every leaf-or-hooked module in execution order."""
        mods = self._modules()
        order: list[tuple[str, str, tuple | None]] = []
        if self.spatial is None or None in self.spatial:
            return [(n, type(m).__name__, None) for n, m in mods.items()]
        handles = []
        for n, m in mods.items():
            def hook(_m, _i, out, n=n):
                o = out[0] if isinstance(out, (tuple, list)) else out
                order.append((n, type(_m).__name__, tuple(o.shape[1:]) if isinstance(o, torch.Tensor) else None))
            handles.append(m.register_forward_hook(hook))
        try:
            probe = torch.zeros((1, self.channels, *self.spatial), dtype=self.dtype, device=self.device)
            with self.frozen(), torch.inference_mode():
                self._body(probe)
        finally:
            for h in handles:
                h.remove()
        return order

    def layers(self) -> list[LayerInfo]:
        seen: dict[str, LayerInfo] = {}
        for n, kind, shape in self._trace():
            seen.setdefault(n, LayerInfo(n, kind, shape))
        for n, m in self._modules().items():  # modules not executed in the probe
            seen.setdefault(n, LayerInfo(n, type(m).__name__, None))
        return list(seen.values())

    def default_layer(self) -> str:
        leaves = {n for n, m in self._modules().items() if not list(m.children())}
        order = [o for o in self._trace() if o[0] in leaves]
        name = pick_default_layer(order)
        if name is None:
            raise self._unknown_layer("<last convolution>", [o[0] for o in order])
        return name

    def _class_hint(self) -> int | None:
        linears = [m for m in self._body.modules() if isinstance(m, nn.Linear)]
        if not linears:
            return None
        return max(2, int(linears[-1].out_features))

    def fingerprint(self) -> str:
        return hash_tensors(iter(sorted(self.module.state_dict().items())), owner=self.module)
