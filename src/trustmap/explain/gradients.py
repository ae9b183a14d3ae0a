"""Gradient methods: saliency, SmoothGrad, integrated gradients, guided backpropagation.

All of them differentiate the target class's **pre-softmax score** (``Model.logits_t``), never
the probability, and give one value per input entry: maps are per channel natively.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import InputError
from ..baselines import check_baseline, resolve_baseline
from ..models import Model
from .base import (Explainer, check_choice, check_number, chunk_rows, input_gradient, per_sample_normal,
                   pick_scores, row_chunks, sample_seeds)
from .registry import register

__all__ = ["Saliency", "SmoothGrad", "IntegratedGradients", "GuidedBackprop", "guided_relu", "rule_gradients",
           "IG_BASELINES", "IG_RULES"]

IG_BASELINES = ("zero", "mean", "dataset_mean", "blur", "noise")
#: Gauss-Legendre nodes come from an n x n eigenproblem; beyond this they cost more than they give
IG_MAX_GAUSS_STEPS = 2048
IG_RULES = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")


def _finish(g: torch.Tensor, x: torch.Tensor, times_input: bool, absolute: bool) -> torch.Tensor:
    if times_input:
        g = g * x
    return g.abs() if absolute else g


def _gradients(model: Model, t: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input gradients of the target scores for all of ``t``, in chunks under the memory budget."""
    grads = torch.empty_like(t)
    tg_all = torch.empty(len(t), dtype=torch.long, device=t.device)
    for s in row_chunks(len(t), chunk_rows(model, t)):
        g, tg = input_gradient(model, t[s], None if targets is None else targets[s])
        grads[s] = g
        tg_all[s] = tg
    return grads, tg_all


@register("saliency")
class Saliency(Explainer):
    """Vanilla gradient saliency (Simonyan et al., 2014): d score_c / d x, per channel.

    Parameters
    ----------
    absolute : bool
        Return ``|gradient|`` (the classic saliency map). ``False`` keeps the sign.
    times_input : bool
        Multiply by the input (gradient × input), before ``absolute``.
    """

    name = "saliency"
    resolves_own_targets = True

    def __init__(self, absolute: bool = True, times_input: bool = False) -> None:
        self.absolute = absolute
        self.times_input = times_input

    def _compute(self, model, t, targets):
        g, tg = _gradients(model, t, targets)
        return _finish(g, t, bool(self.times_input), bool(self.absolute)), tg.cpu().numpy(), {}


@register("smoothgrad")
class SmoothGrad(Explainer):
    """SmoothGrad (Smilkov et al., 2017): the saliency map averaged over noisy copies of the input.

    Parameters
    ----------
    n_samples : int
        Noisy copies per input.
    noise_level : float
        Noise standard deviation as a fraction of each sample's value range (max − min).
    absolute, times_input : bool
        As for ``saliency``, applied to each noisy copy's map before averaging.
    seed : int
        The noise of each sample is drawn from ``seed`` and the sample's values, so a sample gets the
        same noise alone or in a batch.
    """

    name = "smoothgrad"
    stochastic = True

    def __init__(self, n_samples: int = 25, noise_level: float = 0.15, absolute: bool = True,
                 times_input: bool = False, seed: int = 0) -> None:
        self.n_samples = n_samples
        self.noise_level = noise_level
        self.absolute = absolute
        self.times_input = times_input
        self.seed = seed

    def _validate(self):
        check_number(self.n_samples, "n_samples", minimum=1, integer=True)
        check_number(self.noise_level, "noise_level", minimum=0)
        check_number(self.seed, "seed", integer=True)

    def _compute(self, model, t, targets):
        n, s_ = len(t), int(self.n_samples)
        dims = tuple(range(1, t.ndim))
        sigma = (t.amax(dims) - t.amin(dims)) * float(self.noise_level)  # (N,)
        seeds = sample_seeds(t, int(self.seed))
        acc = torch.zeros_like(t)
        idx_all = np.repeat(np.arange(n), s_)
        draw_all = np.tile(np.arange(s_), n)
        for rows in row_chunks(n * s_, chunk_rows(model, t)):
            si, di = idx_all[rows], draw_all[rows]
            si_t = torch.as_tensor(si, device=t.device)
            noise = per_sample_normal(seeds, si, tuple(t.shape[1:]), s_, di, t.dtype, t.device)
            xr = t[si_t] + noise * sigma[si_t].view(-1, *([1] * (t.ndim - 1)))
            g, _ = input_gradient(model, xr, targets[si_t])
            acc.index_add_(0, si_t, _finish(g, xr, bool(self.times_input), bool(self.absolute)))
        return acc / s_, targets.cpu().numpy(), {}


def _ig_rule(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points in [0, 1] and weights summing to 1 for the path integral."""
    if rule == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (x + 1) / 2, w / 2
    if rule == "riemann_trapezoid":
        if n < 2:
            return np.array([1.0]), np.array([1.0])
        a = np.linspace(0, 1, n)
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return a, w
    if rule == "riemann_middle":
        return (np.arange(n) + 0.5) / n, np.full(n, 1.0 / n)
    if rule == "riemann_left":
        return np.arange(n) / n, np.full(n, 1.0 / n)
    return (np.arange(n) + 1.0) / n, np.full(n, 1.0 / n)


def make_baseline(t: torch.Tensor, kind, *, blur_sigma: float = 0.1, seed: int = 0) -> torch.Tensor:
    """Baseline inputs for ``t`` (internal layout), the batch's shape: :func:`trustmap.baselines.resolve_baseline`."""
    return resolve_baseline(t, kind, blur_sigma=blur_sigma, seed=seed).expand_as(t)


@register("integrated_gradients")
class IntegratedGradients(Explainer):
    """Integrated gradients (Sundararajan et al., 2017) along the straight path from a baseline.

    ``map = (x − b) · ∫₀¹ ∂score_c/∂x (b + α(x − b)) dα``; the maps of a sample sum to
    ``score_c(x) − score_c(b)`` (completeness). ``extras['delta']`` holds, per sample, the
    convergence delta ``Σ map − (score_c(x) − score_c(b))`` of the quadrature.

    Parameters
    ----------
    baseline : 'zero' | 'mean' | 'dataset_mean' | 'blur' | 'noise' | float | array
        The one baseline specification (:mod:`trustmap.baselines`): ``zero``: all zeros; ``mean``:
        each channel's mean over the sample (a flat signal/image); ``dataset_mean``: each channel's
        mean over the batch; ``blur``: the sample blurred along its spatial axes (Gaussian,
        ``blur_sigma`` × each axis length); ``noise``: Gaussian noise with each channel's mean and
        standard deviation, drawn from ``seed`` and the sample's values; a finite number: a constant
        input; an array or tensor that broadcasts to the input (one sample or the batch).
    n_steps : int
        Points on the path (model evaluations per sample).
    rule : 'gausslegendre' | 'riemann_trapezoid' | 'riemann_middle' | 'riemann_left' | 'riemann_right'
        Quadrature rule.
    """

    name = "integrated_gradients"

    def __init__(self, baseline="zero", n_steps: int = 50, rule: str = "gausslegendre",
                 blur_sigma: float = 0.1, seed: int = 0) -> None:
        self.baseline = baseline
        self.n_steps = n_steps
        self.rule = rule
        self.blur_sigma = blur_sigma
        self.seed = seed

    def _validate(self):
        check_baseline(self.baseline, IG_BASELINES)
        check_number(self.n_steps, "n_steps", minimum=1, integer=True)
        check_choice(self.rule, IG_RULES, "rule")
        if self.rule == "gausslegendre" and self.n_steps > IG_MAX_GAUSS_STEPS:  # its nodes cost O(n^2) memory
            raise InputError("too many Gauss-Legendre steps", parameter="n_steps",
                             expected=f"at most {IG_MAX_GAUSS_STEPS} with rule='gausslegendre' (50 are exact to "
                                      "about 1e-6 on smooth paths)", got=self.n_steps,
                             fix="use fewer steps, or rule='riemann_trapezoid' for very many")
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    def _compute(self, model, t, targets):
        n, s_ = len(t), int(self.n_steps)
        base = make_baseline(t, self.baseline, blur_sigma=self.blur_sigma, seed=int(self.seed))
        diff = t - base
        alphas, weights = _ig_rule(self.rule, s_)
        alpha_t = torch.as_tensor(alphas, dtype=t.dtype, device=t.device)
        w_t = torch.as_tensor(weights, dtype=t.dtype, device=t.device)
        acc = torch.zeros_like(t)
        idx_all = np.repeat(np.arange(n), s_)
        step_all = np.tile(np.arange(s_), n)
        shape1 = (-1, *([1] * (t.ndim - 1)))
        for rows in row_chunks(n * s_, chunk_rows(model, t)):
            si = torch.as_tensor(idx_all[rows], device=t.device)
            st = torch.as_tensor(step_all[rows], device=t.device)
            xr = base[si] + alpha_t[st].view(shape1) * diff[si]
            g, _ = input_gradient(model, xr, targets[si])
            acc.index_add_(0, si, g * w_t[st].view(shape1))
        maps = acc * diff
        # completeness check: f(x) - f(baseline)
        ends = torch.empty(2 * n, dtype=t.dtype, device=t.device)
        both = torch.cat([t, base])
        both_tg = torch.cat([targets, targets])
        with torch.inference_mode():
            for rows in row_chunks(2 * n, chunk_rows(model, t)):
                ends[rows] = pick_scores(model.logits_t(both[rows]), both_tg[rows])[0]
        fx, fb = ends[:n].clone(), ends[n:].clone()
        delta = maps.reshape(n, -1).sum(1) - (fx - fb)
        extras = {"delta": delta.cpu().numpy(), "score": fx.cpu().numpy(), "baseline_score": fb.cpu().numpy()}
        return maps, targets.cpu().numpy(), extras


# ---- guided backpropagation ------------------------------------------------------------
class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        out = torch.relu(x)  # the mode is off inside __torch_function__, so this is the plain op
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad.clamp_min(0), out, 0)


class _GuidedReLUInplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.mark_dirty(x)
        x.clamp_(min=0)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad.clamp_min(0), out, 0)


_RELU_FNS = {torch.relu, F.relu, torch.Tensor.relu}
_RELU_INPLACE_FNS = {torch.relu_, F.relu_, torch.Tensor.relu_}


class _GuidedMode(TorchFunctionMode):
    """Replaces every ReLU call (``torch.relu``, ``F.relu``, ``Tensor.relu``, ``nn.ReLU`` and
    their in-place forms; Keras' torch backend computes ``relu`` activations, fused or not, with
    ``torch.nn.functional.relu``) by the guided ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_FNS or func in _RELU_INPLACE_FNS:
            x = args[0] if args else kwargs.get("input", kwargs.get("self"))
            inplace = func in _RELU_INPLACE_FNS or bool(kwargs.get("inplace", False)) or (
                func is F.relu and len(args) > 1 and bool(args[1]))
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                self.count += 1
                if inplace and not (x.is_leaf and x.requires_grad):
                    return _GuidedReLUInplace.apply(x)
                return _GuidedReLU.apply(x)
        return func(*args, **kwargs)


@contextlib.contextmanager
def guided_relu() -> Iterator[_GuidedMode]:
    """Within this block every ReLU the model calls uses the guided-backprop backward rule.

    Yields the mode; its ``count`` is the number of ReLU calls replaced. Only ReLU is replaced
    (not ``clamp``, LeakyReLU, GELU, ...). The mode is popped on exit, also after an exception.
    """
    mode = _GuidedMode()
    with mode:
        yield mode


def rule_gradients(model: Model, t: torch.Tensor, targets: torch.Tensor | None, rule
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Gradients of the target scores for all of ``t`` (chunked) with the forward pass run inside
    ``rule()`` — a function mode that swaps activations' backward rules (guided backprop,
    deconvolution) and counts the calls it replaced. Returns the gradients, the targets and the
    largest per-chunk count."""
    grads = torch.empty_like(t)
    tg_all = torch.empty(len(t), dtype=torch.long, device=t.device)
    count = 0
    for s in row_chunks(len(t), chunk_rows(model, t)):
        xi = t[s].detach().requires_grad_(True)
        with torch.enable_grad():
            with rule() as mode:
                logits = model.logits_t(xi)
            scores, tg = pick_scores(logits, None if targets is None else targets[s])
            (g,) = torch.autograd.grad(scores.sum(), xi)
        count = max(count, mode.count)
        grads[s], tg_all[s] = g, tg
    return grads, tg_all, count


def guided_gradients(model: Model, t: torch.Tensor, targets: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Guided-backprop gradients for all of ``t`` (chunked), the targets, and the ReLUs replaced."""
    grads, tg_all, count = rule_gradients(model, t, targets, guided_relu)
    if count == 0:
        warnings.warn(f"{model.name}: no ReLU call was seen in the forward pass, so guided backprop equals the "
                      "plain gradient (only ReLU has a guided rule; clamp, LeakyReLU, GELU, ... are unchanged)",
                      stacklevel=4)
    return grads, tg_all, count


@register("guided_backprop")
class GuidedBackprop(Explainer):
    """Guided backpropagation (Springenberg et al., 2015): the gradient of the target score where
    every ReLU's backward pass lets through only positive gradients at positive inputs.

    Works for ``nn.ReLU`` modules, functional ``relu`` calls in torch models, and Keras models
    whose ReLUs are fused into Conv/Dense layers (``activation='relu'``): every ReLU call is
    intercepted with a ``torch.overrides.TorchFunctionMode``; nothing in the model is changed.
    ``extras['relus_replaced']`` counts the ReLU calls per forward pass (0 means the map is the
    plain gradient, and a warning says so).

    Parameters
    ----------
    absolute : bool
        Return ``|map|``.
    """

    name = "guided_backprop"
    resolves_own_targets = True

    def __init__(self, absolute: bool = False) -> None:
        self.absolute = absolute

    def _compute(self, model, t, targets):
        g, tg, count = guided_gradients(model, t, targets)
        return (g.abs() if self.absolute else g), tg.cpu().numpy(), {"relus_replaced": int(count)}
