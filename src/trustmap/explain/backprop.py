"""Modified-backpropagation and baseline-gradient methods: Input×Gradient, Deconvolution, DeepLIFT
(Rescale), DeepLIFT-SHAP and GradientSHAP.

Deconvolution and DeepLIFT change the backward rule of the model's nonlinearities the same way
guided backprop does (:func:`trustmap.explain.gradients.guided_relu`): a
``torch.overrides.TorchFunctionMode`` intercepts the nonlinearity *calls* during the forward pass
(``nn.ReLU``, ``F.relu``, ``torch.sigmoid``, ..., and the Keras torch backend's fused activations,
which are the same functional calls) and swaps in an autograd function with the method's backward
rule. The user's model is never changed and nothing is left behind after an exception.

DeepLIFT runs the input and its reference through the model as one batch ``[x; x_ref]`` (as Captum
does), so every intercepted call sees both activations and applies the Rescale multiplier
``Δout / Δin`` on the way back. Linear layers (convolutions, dense, batch norm in eval mode,
average pooling, flatten) keep their gradient, which is their exact multiplier. Max pooling has three
rules (``maxpool=``, see :class:`DeepLift`); the default reproduces Captum's maps, hooks included.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import InputError, ShapeError
from ..models import Model
from .base import (Explainer, check_choice, check_number, chunk_rows, per_sample_normal, pick_scores, row_chunks,
                   sample_seeds)
from .gradients import IG_BASELINES, _gradients, rule_gradients
from .registry import register
from .segments import resolve_baseline

__all__ = ["InputXGradient", "Deconvolution", "DeepLift", "DeepLiftShap", "GradientShap", "deconv_relu",
           "deeplift_rules", "reference_distribution", "DEEPLIFT_EPS", "MAXPOOL_RULES"]

#: below this |Δin| the Rescale multiplier falls back to the local derivative (Captum's eps)
DEEPLIFT_EPS = 1e-10


def _fns(*names_in: tuple[object, str]) -> set:
    out = set()
    for mod, name in names_in:
        f = getattr(mod, name, None)
        if f is not None:
            out.add(f)
    return out


_RELU = _fns((torch, "relu"), (F, "relu"), (torch.Tensor, "relu"))
_RELU_INPLACE = _fns((torch, "relu_"), (F, "relu_"), (torch.Tensor, "relu_"))
#: elementwise nonlinearities with the Rescale rule, and how to call each with its extra arguments
_ELEMENTWISE = _RELU | _RELU_INPLACE | _fns(
    (torch, "sigmoid"), (F, "sigmoid"), (torch.Tensor, "sigmoid"), (torch, "tanh"), (F, "tanh"),
    (torch.Tensor, "tanh"), (F, "elu"), (F, "leaky_relu"), (F, "gelu"), (F, "silu"), (F, "softplus"),
    (F, "relu6"), (F, "hardtanh"), (F, "selu"), (F, "celu"), (F, "mish"))
_MAXPOOL = {1: _fns((F, "max_pool1d"), (F, "_max_pool1d"), (F, "max_pool1d_with_indices"), (torch, "max_pool1d")),
            2: _fns((F, "max_pool2d"), (F, "_max_pool2d"), (F, "max_pool2d_with_indices"), (torch, "max_pool2d"))}
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _is_inplace(func, args, kwargs) -> bool:
    return func in _RELU_INPLACE or bool(kwargs.get("inplace", False)) or (
        func is F.relu and len(args) > 1 and bool(args[1]))


def _first_tensor(args, kwargs):
    return args[0] if args else kwargs.get("input", kwargs.get("self"))


def activation_call(func, args, kwargs):
    """``(x, fn, inplace)`` for an intercepted elementwise activation call: its input, the activation as an
    out-of-place function of one tensor (its other arguments bound), and whether the call asked for an
    in-place result (``nn.LeakyReLU(inplace=True)`` passes ``inplace`` positionally)."""
    x = _first_tensor(args, kwargs)
    rest_a = list(args[1:])
    rest_k = {k: v for k, v in kwargs.items() if k not in ("input", "self")}
    inplace = func in _RELU_INPLACE or bool(rest_k.pop("inplace", False))
    if rest_a and isinstance(rest_a[-1], bool):  # a positional inplace flag (F.relu, F.elu, F.leaky_relu, ...)
        inplace = inplace or rest_a.pop()
    base = torch.relu if (func in _RELU or func in _RELU_INPLACE) else func

    def fn(v, base=base, rest_a=tuple(rest_a), rest_k=rest_k):
        return base(v, *rest_a, **rest_k)

    return x, fn, bool(inplace)


# ---- deconvolution -------------------------------------------------------------------------
def _rule_forward(ctx, x, fn, inplace: bool):
    """The forward of a rule-carrying activation (``fn`` applied as the model did, in place when it was);
    records ``fn`` on ``ctx`` and returns ``(its input, its output)``."""
    ctx.fn = fn
    if inplace:
        xin = x.detach().clone()
        x.copy_(fn(xin))
        ctx.mark_dirty(x)
        return xin, x
    return x, fn(x)


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward ``relu(grad)`` whatever the input's sign (Zeiler & Fergus' deconvnet)."""

    @staticmethod
    def forward(ctx, x, inplace: bool):
        if inplace:
            ctx.mark_dirty(x)
            return x.clamp_(min=0)
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0), None


class _DeconvMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU or func in _RELU_INPLACE:
            x = _first_tensor(args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                self.count += 1
                inplace = _is_inplace(func, args, kwargs) and not (x.is_leaf and x.requires_grad)
                return _DeconvReLU.apply(x, inplace)
        return func(*args, **kwargs)


@contextlib.contextmanager
def deconv_relu() -> Iterator[_DeconvMode]:
    """Within this block every ReLU call backpropagates ``relu(grad)`` (the deconvnet rule). Yields
    the mode; ``count`` is the number of ReLU calls replaced."""
    mode = _DeconvMode()
    with mode:
        yield mode


# ---- DeepLIFT Rescale ------------------------------------------------------------------------
#: how DeepLIFT treats max pooling (see :class:`DeepLift`)
MAXPOOL_RULES = ("captum", "cross_max", "gradient")

_POOL = {1: F.max_pool1d_with_indices, 2: F.max_pool2d_with_indices}
#: calls that only move or copy elements: a rule call's output keeps its place in a run of rule calls
#: through them (the Keras torch backend's channels-last → channels-first ``permute(...).contiguous()``
#: before pooling)
_LAYOUT = _fns((torch, "permute"), (torch.Tensor, "permute"), (torch.Tensor, "contiguous"), (torch, "transpose"),
               (torch.Tensor, "transpose"))


class _Scratch:
    """Scratch memory reused by the backward calls of one DeepLIFT run: a large fresh tensor costs page
    faults on every call (the allocator maps and unmaps it), which made the Rescale rule's temporaries
    cost more than its arithmetic. One flat buffer per slot, grown when needed; each use is over before
    the next call starts (the backward calls run one at a time)."""

    def __init__(self) -> None:
        self._bufs: dict = {}

    def take(self, slot: str, like: torch.Tensor, dtype=None) -> torch.Tensor:
        dtype = like.dtype if dtype is None else dtype
        key = (slot, dtype, like.device)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < like.numel():
            buf = self._bufs[key] = torch.empty(like.numel(), dtype=dtype, device=like.device)
        return buf[:like.numel()].view(like.shape)


def _ratio(fn, dx: torch.Tensor, dy: torch.Tensor, x: torch.Tensor, scratch: _Scratch | None = None) -> torch.Tensor:
    """``Δy / Δx`` elementwise, the local derivative ``fn'(x)`` where ``|Δx| < eps``; written into ``dy``
    (a fresh tensor; ``dx`` may be scratch). The mask is built in scratch memory; the local derivative
    is computed only at the masked positions."""
    if scratch is None:
        small = dx.abs() < DEEPLIFT_EPS
    else:
        small = torch.lt(torch.abs(dx, out=scratch.take("abs", dx)), DEEPLIFT_EPS,
                         out=scratch.take("small", dx, torch.bool))
    dy.div_(dx)
    if bool(small.any()):
        xs = x.detach()[small].requires_grad_(True)
        with torch.enable_grad():
            (local,) = torch.autograd.grad(fn(xs), xs, torch.ones_like(xs))
        dy[small] = local
    return dy


def _relu_ratio(dx: torch.Tensor, dy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`_ratio` for ReLU in two passes fewer: ``Δy / Δx`` lies in [0, 1] wherever ``Δx ≠ 0`` (1 where
    both sides are positive, bit for bit, since then ``Δy`` and ``Δx`` are the same subtraction; 0 where
    neither is) and is NaN where ``Δx = 0``, found by one read-only sum; there the local derivative
    ``x > 0``. It equals the eps rule except where ``0 < |Δx| < 1e-10`` with the two sides of opposite
    signs, i.e. both within 1e-10 of zero (there a share in [0, 1] instead of 0 or 1)."""
    dy.div_(dx)
    if not math.isfinite(float(dy.sum())):  # one read-only pass; float(): no isfinite tensor per call
        nan = torch.isnan(dy)
        dy[nan] = (x.detach()[nan] > 0).to(dy.dtype)
    return dy


class _Rescale(torch.autograd.Function):
    """An elementwise nonlinearity ``y = f(x)`` over the rows ``[x; x_ref]``; backward: the x-rows get
    ``grad · (y − y_ref) / (x − x_ref)`` (the local derivative where ``|x − x_ref| < eps``); the
    reference rows get no gradient, or with ``both`` their own gradient times the same multiplier
    (Captum backpropagates both halves)."""

    @staticmethod
    def forward(ctx, x, fn, inplace: bool, both: bool):
        xin, out = _rule_forward(ctx, x, fn, inplace)
        ctx.both = both
        ctx.save_for_backward(xin, out.detach() if not inplace else out)
        return out

    @staticmethod
    def backward(ctx, grad):
        xin, out = ctx.saved_tensors
        b = xin.shape[0] // 2
        r = _ratio(ctx.fn, xin[:b] - xin[b:], out[:b] - out[b:], xin[:b])
        if ctx.both:
            return grad * torch.cat([r, r]), None, None, None
        res = grad.new_zeros(grad.shape)  # the reference rows get no gradient
        torch.mul(grad[:b], r, out=res[:b])
        return res, None, None, None


def _maxpool_multipliers(m, dx, dout, g, g_ref, ix, iref, scratch: _Scratch | None = None) -> None:
    """Write the cross-maximum multipliers into ``m`` ``(b, C, numel_in)`` (zeros): each window's
    ``g · Δout`` at the argmax of ``x`` where ``Δout > 0``, ``g_ref · Δout`` at the reference's argmax
    where ``Δout < 0`` (``g_ref=None``: the same ``g``), over that input's ``Δin``; the plain gradient
    where ``|Δin| < eps``. ``dx`` (fresh or scratch) is overwritten; ``iref`` may have fewer rows than
    ``ix`` (references shared with that period: broadcast)."""
    sc = scratch if scratch is not None else _Scratch()
    if g_ref is None:
        where = ix.view(-1, iref.shape[0], *ix.shape[1:])
        pick = torch.where(torch.ge(dout, 0, out=sc.take("ge", dout, torch.bool)).view(where.shape), where, iref,
                           out=sc.take("pick", where)).view(ix.shape)
        m.scatter_add_(2, pick, torch.mul(g, dout, out=sc.take("gd", dout)))
    else:
        m.scatter_add_(2, ix, g * dout.clamp_min(0))
        m.scatter_add_(2, iref, g_ref * dout.clamp_max(0))
    small = torch.lt(torch.abs(dx, out=sc.take("abs", dx)), DEEPLIFT_EPS, out=sc.take("small", dx, torch.bool))
    if bool(small.any()):
        plain = torch.zeros_like(dx).scatter_add_(2, ix, g)
        m.div_(dx.masked_fill_(small, 1.0))
        torch.where(small, plain, m, out=m)
    else:
        m.div_(dx)


class _RescaleMaxPool(torch.autograd.Function):
    """Max pooling over ``[x; x_ref]`` with the cross-maximum multipliers (:func:`_maxpool_multipliers`,
    Captum's ``maxpool``); ``both``: the reference rows get the same multipliers and their own
    gradient counts for the windows where the reference's maximum is larger."""

    @staticmethod
    def forward(ctx, x, rank: int, opts: dict, both: bool):
        out, idx = _POOL[rank](x, **opts)
        b = x.shape[0] // 2
        ctx.both = both
        ctx.save_for_backward(x, out[:b] - out[b:], idx)  # Δout now: the output may be changed in place later
        return out

    @staticmethod
    def backward(ctx, grad):
        x, dout, idx = ctx.saved_tensors
        b, c = x.shape[0] // 2, x.shape[1]
        xf, g, i = x.flatten(2), grad.flatten(2), idx.flatten(2)
        res = grad.new_zeros(x.shape)  # the reference rows get no gradient (or, with both, the same)
        _maxpool_multipliers(res[:b].view(b, c, -1), xf[:b] - xf[b:], dout.flatten(2), g[:b],
                             g[b:] if ctx.both else None, i[:b], i[b:])
        if ctx.both:
            res[b:] = res[:b]
        return res, None, None, None


def _pool_call(rank, args, kwargs):
    """``(input, options, return_indices)`` of an intercepted max-pooling call."""
    bound = dict(zip(_POOL_ARGS, args))
    bound.update(kwargs)
    x = bound.pop("input")
    ret_idx = bool(bound.pop("return_indices", False))
    return x, {k: v for k, v in bound.items() if v is not None or k != "stride"}, ret_idx


class _RuleMode(TorchFunctionMode):
    """What DeepLIFT's two modes share: which calls carry a rule, and where a call stands in a run of
    rule calls that feed each other directly (``position``: 1 for a call whose input is not the output
    of a rule call, its producer's + 1 otherwise). Under ``maxpool='captum'`` the calls at even
    positions backpropagate their plain gradient, as Captum's hooks make them: each hooked module
    records its output gradient before the next module's hook replaces it, so of two directly chained
    modules the upper one's rule is lost (ReLU → MaxPool: the pool passes its gradient)."""

    def __init__(self, maxpool: str = "captum") -> None:
        super().__init__()
        self.maxpool = maxpool
        self.count = 0
        self._outs: dict = {}
        self.ruled_pool = False  # a pool with the cross-maximum rule was seen
        self.plain_after_pool = False  # ... and a plain call after it (Captum's reference gradients differ)

    def _pos_of(self, x) -> int:
        e = self._outs.get(id(x))
        return e[1] if e is not None and e[0] is x else 0

    def _mark(self, out, pos: int):
        t = out[0] if isinstance(out, tuple) else out
        self._outs[id(t)] = (t, pos)
        return out

    def _plain(self, pos: int, pool: bool) -> bool:
        plain = (self.maxpool == "captum" and pos % 2 == 0) or (self.maxpool == "gradient" and pool)
        if plain and self.ruled_pool:
            self.plain_after_pool = True
        if pool and not plain:
            self.ruled_pool = True
        return plain

    def reset(self) -> None:
        """Forget the outputs of the last pass (a new pass starts)."""
        self._outs.clear()

    def _layout(self, func, args, kwargs):
        out = func(*args, **kwargs)
        pos = self._pos_of(_first_tensor(args, kwargs))
        return self._mark(out, pos) if pos and isinstance(out, torch.Tensor) else out


class _DeepLiftMode(_RuleMode):
    def __init__(self, maxpool: str = "captum") -> None:
        super().__init__(maxpool)
        #: Captum backpropagates the reference half too; it matters where a cross-maximum pool lies below a
        #: call with the plain gradient
        self.both = maxpool == "captum"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LAYOUT:
            return self._layout(func, args, kwargs)
        if func in _ELEMENTWISE:
            x, fn, inplace = activation_call(func, args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 1 and x.shape[0] % 2 == 0:
                pos = self._pos_of(x) + 1
                if self._plain(pos, False):
                    return self._mark(func(*args, **kwargs), pos)
                self.count += 1
                # in-place activations other than ReLU are computed out of place (callers use the result)
                inplace = inplace and (func in _RELU or func in _RELU_INPLACE)
                return self._mark(_Rescale.apply(x, fn, inplace and not (x.is_leaf and x.requires_grad), self.both),
                                  pos)
        for rank, funcs in _MAXPOOL.items():
            if func in funcs:
                x, opts, ret_idx = _pool_call(rank, args, kwargs)
                if isinstance(x, torch.Tensor) and x.ndim == rank + 2 and x.shape[0] % 2 == 0:
                    pos = self._pos_of(x) + 1
                    if self._plain(pos, True):
                        return self._mark(func(*args, **kwargs), pos)
                    self.count += 1
                    out = _RescaleMaxPool.apply(x, rank, opts, self.both)
                    if ret_idx:
                        return self._mark((out, _POOL[rank](x.detach(), **opts)[1]), pos)
                    return self._mark(out, pos)
        return func(*args, **kwargs)


@contextlib.contextmanager
def deeplift_rules(maxpool: str = "captum") -> Iterator[_DeepLiftMode]:
    """Within this block, every elementwise nonlinearity (ReLU, sigmoid, tanh, ELU, leaky ReLU, GELU,
    SiLU, softplus, ...) and every 1D/2D max pooling call, run on a batch ``[x; x_ref]`` of even
    length, backpropagates DeepLIFT's Rescale multipliers (max pooling by ``maxpool``, see
    :class:`DeepLift`). With ``maxpool='captum'`` backpropagate the scores of both halves (as Captum
    does): the reference rows' gradients enter the cross-maximum pools. Yields the mode; ``count`` is
    the number of calls replaced."""
    mode = _DeepLiftMode(maxpool)
    with mode:
        yield mode


def _minus(a: torch.Tensor, ref: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a − ref`` row by row, ``ref`` repeating along the rows with its own length as the period (a
    broadcast, no copy of the references); into ``out`` when given (contiguous, ``a``'s shape)."""
    if ref.shape[0] == a.shape[0]:
        return a - ref if out is None else torch.sub(a, ref, out=out)
    shape = (a.shape[0] // ref.shape[0], *ref.shape)
    if out is None:
        return (a.reshape(shape) - ref).view(a.shape)
    torch.sub(a.reshape(shape), ref, out=out.view(shape))
    return out


class _PairedRescale(torch.autograd.Function):
    """An elementwise nonlinearity on the input rows, paired with its reference call recorded in a first
    pass (``x_ref``, ``y_ref``): backward ``grad · (y − y_ref) / (x − x_ref)`` (the local derivative where
    ``|x − x_ref| < eps``)."""

    @staticmethod
    def forward(ctx, x, fn, inplace: bool, x_ref, y_ref, scratch, relu: bool):
        xin, out = _rule_forward(ctx, x, fn, inplace)
        ctx.scratch, ctx.relu = scratch, relu
        ctx.save_for_backward(xin, out.detach() if not inplace else out, x_ref, y_ref)
        return out

    @staticmethod
    def backward(ctx, g):
        xin, out, x_ref, y_ref = ctx.saved_tensors
        dx = _minus(xin, x_ref, out=ctx.scratch.take("dx", xin))
        dy = _minus(out, y_ref)
        r = _relu_ratio(dx, dy, xin) if ctx.relu else _ratio(ctx.fn, dx, dy, xin, ctx.scratch)
        return r.mul_(g), None, None, None, None, None, None


class _PairedMaxPool(torch.autograd.Function):
    """Max pooling of the input rows with the cross-maximum multipliers of :class:`_RescaleMaxPool`, the
    reference's output and argmax recorded in a first pass."""

    @staticmethod
    def forward(ctx, x, rank: int, opts: dict, x_ref, out_ref, idx_ref, scratch):
        out, idx = _POOL[rank](x, **opts)
        ctx.scratch = scratch
        ctx.save_for_backward(x, _minus(out, out_ref), idx, x_ref, idx_ref)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, dout, idx, x_ref, idx_ref = ctx.saved_tensors
        b = x.shape[0]
        res = grad.new_zeros(x.shape)
        dx = _minus(x, x_ref, out=ctx.scratch.take("dx", x))
        _maxpool_multipliers(res.view(b, x.shape[1], -1), dx.flatten(2), dout.flatten(2), grad.flatten(2), None,
                             idx.flatten(2), idx_ref.flatten(2), ctx.scratch)
        return res, None, None, None, None, None, None


class _PairMismatch(RuntimeError):
    pass


class _PairedMode(_RuleMode):
    """Two passes of the model: ``record`` (the references, no gradient) keeps every rule call's input and
    output; ``pair`` (the inputs) applies the Rescale multipliers against the recorded call of the same
    rank in the sequence. The backward pass then runs over the inputs' rows only."""

    def __init__(self, maxpool: str = "captum") -> None:
        super().__init__(maxpool)
        self.recorded: list = []
        self.phase = "record"
        self.k = 0
        self.scratch = _Scratch()

    def _next(self, kind, shape):
        if self.k >= len(self.recorded) or self.recorded[self.k][0] != kind:
            raise _PairMismatch(kind)
        rec_shape = self.recorded[self.k][1]
        if rec_shape[1:] != shape[1:] or shape[0] % rec_shape[0]:
            raise _PairMismatch(kind)
        rec = self.recorded[self.k]
        self.k += 1
        return rec[2:]

    def _plain_call(self, kind, x, pos, func, args, kwargs):
        if self.phase == "record":
            self.recorded.append((kind, tuple(x.shape)))
        else:
            self._next(kind, tuple(x.shape))
        return self._mark(func(*args, **kwargs), pos)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LAYOUT:
            return self._layout(func, args, kwargs)
        if func in _ELEMENTWISE:
            x, fn, inplace = activation_call(func, args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 1:
                relu = func in _RELU or func in _RELU_INPLACE
                inplace = inplace and relu
                kind = "relu" if relu else getattr(func, "__name__", repr(func))
                pos = self._pos_of(x) + 1
                if self._plain(pos, False):
                    return self._plain_call(kind, x, pos, func, args, kwargs)
                if self.phase == "record":
                    xr = x.detach().clone()
                    out = func(*args, **kwargs)
                    self.recorded.append((kind, tuple(x.shape), xr, out.detach().clone() if inplace else out.detach()))
                    return self._mark(out, pos)
                x_ref, y_ref = self._next(kind, tuple(x.shape))
                self.count += 1
                return self._mark(_PairedRescale.apply(x, fn, inplace and not (x.is_leaf and x.requires_grad), x_ref,
                                                       y_ref, self.scratch, relu), pos)
        for rank, funcs in _MAXPOOL.items():
            if func in funcs:
                x, opts, ret_idx = _pool_call(rank, args, kwargs)
                if isinstance(x, torch.Tensor) and x.ndim == rank + 2:
                    pos = self._pos_of(x) + 1
                    if self._plain(pos, True):
                        return self._plain_call("pool", x, pos, func, args, kwargs)
                    if self.phase == "record":
                        out, idx = _POOL[rank](x.detach(), **opts)
                        # the output is kept as a copy: an in-place activation may change it next
                        self.recorded.append(("pool", tuple(x.shape), x.detach(), out.clone(), idx))
                        return self._mark((out, idx) if ret_idx else out, pos)
                    x_ref, out_ref, idx_ref = self._next("pool", tuple(x.shape))
                    self.count += 1
                    out = _PairedMaxPool.apply(x, rank, opts, x_ref, out_ref, idx_ref, self.scratch)
                    if ret_idx:
                        return self._mark((out, _POOL[rank](x.detach(), **opts)[1]), pos)
                    return self._mark(out, pos)
        return func(*args, **kwargs)


#: on the CPU, rows per DeepLIFT chunk such that the largest activation with a rule stays near this many
#: bytes: the rule's temporaries then come from the allocator's heap, not fresh mappings with a page
#: fault per page on every call (glibc maps blocks above 32 MiB afresh each time), and stay nearer
#: the cache (2D CNN, 800 rows of 64×24×24: 1.15 s in chunks of 256 rows, 0.82 s in chunks of 64)
DEEPLIFT_CHUNK_BYTES = 8 << 20


def _deeplift_rows(model: Model, x: torch.Tensor, recorded: list, period: int | None) -> int:
    rows = chunk_rows(model, x)
    if x.device.type == "cpu" and model.max_batch is None and recorded:
        per_row = max(math.prod(r[1][1:]) for r in recorded) * x.element_size()
        rows = min(rows, max(16, DEEPLIFT_CHUNK_BYTES // max(1, per_row)))
    return max(period, rows // period * period) if period else rows


def deeplift_pairs(model: Model, x: torch.Tensor, ref: torch.Tensor, targets: torch.Tensor, *,
                   period: int | None = None, maxpool: str = "captum") -> tuple[torch.Tensor, torch.Tensor, int]:
    """DeepLIFT attributions of rows ``x`` against rows ``ref`` (same shape) for ``targets``, in chunks;
    also ``f(x) − f(ref)`` per row and the rule calls per pass.

    The references run first without gradients (every nonlinearity's input and output kept), then the
    inputs with the Rescale multipliers against them, so the backward pass covers the inputs' rows only.
    ``period``: the reference rows repeat with this period (``ref[i] == ref[i % period]``, references
    shared by every input): they run once. A model whose two passes do not make the same sequence of
    rule calls (data-dependent control flow), or, under ``maxpool='captum'``, where a cross-maximum pool
    lies below a call with the plain gradient (there Captum's reference rows get gradients of their
    own), runs as one batch ``[x; x_ref]`` instead (:func:`deeplift_rules`, as Captum does)."""
    maps = torch.empty_like(x)
    dscore = torch.empty(len(x), dtype=x.dtype, device=x.device)
    count = 0
    shared = None
    batched = False  # Captum's reference gradients matter: every chunk runs as one batch [x; x_ref]
    if period:
        shared = _PairedMode(maxpool)
        with torch.no_grad(), shared:
            shared_logits = model.logits_t(ref[:period])
        batched, probe = shared.plain_after_pool, shared
    else:
        probe = _PairedMode(maxpool)  # one reference row: the sizes of the rule calls' activations
        with torch.no_grad(), probe:
            model.logits_t(ref[:1])
    rows = _deeplift_rows(model, x, probe.recorded, period)
    scratch = _Scratch()
    for s in row_chunks(len(x), rows):
        tg = targets[s]
        try:
            if batched:
                raise _PairMismatch("captum")
            mode = _PairedMode(maxpool)
            mode.scratch = scratch
            if shared is not None:
                mode.recorded = shared.recorded
                idx = torch.arange(s.start, s.stop, device=x.device) % period
                ref_scores = shared_logits[idx].gather(1, tg.view(-1, 1).to(x.device)).view(-1)
            else:
                with torch.no_grad(), mode:
                    ref_scores = pick_scores(model.logits_t(ref[s]), tg)[0]
                if mode.plain_after_pool:
                    batched = True
                    raise _PairMismatch("captum")
                mode.reset()
            mode.phase = "pair"
            xi = x[s].detach().requires_grad_(True)
            with torch.enable_grad():
                with mode:
                    scores = pick_scores(model.logits_t(xi), tg)[0]
                if mode.k != len(mode.recorded):
                    raise _PairMismatch("count")
                (g,) = torch.autograd.grad(scores.sum(), xi)
            n_rules = mode.count
        except _PairMismatch:
            g, scores, ref_scores, n_rules = _batched_pair(model, x[s], ref[s], tg, maxpool)
        count = max(count, n_rules)
        maps[s] = g * (x[s] - ref[s])
        dscore[s] = scores.detach() - ref_scores
    return maps, dscore, count


def _batched_pair(model, x, ref, tg, maxpool="captum"):
    """One chunk of DeepLIFT as one batch ``[x; x_ref]``: (gradient multipliers, scores, reference scores, count)."""
    b = len(x)
    both = torch.cat([x, ref]).detach().requires_grad_(True)
    with torch.enable_grad():
        with deeplift_rules(maxpool) as mode:
            logits = model.logits_t(both)
        scores = pick_scores(logits[:b], tg)[0]
        total = scores.sum()
        if mode.both:  # Captum's objective: the reference rows' scores as well
            total = total + pick_scores(logits[b:], tg)[0].sum()
        (g,) = torch.autograd.grad(total, both)
    with torch.no_grad():
        ref_scores = pick_scores(logits[b:].detach(), tg)[0]
    return g[:b], scores, ref_scores, mode.count


def _warn_none(count: int, model: Model, method: str, what: str) -> None:
    if count == 0:
        warnings.warn(f"{model.name}: no {what} call was seen in the forward pass, so {method} equals the plain "
                      "gradient rule", stacklevel=5)


# ---- baselines distributions ---------------------------------------------------------------------
def reference_distribution(t: torch.Tensor, baselines, n_baselines: int, *, seed: int, blur_sigma: float = 0.1
                           ) -> tuple[torch.Tensor, bool]:
    """References for the SHAP variants: ``(N, M, C, *spatial)`` and whether they are shared by all samples.

    ``baselines``: ``'noise'`` — ``n_baselines`` draws of Gaussian noise with each channel's mean and
    standard deviation of the sample (drawn from ``seed`` and the sample's values); ``'zero'``,
    ``'mean'``, ``'blur'`` or a number — that single baseline; an array of reference samples
    ``(M, C, *spatial)``, ``(M, *spatial, C)`` or ``(M, *spatial)`` (e.g. training samples), shared by
    every explained sample.
    """
    n, sample = len(t), tuple(t.shape[1:])
    if isinstance(baselines, str) and baselines == "noise":
        dims = tuple(range(2, t.ndim))
        seeds = sample_seeds(t, seed)
        idx = np.repeat(np.arange(n), n_baselines)
        z = per_sample_normal(seeds, idx, sample, n_baselines, np.tile(np.arange(n_baselines), n), t.dtype,
                              t.device).view(n, n_baselines, *sample)
        mu, sd = t.mean(dims, keepdim=True), torch.nan_to_num(t.std(dims, keepdim=True))
        return mu[:, None] + z * sd[:, None], False
    if isinstance(baselines, (str, int, float, np.integer, np.floating)) and not isinstance(baselines, bool):
        return resolve_baseline(t, baselines, blur_sigma=blur_sigma, seed=seed)[:, None], False
    a = np.asarray(baselines.detach().cpu() if isinstance(baselines, torch.Tensor) else baselines)
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise InputError("invalid baselines", parameter="baselines",
                         expected="'noise', one of " + ", ".join(IG_BASELINES) + ", a number, or an array of "
                                  "reference samples", got=type(baselines).__name__, fix="pass baselines='noise'")
    c, sp = sample[0], sample[1:]
    if a.ndim == len(sample) + 1 and a.shape[1:] == sample:
        ref = a
    elif a.ndim == len(sample) + 1 and a.shape[1:] == (*sp, c):
        ref = np.moveaxis(a, -1, 1)
    elif a.ndim == len(sp) + 1 and a.shape[1:] == sp:
        ref = np.broadcast_to(a[:, None], (len(a), *sample))
    elif a.shape == sample:
        ref = a[None]
    else:
        raise ShapeError("baselines do not match the input's sample shape", parameter="baselines",
                         expected=f"reference samples shaped (M, {', '.join(map(str, sample))}), (M, "
                                  f"{', '.join(map(str, (*sp, c)))}) or (M, {', '.join(map(str, sp))})",
                         got=f"shape {a.shape}", fix="pass reference samples in the layout of x")
    if len(ref) == 0 or not np.isfinite(ref).all():
        raise InputError("baselines must be finite and non-empty", parameter="baselines",
                         expected="at least one finite reference sample", got=f"shape {a.shape}",
                         fix="pass finite reference samples")
    r = torch.as_tensor(np.ascontiguousarray(ref), dtype=t.dtype, device=t.device)
    return r[None], True


def _check_baselines_param(baselines) -> None:
    if isinstance(baselines, str):
        check_choice(baselines, ("noise",) + IG_BASELINES, "baselines", "pass baselines='noise' or reference "
                                                                       "samples (e.g. a few training samples)")
    elif baselines is None or isinstance(baselines, bool):
        raise InputError("invalid baselines", parameter="baselines", expected="a name, a number or an array",
                         got=baselines, fix="pass baselines='noise'")


# ---- the explainers -------------------------------------------------------------------------
@register("input_x_gradient")
class InputXGradient(Explainer):
    """Input × Gradient (Shrikumar et al., 2016): ``x · ∂score_c/∂x`` (Captum's ``InputXGradient``).

    For a ReLU network without biases the map of a sample sums to its score; in general it is a
    first-order (Taylor) share of the score. Signed.
    """

    name = "input_x_gradient"
    resolves_own_targets = True

    def __init__(self) -> None:
        pass

    def _compute(self, model, t, targets):
        g, tg = _gradients(model, t, targets)
        return g * t, tg.cpu().numpy(), {}


@register("deconvolution")
class Deconvolution(Explainer):
    """Deconvolution (Zeiler & Fergus, 2014): the gradient of the target score where every ReLU's
    backward pass is ``relu(grad)`` whatever its input (Captum's ``Deconvolution``). ReLU calls are
    intercepted as in ``guided_backprop`` (torch modules, functional calls, Keras fused ReLUs); the
    model is not changed. ``extras['relus_replaced']`` counts the ReLU calls per forward pass.

    Parameters
    ----------
    absolute : bool
        Return ``|map|``.
    """

    name = "deconvolution"
    resolves_own_targets = True

    def __init__(self, absolute: bool = False) -> None:
        self.absolute = absolute

    def _compute(self, model, t, targets):
        grads, tg_all, count = rule_gradients(model, t, targets, deconv_relu)
        _warn_none(count, model, "deconvolution", "ReLU")
        return (grads.abs() if self.absolute else grads), tg_all.cpu().numpy(), {"relus_replaced": int(count)}


@register("deeplift")
class DeepLift(Explainer):
    """DeepLIFT with the Rescale rule (Shrikumar et al., 2017), as Captum's ``DeepLift``.

    ``map = (x − x_ref) · m`` where ``m`` is the chain of multipliers: linear layers keep their
    weights, every elementwise nonlinearity uses ``Δout / Δin`` between the input and the reference
    (the local derivative where ``|Δin| < 1e-10``). ``extras['delta']`` holds the per-sample residual
    ``Σ map − (score_c(x) − score_c(x_ref))`` (≈ 0 up to float rounding under ``maxpool='cross_max'``;
    see ``maxpool`` for the other rules; larger when the model uses nonlinear operations without a
    rule, e.g. products of activations or global max reductions).

    Parameters
    ----------
    baseline : 'zero' | 'mean' | 'blur' | 'noise' | float | array
        The reference, as for ``integrated_gradients`` / ``occlusion``.
    maxpool : 'captum' | 'cross_max' | 'gradient'
        How max pooling backpropagates.

        - ``'cross_max'``: each window's ``Δout`` goes to the argmax of the input where its maximum is
          larger, else to the argmax of the reference, divided by that position's ``Δin`` (Captum's
          ``maxpool`` function). The maps sum to ``score_c(x) − score_c(x_ref)`` exactly for any
          reference: summation-to-delta, the property the paper builds DeepLIFT on.
        - ``'gradient'``: the pool passes its gradient (to the argmax of the input), the rule of the
          DeepLIFT authors' own implementation (kundajelab/deeplift, ``MaxPoolDeepLiftMode.gradient``,
          its default and only mode). Summation-to-delta holds where the reference is constant over
          each pooling window (a zero or constant reference through convolutions without padding
          effects), not in general.
        - ``'captum'`` (default): Captum 0.9's result, hooks included: a pool whose input is directly
          the output of another rule call (ReLU → MaxPool, the usual CNN block) passes its gradient,
          any other pool uses the cross maximum. Captum's hooks make this so: each hooked module keeps
          the gradient that reaches its output *before* the next module's hook replaces it, so of two
          directly chained hooked modules (a nonlinearity or a pool) the upper one's rule is dropped
          (MaxPool → ReLU: the ReLU passes its plain gradient); we drop the same ones (also through the
          ``permute``/``contiguous`` calls a Keras channels-last pooling makes, so a Keras model
          equals its torch twin). It is the default so that maps equal Captum's on the same torch
          model; in the usual CNN it is also the DeepLIFT authors' ``'gradient'`` rule. Choose
          ``'cross_max'`` for exact summation-to-delta with references that vary inside a pooling
          window (noise, blur, training samples).
    """

    name = "deeplift"

    def __init__(self, baseline="zero", blur_sigma: float = 0.1, seed: int = 0, maxpool: str = "captum") -> None:
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.maxpool = maxpool

    def _validate(self):
        from .segments import check_baseline_param

        check_baseline_param(self.baseline)
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)
        _check_maxpool(self.maxpool)

    def _compute(self, model, t, targets):
        ref = resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))
        # one reference for every sample (a constant baseline): it runs once
        same = len(ref) > 1 and bool((ref == ref[:1]).all())
        maps, dscore, count = deeplift_pairs(model, t, ref, targets, period=1 if same else None, maxpool=self.maxpool)
        _warn_none(count, model, "deeplift", "nonlinearity")
        delta = maps.reshape(len(t), -1).sum(1) - dscore
        return maps, targets.cpu().numpy(), {"delta": delta.detach().cpu().numpy(),
                                             "rules_applied": int(count)}


def _check_maxpool(maxpool) -> None:
    check_choice(maxpool, MAXPOOL_RULES, "maxpool", "pass maxpool='captum' (Captum's maps) or 'cross_max' (exact "
                                                    "summation-to-delta)")


class _ShapBase(Explainer):
    def _validate(self):
        _check_baselines_param(self.baselines)
        check_number(self.n_baselines, "n_baselines", minimum=1, integer=True)
        check_number(self.seed, "seed", integer=True)


@register("deeplift_shap")
class DeepLiftShap(_ShapBase):
    """DeepLIFT-SHAP (Lundberg & Lee, 2017; Captum's ``DeepLiftShap``): DeepLIFT attributions averaged
    over a distribution of references. The maps of a sample sum to ``score_c(x) − mean_ref
    score_c(ref)`` under ``maxpool='cross_max'`` (see :class:`DeepLift`); ``extras['delta']`` is the
    residual.

    Parameters
    ----------
    baselines : 'noise' | 'zero' | 'mean' | 'blur' | float | array
        ``'noise'`` (default): ``n_baselines`` Gaussian-noise references with each channel's mean and
        standard deviation of the sample (seeded by ``seed`` and the sample); an array of reference
        samples ``(M, ...)`` in the layout of one sample (e.g. a few training samples) is shared by all
        inputs; a single named baseline or number gives plain DeepLIFT.
    n_baselines : int
        References drawn for ``'noise'``.
    maxpool : 'captum' | 'cross_max' | 'gradient'
        The max-pooling rule, as for ``deeplift``.
    """

    name = "deeplift_shap"
    stochastic = True

    def __init__(self, baselines="noise", n_baselines: int = 8, seed: int = 0, maxpool: str = "captum") -> None:
        self.baselines = baselines
        self.n_baselines = n_baselines
        self.seed = seed
        self.maxpool = maxpool

    def _validate(self):
        super()._validate()
        _check_maxpool(self.maxpool)

    def _compute(self, model, t, targets):
        refs, shared = reference_distribution(t, self.baselines, int(self.n_baselines), seed=int(self.seed))
        n, m = len(t), refs.shape[1]
        xi = t.repeat_interleave(m, 0)
        ri = refs.expand(n, *refs.shape[1:]).reshape(n * m, *t.shape[1:])
        maps, dscore, count = deeplift_pairs(model, xi, ri, targets.repeat_interleave(m),
                                             period=m if shared else None, maxpool=self.maxpool)
        _warn_none(count, model, "deeplift_shap", "nonlinearity")
        maps = maps.view(n, m, *t.shape[1:]).mean(1)
        dscore = dscore.view(n, m).mean(1)
        delta = maps.reshape(n, -1).sum(1) - dscore
        return maps, targets.cpu().numpy(), {"delta": delta.detach().cpu().numpy(), "n_baselines": int(m)}


@register("gradient_shap")
class GradientShap(_ShapBase):
    """GradientSHAP / expected gradients (Lundberg & Lee, 2017; Erion et al., 2021; Captum's
    ``GradientShap``): the average over ``n_samples`` draws of ``∂score_c/∂x (r + α(x̃ − r)) · (x̃ − r)``
    with a reference ``r`` drawn uniformly from the distribution, ``α ~ U(0, 1)`` and ``x̃`` the input
    plus Gaussian noise. Its expectation with ``noise_level=0`` is integrated gradients averaged over
    the references.

    Parameters
    ----------
    baselines, n_baselines
        The reference distribution, as for ``deeplift_shap``.
    n_samples : int
        Gradient evaluations per sample.
    noise_level : float
        Standard deviation of the input noise as a fraction of each sample's value range (as
        ``smoothgrad``); Captum's ``stdevs`` is this times the range. 0 turns it off.
    seed : int
        Draws come from ``seed`` and each sample's values: the same alone or in a batch.
    """

    name = "gradient_shap"
    stochastic = True

    def __init__(self, baselines="noise", n_baselines: int = 8, n_samples: int = 25, noise_level: float = 0.0,
                 seed: int = 0) -> None:
        self.baselines = baselines
        self.n_baselines = n_baselines
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.seed = seed

    def _validate(self):
        super()._validate()
        check_number(self.n_samples, "n_samples", minimum=1, integer=True)
        check_number(self.noise_level, "noise_level", minimum=0)

    def _compute(self, model, t, targets):
        from .base import input_gradient

        n, s_ = len(t), int(self.n_samples)
        refs, shared = reference_distribution(t, self.baselines, int(self.n_baselines), seed=int(self.seed))
        m = refs.shape[1]
        dims = tuple(range(1, t.ndim))
        sigma = (t.amax(dims) - t.amin(dims)) * float(self.noise_level)
        seeds = sample_seeds(t, int(self.seed))
        # per sample: which reference and which alpha for each draw (from the sample's own seed)
        pick = np.empty((n, s_), dtype=np.int64)
        alpha = np.empty((n, s_))
        for i, sd in enumerate(seeds):
            r = np.random.default_rng(sd)
            pick[i] = r.integers(0, m, size=s_)
            alpha[i] = r.random(s_)
        pick_t = torch.as_tensor(pick, device=t.device)
        alpha_t = torch.as_tensor(alpha, dtype=t.dtype, device=t.device)
        acc = torch.zeros_like(t)
        idx_all = np.repeat(np.arange(n), s_)
        draw_all = np.tile(np.arange(s_), n)
        shape1 = (-1, *([1] * (t.ndim - 1)))
        for rows in row_chunks(n * s_, chunk_rows(model, t)):
            si_np, di_np = idx_all[rows], draw_all[rows]
            si = torch.as_tensor(si_np, device=t.device)
            di = torch.as_tensor(di_np, device=t.device)
            xr = t[si]
            if float(self.noise_level) > 0:
                noise = per_sample_normal(seeds, si_np, tuple(t.shape[1:]), s_, di_np, t.dtype, t.device)
                xr = xr + noise * sigma[si].view(shape1)
            ref = refs[0, pick_t[si, di]] if shared else refs[si, pick_t[si, di]]
            a = alpha_t[si, di].view(shape1)
            g, _ = input_gradient(model, ref + a * (xr - ref), targets[si])
            acc.index_add_(0, si, g * (xr - ref))
        return acc / s_, targets.cpu().numpy(), {"n_baselines": int(m)}
