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
average pooling, flatten) keep their gradient, which is their exact multiplier.
"""

from __future__ import annotations

import contextlib
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
           "deeplift_rules", "reference_distribution", "DEEPLIFT_EPS"]

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
class _Rescale(torch.autograd.Function):
    """An elementwise nonlinearity ``y = f(x)`` over the rows ``[x; x_ref]``; backward: the x-rows get
    ``grad · (y − y_ref) / (x − x_ref)`` (the local derivative where ``|x − x_ref| < eps``), the
    reference rows get no gradient."""

    @staticmethod
    def forward(ctx, x, fn, inplace: bool):
        xin, out = _rule_forward(ctx, x, fn, inplace)
        ctx.save_for_backward(xin, out.detach() if not inplace else out)
        return out

    @staticmethod
    def backward(ctx, grad):
        xin, out = ctx.saved_tensors
        b = xin.shape[0] // 2
        dx = xin[:b] - xin[b:]
        g = grad[:b]
        small = dx.abs() < DEEPLIFT_EPS
        res = grad.new_zeros(grad.shape)  # the reference rows get no gradient
        m = torch.sub(out[:b], out[b:], out=res[:b])  # Δout, written in place
        if bool(small.any()):
            with torch.enable_grad():
                xi = xin[:b].detach().requires_grad_(True)
                (local,) = torch.autograd.grad(ctx.fn(xi), xi, g)
            m.div_(dx.masked_fill_(small, 1.0)).mul_(g)
            torch.where(small, local, m, out=m)
        else:
            m.div_(dx).mul_(g)
        return res, None, None


def _maxpool_multipliers(m, dx, g, o, oref, ix, iref) -> None:
    """Write the cross-maximum multipliers into ``m`` ``(b, C, numel_in)``: each window's ``g · Δout`` at the
    argmax of ``x`` where ``out ≥ out_ref``, else at the reference's, over that input's ``Δin``; the plain
    gradient where ``|Δin| < eps``. ``dx`` (a fresh tensor) is overwritten."""
    m.scatter_add_(2, torch.where(o >= oref, ix, iref), g * (o - oref))
    small = dx.abs() < DEEPLIFT_EPS
    if bool(small.any()):
        plain = torch.zeros_like(dx).scatter_add_(2, ix, g)
        m.div_(dx.masked_fill_(small, 1.0))
        torch.where(small, plain, m, out=m)
    else:
        m.div_(dx)


class _RescaleMaxPool(torch.autograd.Function):
    """Max pooling over ``[x; x_ref]`` with a multiplier that keeps summation-to-delta: each window's
    ``Δout`` goes to the input at the argmax of ``x`` when ``out ≥ out_ref``, else at the argmax of the
    reference (Captum's cross-maximum rule), divided by that input's ``Δin``."""

    @staticmethod
    def forward(ctx, x, rank: int, opts: dict):
        pool = F.max_pool1d_with_indices if rank == 1 else F.max_pool2d_with_indices
        out, idx = pool(x, **opts)
        ctx.save_for_backward(x, out, idx)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out, idx = ctx.saved_tensors
        b = x.shape[0] // 2
        n_in = x[0, 0].numel()
        xf = x.flatten(2)
        dx = xf[:b] - xf[b:]  # (b, C, numel_in)
        o, oref = out[:b].flatten(2), out[b:].flatten(2)
        g = grad[:b].flatten(2)
        ix, iref = idx[:b].flatten(2), idx[b:].flatten(2)
        res = grad.new_zeros(x.shape)  # the reference rows get no gradient
        _maxpool_multipliers(res[:b].view(b, x.shape[1], -1), dx, g, o, oref, ix, iref)
        del n_in
        return res, None, None


class _DeepLiftMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ELEMENTWISE:
            x, fn, inplace = activation_call(func, args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 1 and x.shape[0] % 2 == 0:
                # in-place activations other than ReLU are computed out of place (callers use the result)
                inplace = inplace and (func in _RELU or func in _RELU_INPLACE)
                self.count += 1
                return _Rescale.apply(x, fn, inplace and not (x.is_leaf and x.requires_grad))
        for rank, funcs in _MAXPOOL.items():
            if func in funcs:
                bound = dict(zip(_POOL_ARGS, args))
                bound.update(kwargs)
                x = bound.pop("input")
                ret_idx = bool(bound.pop("return_indices", False))
                if isinstance(x, torch.Tensor) and x.ndim == rank + 2 and x.shape[0] % 2 == 0:
                    opts = {k: v for k, v in bound.items() if v is not None or k != "stride"}
                    self.count += 1
                    out = _RescaleMaxPool.apply(x, rank, opts)
                    if ret_idx:
                        pool = F.max_pool1d_with_indices if rank == 1 else F.max_pool2d_with_indices
                        return out, pool(x.detach(), **opts)[1]
                    return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def deeplift_rules() -> Iterator[_DeepLiftMode]:
    """Within this block, every elementwise nonlinearity (ReLU, sigmoid, tanh, ELU, leaky ReLU, GELU,
    SiLU, softplus, ...) and every 1D/2D max pooling call, run on a batch ``[x; x_ref]`` of even
    length, backpropagates DeepLIFT's Rescale multipliers. Yields the mode; ``count`` is the number
    of calls replaced."""
    mode = _DeepLiftMode()
    with mode:
        yield mode


def _tile(ref: torch.Tensor, rows: int) -> torch.Tensor:
    """``ref`` repeated along the rows to ``rows`` (references shared by every input: recorded once)."""
    return ref if ref.shape[0] == rows else ref.repeat(rows // ref.shape[0], *([1] * (ref.ndim - 1)))


def _minus(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``a − ref`` row by row, ``ref`` repeating along the rows with its own length as the period (a
    broadcast, no copy of the references)."""
    if ref.shape[0] == a.shape[0]:
        return a - ref
    return (a.reshape(a.shape[0] // ref.shape[0], *ref.shape) - ref).view(a.shape)


class _PairedRescale(torch.autograd.Function):
    """An elementwise nonlinearity on the input rows, paired with its reference call recorded in a first
    pass (``x_ref``, ``y_ref``): backward ``grad · (y − y_ref) / (x − x_ref)`` (the local derivative where
    ``|x − x_ref| < eps``)."""

    @staticmethod
    def forward(ctx, x, fn, inplace: bool, x_ref, y_ref):
        xin, out = _rule_forward(ctx, x, fn, inplace)
        ctx.save_for_backward(xin, out.detach() if not inplace else out, x_ref, y_ref)
        return out

    @staticmethod
    def backward(ctx, g):
        xin, out, x_ref, y_ref = ctx.saved_tensors
        dx = _minus(xin, x_ref)
        small = dx.abs() < DEEPLIFT_EPS
        m = _minus(out, y_ref)
        if bool(small.any()):
            with torch.enable_grad():
                xi = xin.detach().requires_grad_(True)
                (local,) = torch.autograd.grad(ctx.fn(xi), xi, g)
            m.div_(dx.masked_fill_(small, 1.0)).mul_(g)
            torch.where(small, local, m, out=m)
        else:
            m.div_(dx).mul_(g)
        return m, None, None, None, None


class _PairedMaxPool(torch.autograd.Function):
    """Max pooling of the input rows with the multipliers of :class:`_RescaleMaxPool`, the reference's
    output and argmax recorded in a first pass."""

    @staticmethod
    def forward(ctx, x, rank: int, opts: dict, x_ref, out_ref, idx_ref):
        pool = F.max_pool1d_with_indices if rank == 1 else F.max_pool2d_with_indices
        out, idx = pool(x, **opts)
        ctx.save_for_backward(x, out, idx, x_ref, out_ref, idx_ref)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, out, idx, x_ref, out_ref, idx_ref = ctx.saved_tensors
        b = x.shape[0]
        dx = _minus(x, x_ref).flatten(2)
        o, oref = out.flatten(2), _tile(out_ref, b).flatten(2)
        g = grad.flatten(2)
        ix, iref = idx.flatten(2), _tile(idx_ref, b).flatten(2)
        res = grad.new_zeros(x.shape)
        _maxpool_multipliers(res.view(b, x.shape[1], -1), dx, g, o, oref, ix, iref)
        return res, None, None, None, None, None


class _PairMismatch(RuntimeError):
    pass


class _PairedMode(TorchFunctionMode):
    """Two passes of the model: ``record`` (the references, no gradient) keeps every nonlinearity's input and
    output; ``pair`` (the inputs) applies the Rescale multipliers against the recorded call of the same
    rank in the sequence. The backward pass then runs over the inputs' rows only."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.recorded: list = []
        self.phase = "record"
        self.k = 0

    def _next(self, kind, shape):
        if self.k >= len(self.recorded) or self.recorded[self.k][0] != kind:
            raise _PairMismatch(kind)
        rec_shape = self.recorded[self.k][1]
        if rec_shape[1:] != shape[1:] or shape[0] % rec_shape[0]:
            raise _PairMismatch(kind)
        rec = self.recorded[self.k]
        self.k += 1
        return rec[2:]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ELEMENTWISE:
            x, fn, inplace = activation_call(func, args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 1:
                relu = func in _RELU or func in _RELU_INPLACE
                inplace = inplace and relu
                kind = "relu" if relu else getattr(func, "__name__", repr(func))
                if self.phase == "record":
                    xr = x.detach().clone()
                    out = func(*args, **kwargs)
                    self.recorded.append((kind, tuple(x.shape), xr, out.detach().clone() if inplace else out.detach()))
                    return out
                x_ref, y_ref = self._next(kind, tuple(x.shape))
                self.count += 1
                return _PairedRescale.apply(x, fn, inplace and not (x.is_leaf and x.requires_grad), x_ref, y_ref)
        for rank, funcs in _MAXPOOL.items():
            if func in funcs:
                bound = dict(zip(_POOL_ARGS, args))
                bound.update(kwargs)
                x = bound.pop("input")
                ret_idx = bool(bound.pop("return_indices", False))
                if isinstance(x, torch.Tensor) and x.ndim == rank + 2:
                    opts = {k: v for k, v in bound.items() if v is not None or k != "stride"}
                    pool = F.max_pool1d_with_indices if rank == 1 else F.max_pool2d_with_indices
                    if self.phase == "record":
                        out, idx = pool(x.detach(), **opts)
                        self.recorded.append(("pool", tuple(x.shape), x.detach(), out, idx))
                        return (out, idx) if ret_idx else out
                    x_ref, out_ref, idx_ref = self._next("pool", tuple(x.shape))
                    self.count += 1
                    out = _PairedMaxPool.apply(x, rank, opts, x_ref, out_ref, idx_ref)
                    if ret_idx:
                        return out, pool(x.detach(), **opts)[1]
                    return out
        return func(*args, **kwargs)


def deeplift_pairs(model: Model, x: torch.Tensor, ref: torch.Tensor, targets: torch.Tensor, *,
                   period: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """DeepLIFT attributions of rows ``x`` against rows ``ref`` (same shape) for ``targets``, in chunks;
    also ``f(x) − f(ref)`` per row and the nonlinearity calls replaced.

    The references run first without gradients (every nonlinearity's input and output kept), then the
    inputs with the Rescale multipliers against them, so the backward pass covers the inputs' rows only.
    ``period``: the reference rows repeat with this period (``ref[i] == ref[i % period]``, references
    shared by every input): they run once. A model whose two passes do not make the same sequence of
    nonlinearity calls (data-dependent control flow) runs as one batch ``[x; x_ref]`` instead
    (:func:`deeplift_rules`, as Captum does)."""
    maps = torch.empty_like(x)
    dscore = torch.empty(len(x), dtype=x.dtype, device=x.device)
    count = 0
    rows = chunk_rows(model, x)
    shared = None
    if period:
        rows = max(period, rows // period * period)
        shared = _PairedMode()
        with torch.no_grad(), shared:
            shared_logits = model.logits_t(ref[:period])
    for s in row_chunks(len(x), rows):
        tg = targets[s]
        try:
            if shared is not None:
                mode = _PairedMode()
                mode.recorded = shared.recorded
                idx = torch.arange(s.start, s.stop, device=x.device) % period
                ref_scores = shared_logits[idx].gather(1, tg.view(-1, 1).to(x.device)).view(-1)
            else:
                mode = _PairedMode()
                with torch.no_grad(), mode:
                    ref_scores = pick_scores(model.logits_t(ref[s]), tg)[0]
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
            g, scores, ref_scores, n_rules = _batched_pair(model, x[s], ref[s], tg)
        count = max(count, n_rules)
        maps[s] = g * (x[s] - ref[s])
        dscore[s] = scores.detach() - ref_scores
    return maps, dscore, count


def _batched_pair(model, x, ref, tg):
    """One chunk of DeepLIFT as one batch ``[x; x_ref]``: (gradient multipliers, scores, reference scores, count)."""
    b = len(x)
    both = torch.cat([x, ref]).detach().requires_grad_(True)
    with torch.enable_grad():
        with deeplift_rules() as mode:
            logits = model.logits_t(both)
        scores = pick_scores(logits[:b], tg)[0]
        (g,) = torch.autograd.grad(scores.sum(), both)
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
    (the local derivative where ``|Δin| < 1e-10``), max pooling sends each window's ``Δout`` to the
    argmax of the input (or of the reference, where the reference's maximum is larger). The maps of a
    sample sum to ``score_c(x) − score_c(x_ref)`` (summation-to-delta); ``extras['delta']`` holds the
    per-sample residual (≈ 0 up to float rounding; larger when the model uses nonlinear operations
    without a rule, e.g. products of activations or global max reductions).

    Parameters
    ----------
    baseline : 'zero' | 'mean' | 'blur' | 'noise' | float | array
        The reference, as for ``integrated_gradients`` / ``occlusion``.
    """

    name = "deeplift"

    def __init__(self, baseline="zero", blur_sigma: float = 0.1, seed: int = 0) -> None:
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.seed = seed

    def _validate(self):
        from .segments import check_baseline_param

        check_baseline_param(self.baseline)
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    def _compute(self, model, t, targets):
        ref = resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))
        maps, dscore, count = deeplift_pairs(model, t, ref, targets)
        _warn_none(count, model, "deeplift", "nonlinearity")
        delta = maps.reshape(len(t), -1).sum(1) - dscore
        return maps, targets.cpu().numpy(), {"delta": delta.detach().cpu().numpy(),
                                             "rules_applied": int(count)}


class _ShapBase(Explainer):
    def _validate(self):
        _check_baselines_param(self.baselines)
        check_number(self.n_baselines, "n_baselines", minimum=1, integer=True)
        check_number(self.seed, "seed", integer=True)


@register("deeplift_shap")
class DeepLiftShap(_ShapBase):
    """DeepLIFT-SHAP (Lundberg & Lee, 2017; Captum's ``DeepLiftShap``): DeepLIFT attributions averaged
    over a distribution of references. The maps of a sample sum to ``score_c(x) − mean_ref
    score_c(ref)``; ``extras['delta']`` is the residual.

    Parameters
    ----------
    baselines : 'noise' | 'zero' | 'mean' | 'blur' | float | array
        ``'noise'`` (default): ``n_baselines`` Gaussian-noise references with each channel's mean and
        standard deviation of the sample (seeded by ``seed`` and the sample); an array of reference
        samples ``(M, ...)`` in the layout of one sample (e.g. a few training samples) is shared by all
        inputs; a single named baseline or number gives plain DeepLIFT.
    n_baselines : int
        References drawn for ``'noise'``.
    """

    name = "deeplift_shap"
    stochastic = True

    def __init__(self, baselines="noise", n_baselines: int = 8, seed: int = 0) -> None:
        self.baselines = baselines
        self.n_baselines = n_baselines
        self.seed = seed

    def _compute(self, model, t, targets):
        refs, shared = reference_distribution(t, self.baselines, int(self.n_baselines), seed=int(self.seed))
        n, m = len(t), refs.shape[1]
        xi = t.repeat_interleave(m, 0)
        ri = refs.expand(n, *refs.shape[1:]).reshape(n * m, *t.shape[1:])
        maps, dscore, count = deeplift_pairs(model, xi, ri, targets.repeat_interleave(m), period=m if shared else None)
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
