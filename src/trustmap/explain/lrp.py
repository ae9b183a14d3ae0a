"""Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019) with named composites.

Relevance is propagated as a modified gradient, the way Zennit does it: during the forward pass a
``torch.overrides.TorchFunctionMode`` intercepts every ``conv1d``/``conv2d``/``linear`` call (and
``batch_norm``, average pooling and the elementwise activations) and swaps in an autograd function
whose forward is the original operation and whose backward maps the relevance of the outputs to the
relevance of the inputs with the layer's rule. The gradient that arrives at the input is the
relevance map. The user's model is never changed.

Rules (``z`` is the layer output under the rule's weights, ``stab(z) = z + ε·(sign(z) or 1)``):

* ``epsilon``: ``R_in = x · Wᵀ (R / stab(z))`` (LRP-ε; the bias absorbs a share).
* ``gamma``: Zennit 0.5's generalized γ rule (Andéol et al., 2021): where ``z > 0``, ε-like with the
  weights ``W + γW⁺`` on positive inputs, ``W + γW⁻`` on negative ones and bias ``b + γb⁺``; where
  ``z < 0``, the mirror image (``W + γW⁻`` on positive inputs, ``b + γb⁻``). On non-negative inputs
  (after a ReLU) it is the original γ rule of Montavon et al. (2019).
* ``alpha_beta``: ``α`` times the positive contributions (``x⁺W⁺ + x⁻W⁻``, bias ``b⁺``) minus ``β`` times
  the negative ones (``x⁺W⁻ + x⁻W⁺``, bias ``b⁻``), each normalized by its own ``stab(z)``; ``zplus`` is
  ``α=1, β=0``.
* ``flat``: relevance spread evenly over each output's receptive field (``x`` and ``W`` replaced by ones).
* average pooling: the ``norm`` rule, ``R_in = x · poolᵀ(R / stab(pool(x)))``; max pooling, flatten and
  reshapes: the plain gradient (the winner takes the relevance); activations (ReLU, tanh, sigmoid, ELU,
  ...): pass the relevance unchanged.
* ``batch_norm`` in eval mode right after a convolution / linear layer is folded into it (the layer
  with ``W·s``, ``(b − μ)·s + β``, ``s = γ/√(σ²+eps)``), as Zennit's canonizer does; so are per-channel
  adds, subtractions, products and divisions by constants (a Keras layer's bias add, Keras'
  ``BatchNormalization``), through permutes of the output (Keras' channels-last layout).
* matrix products ``x @ W`` with a constant ``W`` (Keras ``Dense``) are dense layers.

Composites (which rule each layer gets; "dense" = ``linear`` calls, "first" = the layer that reads the
input): ``epsilon`` (ε everywhere), ``gamma`` (convolutions γ, dense ε), ``alpha_beta`` (convolutions
α2β1, dense ε: Zennit's ``EpsilonAlpha2Beta1``), ``epsilon_plus_flat`` (first layer flat, other
convolutions z⁺, dense ε: Zennit's ``EpsilonPlusFlat``).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair, _single
from torch.overrides import TorchFunctionMode

from .backprop import _ELEMENTWISE, _first_tensor, activation_call  # one package: the interception tables
from .base import Explainer, check_choice, check_number, chunk_rows, row_chunks
from .registry import register

__all__ = ["LRP", "COMPOSITES", "AffineLayer", "lrp_rules", "relevance_in", "stabilize"]

COMPOSITES = ("epsilon", "gamma", "alpha_beta", "epsilon_plus_flat")
_CONV = {F.conv1d, F.conv2d}
_LINEAR = {F.linear}
_AVGPOOL = {f for f in (F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                        getattr(torch, "avg_pool1d", None)) if f is not None}


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps·sign(z)``, with ``sign(0) = +1`` (Zennit's stabilizer), as a fresh tensor.

    Written as ``copysign(eps, z + 0) + z``: adding ``+0`` turns ``-0.0`` into ``+0.0`` (and changes no
    other value), so both zeros get ``+eps`` as ``z >= 0`` gives them; the values are those of
    ``torch.where(z >= 0, eps, -eps) + z`` bit for bit (NaN and ±Inf included), in three fast passes:
    ``torch.where`` on CPU ran ~9x slower than they do together (benchmarks/RESULTS.md)."""
    s = torch.add(z, 0.0)
    e = torch.tensor(eps).to(device=z.device, dtype=z.dtype)  # eps rounded as the scalar form rounds it
    return torch.copysign(e, s, out=s).add_(z)


def _conv_input_grad(rank: int, opts: dict):
    """The input gradient of ``conv{rank}d(·, w, None, **opts)`` as one transposed convolution, or None
    when the call's options need autograd (string padding).

    It is ``torch.nn.grad.conv{rank}d_input``'s call, ``aten.convolution_backward`` for the input only,
    given the layer's own input ``x`` where it is contiguous with the rows of ``g`` (as autograd gives
    it): ``conv{rank}d_input`` passes an expanded one-element tensor instead, which the CPU kernel makes
    contiguous, a zero-filled copy of the input's size on every call (10-20% of the call on the 1D CNN).
    The input's values are not read; the result is the same bit for bit."""
    if isinstance(opts.get("padding", 0), str):
        return None
    tup = _single if rank == 1 else _pair
    stride, padding, dilation = (tup(opts.get(k, d)) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    groups = opts.get("groups", 1)

    def vjp(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if g.shape[0] == x.shape[0] and x.is_contiguous() and x.dtype == g.dtype:
            inp = x
        else:
            inp = g.new_empty(1).expand((g.shape[0], *x.shape[1:]))
        return torch.ops.aten.convolution_backward(g, inp, w, None, stride, padding, dilation, False, [0],
                                                   groups, (True, False, False))[0]

    return vjp


class AffineLayer:
    """A linear layer seen in the forward pass, ``out = permute(raw(x, w, b))``, with the per-channel scales
    and shifts that follow it (bias add, batch norm in eval mode) folded into ``w`` and ``b``.

    ``raw(x, w, b)``: the call (conv, linear, matmul); ``wax``: the output-channel axis of ``w``;
    ``chan``: the output-channel axis of ``out``; ``first``: it reads the model's input."""

    def __init__(self, x, raw, w, b, wax, chan, dense, first, vjp_raw=None, groups=1):
        self.x, self.raw, self.w, self.b = x, raw, w, b
        self.wax, self.chan, self.dense, self.first = wax, chan, dense, first
        self.perm: tuple | None = None
        self.vjp_raw = vjp_raw
        self.groups = int(groups) if isinstance(groups, int) else 0  # 0: unknown (no stacking)

    def copy(self) -> "AffineLayer":
        new = AffineLayer(self.x, self.raw, self.w, self.b, self.wax, self.chan, self.dense, self.first, self.vjp_raw)
        new.perm, new.groups = self.perm, self.groups
        return new

    def op(self, x, w, b):
        z = self.raw(x, w, b)
        return z if self.perm is None else z.permute(self.perm)

    def vjp(self, x, w, g):
        """``(∂ op(x, w, None) / ∂x)ᵀ g`` (the op is linear in x; ``g`` may have more rows than ``x``)."""
        if self.perm is not None:
            inv = [0] * len(self.perm)
            for i, p in enumerate(self.perm):
                inv[p] = i
            g = g.permute(inv)
        if self.vjp_raw is not None:
            return self.vjp_raw(x, w, g)
        with torch.enable_grad():
            xi = torch.zeros((g.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device).requires_grad_(True)
            (out,) = torch.autograd.grad(self.raw(xi, w, None), xi, g)
        return out

    def bias_map(self, b: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The per-channel vector ``b`` shaped to broadcast over the layer's outputs (``like``)."""
        shape = [1] * like.ndim
        shape[self.chan % like.ndim] = -1
        return b.view(shape)

    def stacked(self, like: torch.Tensor) -> torch.Tensor:
        """An empty tensor holding two outputs like ``like`` side by side along the channel axis (the
        relevance ratios of two weight sets, for :meth:`vjp2`)."""
        shape = list(like.shape)
        shape[self.chan % like.ndim] *= 2
        return like.new_empty(shape)

    def halves(self, g2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ch = self.chan % g2.ndim
        o = g2.shape[ch] // 2
        return g2.narrow(ch, 0, o), g2.narrow(ch, o, o)

    def vjp2(self, x, w1, w2, g2):
        """``vjp(x, w1, g1) + vjp(x, w2, g2)`` for ``g2`` = :meth:`stacked` holding ``g1`` and ``g2``: one
        transposed product with the two weight sets stacked along the output channels (two calls for a
        grouped convolution, whose groups would mix)."""
        if self.groups == 1:
            return self.vjp(x, torch.cat([w1, w2], self.wax), g2)
        a, b = self.halves(g2)
        return self.vjp(x, w1, a).add_(self.vjp(x, w2, b))

    def scaled(self, s: torch.Tensor | None, t: torch.Tensor | None) -> "AffineLayer":
        """The layer followed by ``out · s + t`` (``s``, ``t``: per output channel, shape (O,))."""
        new = self.copy()
        if s is not None:
            shape = [1] * self.w.ndim
            shape[self.wax] = -1
            new.w = self.w * s.view(shape)
            new.b = None if self.b is None else self.b * s
        if t is not None:
            new.b = t if new.b is None else new.b + t
        return new


def relevance_in(rule: str, layer: AffineLayer, x: torch.Tensor, r: torch.Tensor, *, epsilon: float, gamma: float,
                 alpha: float, beta: float, z: torch.Tensor | None = None) -> torch.Tensor:
    """Relevance of the inputs ``x`` of ``layer`` given its outputs' relevance ``r`` under ``rule``
    (``z``: the layer's output when already known, for the ε, γ and αβ rules)."""
    x = x.detach()
    w = layer.w.detach()
    b = None if layer.b is None else layer.b.detach()
    op, vjp = layer.op, layer.vjp
    if rule == "epsilon":
        z = op(x, w, b) if z is None else z
        d = stabilize(z, epsilon)
        return vjp(x, w, torch.div(r, d, out=d)).mul_(x)
    if rule == "flat":  # every row's z is the same (ones through ones): computed on one row
        ones_x, ones_w = torch.ones_like(x[:1]), torch.ones_like(w)
        return vjp(x, ones_w, r / stabilize(op(ones_x, ones_w, None), 1e-6))

    # γ and αβ split the products by the signs of inputs and weights. With z = x·W + b (the layer's own
    # output) and S = x⁺·W⁺ + x⁻·W⁻ (the positive contributions; one product, two on inputs of both
    # signs); γ's other split is z − b − S, so one product besides the forward (αβ computes its negative
    # part as well: it divides by it); backward, the two weight sets go through one transposed product
    # (stacked), two on inputs of both signs. After a ReLU there are no negative inputs and their terms
    # (exact zeros) are skipped.
    nonneg = bool((x >= 0).all())
    xp = x if nonneg else x.clamp(min=0)
    xn = None if nonneg else x.clamp(max=0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    if z is None:
        z = op(x, w, b)
    z = z.detach()
    if rule == "alpha_beta" and not beta:  # z⁺: the positive contributions only
        d = op(xp, wp, None) if nonneg else op(xp, wp, None).add_(op(xn, wn, None))
        if b is not None:
            d.add_(layer.bias_map(b.clamp(min=0), d))
        s_pos = torch.div(r, d.add_(1e-6), out=d).mul_(alpha)  # d >= 0: the stabilizer's sign is +
        if nonneg:
            return vjp(x, wp, s_pos).mul_(xp)
        return vjp(x, wp, s_pos).mul_(xp).add_(vjp(x, wn, s_pos).mul_(xn))
    S = op(xp, wp, None) if nonneg else op(xp, wp, None).add_(op(xn, wn, None))  # S >= 0
    s2 = layer.stacked(r)
    s_a, s_b = layer.halves(s2)
    if rule == "gamma":
        # Zennit 0.5's generalized γ (Andéol et al., 2021): where z > 0 the weights W + γW⁺ on positive
        # inputs and W + γW⁻ on negative ones, bias b + γb⁺: z₊ = z + γ(S + b⁺) >= z; where z < 0 the
        # mirror image, z₋ = z + γ(z − b − S + b⁻) = (1 + γ)z − γ(S + b⁺) <= z; ratios r/z± where the sign
        # of z says (the stabilizer's sign is z's)
        if b is not None:
            S.add_(layer.bias_map(b.clamp(min=0), S))
        torch.add(z, S, alpha=gamma, out=s_a).add_(1e-6)
        torch.div(r, s_a, out=s_a).mul_(z > 0)
        torch.mul(z, 1.0 + gamma, out=s_b).sub_(S, alpha=gamma).sub_(1e-6)
        torch.div(r, s_b, out=s_b).mul_(z < 0)
        wgp, wgn = torch.add(w, wp, alpha=gamma), torch.add(w, wn, alpha=gamma)
        t1 = layer.vjp2(x, wgp, wgn, s2)  # Wgpᵀ s₊ + Wgnᵀ s₋: the factor of x⁺
        if nonneg:
            return t1.mul_(xp)
        # the factor of x⁻, Wgnᵀ s₊ + Wgpᵀ s₋ (its own product: (2 + γ) Wᵀ(s₊ + s₋) − t1 would cancel)
        return t1.mul_(xp).add_(layer.vjp2(x, wgn, wgp, s2).mul_(xn))
    # alpha-beta: α (x⁺W⁺ + x⁻W⁻ + b⁺) / z₊ − β (x⁺W⁻ + x⁻W⁺ + b⁻) / z₋, z₊ = S + b⁺ >= 0, z₋ <= 0
    # (z₋ is its own product: z − b − S cancels where the negative part is small against S, and the
    # β term divides by it)
    zn = op(xp, wn, None) if nonneg else op(xp, wn, None).add_(op(xn, wp, None))
    if b is not None:
        torch.add(S, layer.bias_map(b.clamp(min=0), S), out=s_a)
        torch.add(zn, layer.bias_map(b.clamp(max=0), zn), out=s_b)
    else:
        s_a.copy_(S)
        s_b.copy_(zn)
    torch.div(r, s_a.add_(1e-6), out=s_a).mul_(alpha)
    torch.div(r, s_b.sub_(1e-6), out=s_b).mul_(-beta)
    t1 = layer.vjp2(x, wp, wn, s2)  # W⁺ᵀ αs₊ − W⁻ᵀ βs₋: the factor of x⁺
    if nonneg:
        return t1.mul_(xp)
    # the factor of x⁻, W⁻ᵀ αs₊ − W⁺ᵀ βs₋ (its own product: Wᵀ(αs₊ − βs₋) − t1 would cancel)
    return t1.mul_(xp).add_(layer.vjp2(x, wn, wp, s2).mul_(xn))


class _RuleLinear(torch.autograd.Function):
    """Forward: the layer's output (or ``value()``, the output of a folded scale/shift); backward: the rule."""

    @staticmethod
    def forward(ctx, x, layer, rule, opts, value):
        ctx.layer, ctx.rule, ctx.opts = layer, rule, opts
        out = layer.op(x, layer.w, layer.b) if value is None else value()
        # z, the layer's output, is what the rules divide by (a folded layer's z is recomputed with the
        # folded weights, as Zennit's merged layer computes it)
        ctx.saved_z = value is None and rule in ("epsilon", "gamma", "alpha_beta")
        ctx.save_for_backward(x, out if ctx.saved_z else None)
        return out

    @staticmethod
    def backward(ctx, r):
        x, out = ctx.saved_tensors
        rin = relevance_in(ctx.rule, ctx.layer, x, r, z=out if ctx.saved_z else None, **ctx.opts)
        return rin, None, None, None, None


class _NormPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pool):
        ctx.pool = pool
        ctx.save_for_backward(x)
        return pool(x)

    @staticmethod
    def backward(ctx, r):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            z = ctx.pool(xi)
            (g,) = torch.autograd.grad(z, xi, r / stabilize(z.detach(), 1e-6))
        return x * g, None


class _Pass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, r):
        return r, None


def _names(*pairs) -> set:
    return {getattr(m, n) for m, n in pairs if getattr(m, n, None) is not None}


T = torch.Tensor
_MATMUL = _names((torch, "matmul"), (T, "matmul"), (T, "__matmul__"))
_ADD = _names((torch, "add"), (T, "add"), (T, "add_"), (T, "__add__"), (T, "__radd__"), (T, "__iadd__"))
_SUB = _names((torch, "sub"), (torch, "subtract"), (T, "sub"), (T, "subtract"), (T, "sub_"), (T, "subtract_"),
              (T, "__sub__"), (T, "__isub__"))
_MUL = _names((torch, "mul"), (torch, "multiply"), (T, "mul"), (T, "multiply"), (T, "mul_"), (T, "__mul__"),
              (T, "__rmul__"), (T, "__imul__"))
_DIV = _names((torch, "div"), (torch, "divide"), (torch, "true_divide"), (T, "div"), (T, "divide"), (T, "div_"),
              (T, "__truediv__"), (T, "__itruediv__"))
_PERMUTE = _names((torch, "permute"), (T, "permute"), (torch, "transpose"), (T, "transpose"), (T, "contiguous"))
_MEAN = _names((torch, "mean"), (T, "mean"))
del T


class _LrpMode(TorchFunctionMode):
    def __init__(self, composite: str, opts: dict) -> None:
        super().__init__()
        self.composite, self.opts = composite, opts
        self.count = 0
        self._made: dict[int, tuple] = {}  # id(output) -> (output, AffineLayer)

    def _rule(self, dense: bool, first: bool) -> tuple[str, dict]:
        c, opts = self.composite, self.opts
        if c == "epsilon" or dense:
            rule = "flat" if (c == "epsilon_plus_flat" and first) else "epsilon"
        elif c in ("gamma", "alpha_beta"):
            rule = c
        else:
            rule = "flat" if first else "zplus"
        if rule == "zplus":
            rule, opts = "alpha_beta", {**opts, "alpha": 1.0, "beta": 0.0}
        return rule, opts

    def _emit(self, layer: AffineLayer, value=None):
        rule, opts = self._rule(layer.dense, layer.first)
        out = _RuleLinear.apply(layer.x, layer, rule, opts, value)
        self._made[id(out)] = (out, layer)
        return out

    def _new(self, x, raw, w, b, wax, chan, dense, vjp_raw=None, groups=1):
        layer = AffineLayer(x, raw, w.detach(), None if b is None else b.detach(), wax, chan, dense,
                            self.count == 0, vjp_raw, groups)
        self.count += 1
        return self._emit(layer)

    def _tracked(self, t) -> AffineLayer | None:
        prev = self._made.get(id(t)) if isinstance(t, torch.Tensor) else None
        return prev[1] if prev is not None and prev[0] is t else None

    def _channel_vector(self, y: torch.Tensor, layer: AffineLayer, c) -> torch.Tensor | None:
        """``c`` as a vector over ``y``'s output channels when it is a constant broadcast along them."""
        n_out = y.shape[layer.chan]
        if isinstance(c, bool):
            return None
        if isinstance(c, (int, float)):
            return torch.full((n_out,), float(c), dtype=y.dtype, device=y.device)
        if not isinstance(c, torch.Tensor) or c.requires_grad or not c.is_floating_point() or c.ndim > y.ndim:
            return None
        if c.numel() == 1:
            return c.reshape(1).to(y.dtype).expand(n_out)
        shape = (1,) * (y.ndim - c.ndim) + tuple(c.shape)
        chan = layer.chan % y.ndim
        if shape[chan] != n_out or any(s != 1 for i, s in enumerate(shape) if i != chan):
            return None
        return c.reshape(-1).to(y.dtype)

    def _affine(self, func, args, kwargs):
        """A scale or shift of a tracked layer's output by a per-channel constant: folded into the layer."""
        if kwargs.get("alpha", 1) != 1 or kwargs.get("out") is not None or len(args) != 2:
            return None
        a, c = args
        layer = self._tracked(a)
        if layer is None and (func in _ADD or func in _MUL):
            c, a = a, c
            layer = self._tracked(a)
        if layer is None:
            return None
        v = self._channel_vector(a, layer, c)
        if v is None:
            return None
        if func in _ADD:
            new = layer.scaled(None, v)
        elif func in _SUB:
            new = layer.scaled(None, -v)
        elif func in _MUL:
            new = layer.scaled(v, None)
        else:
            new = layer.scaled(1.0 / v, None)
        out_fn = func
        if getattr(func, "__name__", "").endswith("_") and not func.__name__.startswith("__"):
            out_fn = getattr(torch.Tensor, func.__name__[:-1])  # in place -> out of place (callers use the result)
        elif getattr(func, "__name__", "") in ("__iadd__", "__isub__", "__imul__", "__itruediv__"):
            out_fn = getattr(torch.Tensor, "__" + func.__name__[3:])
        ad, cd = a.detach(), (c.detach() if isinstance(c, torch.Tensor) else c)
        pair = (ad, cd) if args[0] is a else (cd, ad)
        return self._emit(new, value=lambda: out_fn(*pair))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONV or func in _LINEAR:
            names = ("input", "weight", "bias")
            bound = dict(zip(names, args[:3]))
            bound.update({k: v for k, v in kwargs.items() if k in names})
            rest_a = tuple(args[3:])
            rest_k = {k: v for k, v in kwargs.items() if k not in names}
            x, w, b = bound["input"], bound["weight"], bound.get("bias")
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                def raw(xx, ww, bb, func=func, rest_a=rest_a, rest_k=rest_k):
                    return func(xx, ww, bb, *rest_a, **rest_k)

                if func in _LINEAR:
                    return self._new(x, raw, w, b, 0, -1, True, lambda xx, ww, g: g @ ww)
                opts = dict(zip(("stride", "padding", "dilation", "groups"), rest_a))
                opts.update(rest_k)
                return self._new(x, raw, w, b, 0, 1, False, _conv_input_grad(w.ndim - 2, opts),
                                 opts.get("groups", 1))
        if func in _MATMUL and len(args) == 2 and not kwargs:
            x, w = args
            if (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.is_floating_point()
                    and w.ndim == 2 and x.ndim >= 2 and not w.requires_grad and x.requires_grad):
                def raw(xx, ww, bb):
                    z = torch.matmul(xx, ww)
                    return z if bb is None else z + bb

                return self._new(x, raw, w, None, 1, -1, True, lambda xx, ww, g: g @ ww.T)
        if func is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            bound = dict(zip(names, args))
            bound.update(kwargs)
            x = bound["input"]
            layer = self._tracked(x)
            if layer is not None and not bound.get("training", False) and bound.get("running_mean") is not None \
                    and layer.chan % x.ndim == 1:
                var, mean = bound["running_var"].detach(), bound["running_mean"].detach()
                s = torch.rsqrt(var + float(bound.get("eps", 1e-5)))
                if bound.get("weight") is not None:
                    s = s * bound["weight"].detach()
                shift = -mean * s + (bound["bias"].detach() if bound.get("bias") is not None else 0.0)
                rest = {k: v for k, v in kwargs.items() if k != "input"}
                return self._emit(layer.scaled(s, None).scaled(None, shift),
                                  value=lambda: func(x.detach(), *args[1:], **rest))
            if isinstance(x, torch.Tensor) and not bound.get("training", False):
                rest_k = {k: v for k, v in kwargs.items() if k != "input"}
                return _Pass.apply(x, lambda v: func(v, *args[1:], **rest_k))
        if func in _ADD or func in _SUB or func in _MUL or func in _DIV:
            out = self._affine(func, args, kwargs)
            if out is not None:
                return out
        if func in _PERMUTE:
            x = _first_tensor(args, kwargs)
            layer = self._tracked(x)
            if layer is not None:
                out = func(*args, **kwargs)
                nd = x.ndim
                if func is torch.Tensor.contiguous:
                    perm = list(range(nd))
                elif func in (torch.transpose, torch.Tensor.transpose):
                    d0, d1 = (a % nd for a in args[1:3])
                    perm = list(range(nd))
                    perm[d0], perm[d1] = perm[d1], perm[d0]
                else:
                    dims = kwargs.get("dims") if "dims" in kwargs else (
                        args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:])
                    perm = [int(d) % nd for d in dims]
                new = layer.copy()
                base = list(layer.perm) if layer.perm is not None else list(range(nd))
                new.perm = tuple(base[p] for p in perm)
                new.chan = perm.index(layer.chan % nd)
                self._made[id(out)] = (out, new)
                return out
        if func in _AVGPOOL or func in _MEAN:
            x = _first_tensor(args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                rest_a, rest_k = tuple(args[1:]), {k: v for k, v in kwargs.items() if k not in ("input", "self")}
                return _NormPool.apply(x, lambda v: func(v, *rest_a, **rest_k))
        if func in _ELEMENTWISE:
            x, fn, _ = activation_call(func, args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                return _Pass.apply(x, fn)  # computed out of place; callers use the result
        return func(*args, **kwargs)


@contextlib.contextmanager
def lrp_rules(composite: str, *, epsilon: float = 1e-6, gamma: float = 0.25, alpha: float = 2.0, beta: float = 1.0
              ) -> Iterator[_LrpMode]:
    """Within this block the model's gradient is its LRP relevance under ``composite`` (the first
    conv/linear call is the first layer). Yields the mode (``count``: layers with a rule)."""
    mode = _LrpMode(composite, {"epsilon": float(epsilon), "gamma": float(gamma), "alpha": float(alpha),
                                "beta": float(beta)})
    with mode:
        yield mode


@register("lrp")
class LRP(Explainer):
    """Layer-wise relevance propagation with a named composite (see the module docstring for the rules).

    The relevance of the output is the target's pre-softmax score, so with bias-free layers and the
    ``epsilon`` or ``alpha_beta`` (α − β = 1) composites a sample's map sums to its score (up to the
    ε absorption); biases absorb a share. ``extras``: ``score`` (the logit), ``relevance_sum`` (the
    map's total per sample) and ``layers_with_rules``.

    Covers ``Conv1d``/``Conv2d``/``Linear`` (functional calls included), ``BatchNorm`` (folded into the
    preceding layer), average and max pooling, flatten/reshape and elementwise activations. Operations
    without a rule (residual additions, attention, products) are backpropagated as gradients, which
    breaks conservation. Keras models (torch backend) get the same rules: a layer's matrix product or
    convolution, the channel permutes around it, its separate bias add and a following
    ``BatchNormalization`` are recognised as one affine layer (the scale and shift folded into its
    weights and bias), fused activations pass relevance, ``GlobalAveragePooling`` gets the norm rule.
    A Keras ``padding="same"`` pads explicitly before the convolution, so under the flat rule the
    padded border counts as input (Zennit's flat rule on a torch ``Conv(padding=k//2)`` does not).

    Parameters
    ----------
    composite : 'epsilon' | 'gamma' | 'alpha_beta' | 'epsilon_plus_flat'
        Default ``alpha_beta`` (Zennit's ``EpsilonAlpha2Beta1``): it keeps maps per channel;
        ``epsilon_plus_flat``'s flat first layer spreads relevance evenly over the channels of a
        receptive field, so its maps cannot say which channel matters (a 12-lead ECG).
    epsilon : float
        ε of the ε rule (Zennit's default 1e-6; larger values absorb weak, contradictory relevance).
    gamma : float
        γ of the γ rule.
    alpha, beta : float
        Of the αβ rule (``alpha − beta = 1`` keeps conservation).
    """

    name = "lrp"

    def __init__(self, composite: str = "alpha_beta", epsilon: float = 1e-6, gamma: float = 0.25,
                 alpha: float = 2.0, beta: float = 1.0) -> None:
        self.composite = composite
        self.epsilon = epsilon
        self.gamma = gamma
        self.alpha = alpha
        self.beta = beta

    def _validate(self):
        check_choice(self.composite, COMPOSITES, "composite")
        check_number(self.epsilon, "epsilon", minimum=0)
        check_number(self.gamma, "gamma", minimum=0)
        check_number(self.alpha, "alpha", minimum=0)
        check_number(self.beta, "beta", minimum=0)

    def _compute(self, model, t, targets):
        maps = torch.empty_like(t)
        score = torch.empty(len(t), dtype=t.dtype, device=t.device)
        count = 0
        for s in row_chunks(len(t), chunk_rows(model, t)):
            xi = t[s].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                with lrp_rules(self.composite, epsilon=self.epsilon, gamma=self.gamma, alpha=self.alpha,
                               beta=self.beta) as mode:
                    logits = model.logits_t(xi)
                sc = logits.gather(1, targets[s].view(-1, 1)).view(-1)
                (r,) = torch.autograd.grad(sc, xi, sc.detach())  # output relevance = the logit
            count = max(count, mode.count)
            maps[s] = r
            score[s] = sc.detach()
        if count == 0:
            warnings.warn(f"{model.name}: no conv/linear call was seen in the forward pass; lrp equals "
                          "gradient × logit", stacklevel=4)
        extras = {"score": score.cpu().numpy(), "relevance_sum": maps.reshape(len(t), -1).sum(1).cpu().numpy(),
                  "layers_with_rules": int(count)}
        return maps, targets.cpu().numpy(), extras

