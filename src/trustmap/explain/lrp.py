"""Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019) with named composites.

Relevance is propagated as a modified gradient, the way Zennit does it: during the forward pass a
``torch.overrides.TorchFunctionMode`` intercepts every ``conv1d``/``conv2d``/``linear`` call (and
``batch_norm``, average pooling and the elementwise activations) and swaps in an autograd function
whose forward is the original operation and whose backward maps the relevance of the outputs to the
relevance of the inputs with the layer's rule. The gradient that arrives at the input is the
relevance map. The user's model is never changed.

Rules (``z`` is the layer output under the rule's weights, ``stab(z) = z + ε·(sign(z) or 1)``):

* ``epsilon``: ``R_in = x · Wᵀ (R / stab(z))`` (LRP-ε; the bias absorbs a share).
* ``gamma``: as ε with ``W + γW⁺`` and ``b + γb⁺``.
* ``alpha_beta``: ``α`` times the positive contributions (``x⁺W⁺ + x⁻W⁻``, bias ``b⁺``) minus ``β`` times
  the negative ones (``x⁺W⁻ + x⁻W⁺``, bias ``b⁻``), each normalized by its own ``stab(z)``; ``zplus`` is
  ``α=1, β=0``.
* ``flat``: relevance spread evenly over each output's receptive field (``x`` and ``W`` replaced by ones).
* average pooling: the ``norm`` rule, ``R_in = x · poolᵀ(R / stab(pool(x)))``; max pooling, flatten and
  reshapes: the plain gradient (the winner takes the relevance); activations (ReLU, tanh, sigmoid, ELU,
  ...): pass the relevance unchanged.
* ``batch_norm`` in eval mode right after a convolution / linear layer is folded into it (the layer
  with ``W·s``, ``(b − μ)·s + β``, ``s = γ/√(σ²+eps)``), as Zennit's canonizer does.

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
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedError
from .backprop import _ELEMENTWISE, _first_tensor, activation_call  # one package: the interception tables
from .base import Explainer, check_choice, check_number, chunk_rows, row_chunks
from .registry import register

__all__ = ["LRP", "COMPOSITES", "lrp_rules", "stabilize"]

COMPOSITES = ("epsilon", "gamma", "alpha_beta", "epsilon_plus_flat")
_CONV = {F.conv1d, F.conv2d}
_LINEAR = {F.linear}
_AVGPOOL = {f for f in (F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                        getattr(torch, "avg_pool1d", None)) if f is not None}


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z + eps·sign(z)``, with ``sign(0) = +1`` (Zennit's stabilizer)."""
    return z + ((z == 0).to(z) + z.sign()) * eps


def _vjp(op: Callable, x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(∂ op(x, w, None) / ∂x)ᵀ g`` for a linear op."""
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(op(xi, w, None), xi, g)
    return out


def relevance_in(rule: str, op: Callable, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                 r: torch.Tensor, *, epsilon: float, gamma: float, alpha: float, beta: float) -> torch.Tensor:
    """Relevance of the inputs ``x`` of ``op(x, w, b)`` given the outputs' relevance ``r``."""
    x, w = x.detach(), w.detach()
    b = None if b is None else b.detach()
    if rule == "epsilon":
        z = op(x, w, b)
        return x * _vjp(op, x, w, r / stabilize(z, epsilon))
    if rule == "gamma":
        wg = w + gamma * w.clamp(min=0)
        bg = None if b is None else b + gamma * b.clamp(min=0)
        z = op(x, wg, bg)
        return x * _vjp(op, x, wg, r / stabilize(z, 1e-6))
    if rule == "flat":
        ones_x, ones_w = torch.ones_like(x), torch.ones_like(w)
        z = op(ones_x, ones_w, None)
        return _vjp(op, ones_x, ones_w, r / stabilize(z, 1e-6))
    # alpha-beta (zplus: alpha=1, beta=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    bp = None if b is None else b.clamp(min=0)
    bn = None if b is None else b.clamp(max=0)
    z_pos = op(xp, wp, bp) + op(xn, wn, None)
    s_pos = r / stabilize(z_pos, 1e-6)
    out = alpha * (xp * _vjp(op, xp, wp, s_pos) + xn * _vjp(op, xn, wn, s_pos))
    if beta:
        z_neg = op(xp, wn, bn) + op(xn, wp, None)
        s_neg = r / stabilize(z_neg, 1e-6)
        out = out - beta * (xp * _vjp(op, xp, wn, s_neg) + xn * _vjp(op, xn, wp, s_neg))
    return out


class _RuleLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, op, rule, opts):
        ctx.op, ctx.rule, ctx.opts = op, rule, opts
        ctx.save_for_backward(x, w, b if b is not None else torch.empty(0))
        ctx.has_bias = b is not None
        return op(x, w, b)

    @staticmethod
    def backward(ctx, r):
        x, w, b = ctx.saved_tensors
        rin = relevance_in(ctx.rule, ctx.op, x, w, b if ctx.has_bias else None, r, **ctx.opts)
        return rin, None, None, None, None, None


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


class _LrpMode(TorchFunctionMode):
    def __init__(self, composite: str, opts: dict) -> None:
        super().__init__()
        self.composite, self.opts = composite, opts
        self.count = 0
        self._made: dict[int, tuple] = {}  # id(output) -> (output, x, w, b, make_op, dense, first)

    def _rule(self, dense: bool, first: bool) -> str:
        c = self.composite
        if c == "epsilon" or dense:
            return "flat" if (c == "epsilon_plus_flat" and first) else "epsilon"
        if c == "gamma":
            return "gamma"
        if c == "alpha_beta":
            return "alpha_beta"
        return "flat" if first else "zplus"

    def _linear(self, x, w, b, op, dense, first=None):
        if first is None:  # the first conv/linear call of the forward pass reads the input
            first = not self._made
        rule = self._rule(dense, first)
        opts = dict(self.opts)
        if rule == "zplus":
            rule, opts["alpha"], opts["beta"] = "alpha_beta", 1.0, 0.0
        out = _RuleLinear.apply(x, w, b, op, rule, opts)
        self.count += 1
        self._made[id(out)] = (out, x, w, b, op, dense, first)
        return out

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
                def op(xx, ww, bb, func=func, rest_a=rest_a, rest_k=rest_k):
                    return func(xx, ww, bb, *rest_a, **rest_k)

                return self._linear(x, w, b, op, func in _LINEAR)
        if func is F.batch_norm:
            names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
            bound = dict(zip(names, args))
            bound.update(kwargs)
            x = bound["input"]
            prev = self._made.get(id(x))
            if prev is not None and prev[0] is x and not bound.get("training", False) \
                    and bound.get("running_mean") is not None:
                _, xin, w, b, op, dense, first = prev
                var, mean = bound["running_var"].detach(), bound["running_mean"].detach()
                s = torch.rsqrt(var + float(bound.get("eps", 1e-5)))
                if bound.get("weight") is not None:
                    s = s * bound["weight"].detach()
                shift = -mean * s + (bound["bias"].detach() if bound.get("bias") is not None else 0.0)
                w2 = w.detach() * s.view(-1, *([1] * (w.ndim - 1)))
                b2 = shift + (b.detach() * s if b is not None else 0.0)
                self.count -= 1  # the folded pair counts once
                return self._linear(xin, w2, b2, op, dense, first)
            if isinstance(x, torch.Tensor) and not bound.get("training", False):
                rest_k = {k: v for k, v in kwargs.items() if k != "input"}
                return _Pass.apply(x, lambda v: func(v, *args[1:], **rest_k))
        if func in _AVGPOOL:
            x = _first_tensor(args, kwargs)
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                rest_a, rest_k = tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "input"}
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
    breaks conservation. Keras models are refused (their dense layers are matrix products plus a
    separate bias add, which the rules do not see).

    Parameters
    ----------
    composite : 'epsilon' | 'gamma' | 'alpha_beta' | 'epsilon_plus_flat'
    epsilon : float
        ε of the ε rule (Zennit's default 1e-6; larger values absorb weak, contradictory relevance).
    gamma : float
        γ of the γ rule.
    alpha, beta : float
        Of the αβ rule (``alpha − beta = 1`` keeps conservation).
    """

    name = "lrp"

    def __init__(self, composite: str = "epsilon_plus_flat", epsilon: float = 1e-6, gamma: float = 0.25,
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
        if model.framework != "torch":
            raise UnsupportedError(f"lrp supports PyTorch models; {model.framework} dense layers are matrix "
                                   "products with a separate bias add that the LRP rules do not see",
                                   parameter="method", expected="a torch.nn.Module", got=model.framework,
                                   fix="rebuild the network in PyTorch (or use deeplift / input_x_gradient, which "
                                       "equal LRP-0 on ReLU networks)")
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

