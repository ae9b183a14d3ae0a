"""Per-sample refinement of the amortized masks (``Localizer.locate(X, refine=n)``).

The mask network gives every sample its mask in one forward pass (amortized: one network for all
samples). Refinement starts from each sample's own mask logits ``z = BN(g(x))`` and takes ``n``
batched gradient steps (Adam) on them, per sample, of the objective the masks are read for:
*which entries come first*. For a budget ``f`` (a fraction of the entries of a budget group) the
``k = max(1, round(f · entries))`` entries with the largest logits form the region; the input is

``'preserve'``            ``b + m ⊙ (x − b)`` (the region kept, the rest replaced by the baseline ``b``),
                          loss ``softplus(−logodds_y) = −log p_y`` (keep the prediction);
removal objectives        ``x + m ⊙ (b − x)`` (the region replaced by the baseline),
                          loss ``softplus(logodds_y) = −log(1 − p_y)`` (spoil the prediction);

with ``m`` the region's indicator in the forward pass and, for the gradient, a sigmoid of the logits
around the k-th largest (straight-through: ``m = hard + soft − soft.detach()``). Step ``i`` uses the
budget ``fractions[i mod len(fractions)]`` for every sample (no random draws: the result does not
depend on the batch or on any random stream). Several budgets make a curve: for removal the
objective averaged over budgets spread over (0, 1) is a deletion curve's area (in −log(1 − p)); at a
single budget it is the drop / increase protocol's keep-the-top-``f`` (preserve).

The loss is summed over samples and Adam works entry by entry, so every sample is refined as if alone
(up to float rounding). The classifier is frozen (evaluation mode, no parameter gradients, restored
after); the mask network is not touched. Cost per sample: ``n`` forward + backward passes of the
classifier, plus ``2 · len(fractions)`` forward passes to score the objective before and after; a
sample whose objective (the mean over the budgets, hard regions) is not lower after keeps its
amortized logits, so refinement never makes a sample worse on what it optimizes. With one budget
every step's forward pass scores the objective at the current logits, and each sample keeps its best
iterate.

The logits are refined in units of their per-sample standard deviation (``z = mean + std · u``) and
each sample's gradient is scaled to unit RMS before Adam's step, so the step size, the sigmoid's width
and Adam's eps (:data:`REFINE_LR`, :data:`REFINE_TEMPERATURE`, :data:`REFINE_EPS`) depend neither on the
network's scale nor on the classifier's confidence; the refined masks are ``δ_τ(z')`` with the same
formula as the amortized ones.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import InputError
from ..models import Model
from .baseline import REFERENCE, baseline
from .common import chunks, is_number, log_odds
from .model import MaskNet

__all__ = ["REFINE_LR", "REFINE_TEMPERATURE", "REFINE_EPS", "DEFAULT_REMOVAL_BUDGETS", "DEFAULT_PRESERVE_BUDGETS",
           "check_refine", "region", "objective", "refine_logits", "model_passes"]

#: Adam's step on the standardized logits ``u`` (chosen on a validation draw: benchmarks/seed_table_study.py)
REFINE_LR = 0.1
#: width of the sigmoid around the k-th largest standardized logit (the gradient's reach)
REFINE_TEMPERATURE = 0.5
#: Adam's eps on gradients scaled to unit RMS per sample: entries whose gradient is far below the sample's
#: typical one take proportionally small steps (plain Adam would move them a full step on rounding noise)
REFINE_EPS = 0.1
#: the budgets a removal refinement averages over when none is given: a deletion curve
DEFAULT_REMOVAL_BUDGETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.6)
#: the budgets a 'preserve' refinement averages over when none is given: an insertion curve
DEFAULT_PRESERVE_BUDGETS = (0.1, 0.2, 0.3, 0.5)


def check_refine(refine: Any, refine_budget: Any, objective: str) -> tuple[int, tuple[float, ...]]:
    """Validate ``refine`` (an int >= 0) and ``refine_budget`` (None, a fraction in (0, 1), or a non-empty
    sequence of them); return the steps and the budgets (defaults by objective)."""
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or int(refine) < 0:
        raise InputError("refine must be a number of gradient steps", parameter="refine", expected="an int >= 0",
                         got=repr(refine), fix="pass refine=0 (the amortized masks) or e.g. refine=30")
    if refine_budget is None:
        fr = DEFAULT_PRESERVE_BUDGETS if objective == "preserve" else DEFAULT_REMOVAL_BUDGETS
        return int(refine), tuple(float(f) for f in fr)
    vals = [refine_budget] if is_number(refine_budget) else refine_budget
    ok = isinstance(vals, (list, tuple, np.ndarray)) and len(vals) > 0 and all(
        is_number(v) and math.isfinite(float(v)) and 0.0 < float(v) < 1.0 for v in vals)
    if not ok:
        raise InputError("refine_budget must be a fraction of the mask's entries, or a list of them",
                         parameter="refine_budget", expected="None, a number in (0, 1) or a non-empty list of them",
                         got=repr(refine_budget), fix="e.g. refine_budget=0.3 (keep / remove the top 30 %)")
    return int(refine), tuple(float(v) for v in vals)


def _counts(fractions: Sequence[float], entries: int) -> list[int]:
    """Entries in each budget: ``max(1, round(f · entries))``, at most ``entries − 1``
    (as trustmap.metrics' ``budget_count``, one short of everything so a region has a border)."""
    return [int(max(1, min(entries - 1, round(f * entries)))) for f in fractions]


def region(u: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The top-``k`` region of each row of ``u`` ``(N, G, E)``: the hard indicator in the forward pass,
    the gradient of ``sigmoid((u − t) / temperature)`` with ``t`` halfway between the k-th and (k+1)-th
    largest entries (straight-through)."""
    top = torch.topk(u.detach(), k + 1, dim=2).values
    thr = 0.5 * (top[..., k - 1:k] + top[..., k:k + 1])
    soft = torch.sigmoid((u - thr) / temperature)
    idx = torch.topk(u.detach(), k, dim=2).indices
    hard = torch.zeros_like(u).scatter_(2, idx, 1.0)
    return hard + soft - soft.detach()


def _inputs(x: torch.Tensor, m: torch.Tensor, base: torch.Tensor | None, preserve: bool) -> torch.Tensor:
    b = torch.zeros_like(x) if base is None else base
    return b + m * (x - b) if preserve else x + m * (b - x)


def _per_sample(model: Model, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, base, preserve: bool) -> torch.Tensor:
    lo = log_odds(model.logits_t(_inputs(x, m, base, preserve)), y)
    return F.softplus(-lo) if preserve else F.softplus(lo)


def _to_mask(r: torch.Tensor, z_shape, x: torch.Tensor) -> torch.Tensor:
    m = r.reshape(z_shape)
    return m.expand(-1, x.shape[1], *m.shape[2:]) if m.shape[1] != x.shape[1] else m


def objective(net: MaskNet, model: Model, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, base,
              fractions: Sequence[float], preserve: bool) -> torch.Tensor:
    """The refinement's objective per sample (hard regions, no gradient): the mean over ``fractions`` of
    ``−log p_y`` of the input with the top region kept ('preserve') or ``−log(1 − p_y)`` with it removed."""
    n = len(z)
    u = z.reshape(n, net.groups, -1)
    out = torch.zeros(n, dtype=torch.float64, device=z.device)
    with torch.no_grad():
        for k in _counts(fractions, u.shape[2]):
            m = _to_mask(region(u, k, 1.0), z.shape, x).to(x.dtype)
            out += _per_sample(model, x, y, m, base, preserve).double()
    return out / len(fractions)


def _keep_best(best_u: torch.Tensor, best: torch.Tensor, u: torch.Tensor, value: torch.Tensor) -> None:
    """Per sample, keep ``u`` and ``value`` where ``value`` is below ``best`` (in place)."""
    lower = value < best
    best_u[lower] = u[lower]
    best[lower] = value[lower]


def model_passes(steps: int, fractions: Sequence[float]) -> dict[str, int]:
    """The classifier passes refinement costs per sample."""
    return {"forward": int(steps) + 2 * len(fractions), "backward": int(steps)}


def refine_logits(loc, model: Model, t: torch.Tensor, y: torch.Tensor, steps: int, fractions: Sequence[float]
                  ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Refined mask logits ``(N, M, *spatial)`` for inputs ``t`` (internal layout, the net's device and
    dtype) and targets ``y``, and per-sample ``before`` / ``after`` objectives and whether the refined
    logits were kept (``improved``)."""
    net = loc.net_
    preserve = loc.settings_["objective"] == "preserve"
    kind = loc.settings_["baseline"]
    kind = REFERENCE.get(kind, kind)  # 'noise': its mean (no random draws)
    stats = loc.base_stats_.to(device=t.device, dtype=t.dtype)
    zs, before, after, kept = [], [], [], []
    # a third of the inference chunk: the batch goes through the classifier forward and backward
    for s in chunks(len(t), 3 * t[0].numel()):
        with torch.inference_mode(False):  # also when the caller runs under inference mode: plain tensors
            z, info = _refine_chunk(net, model, t[s].clone(), y[s].to(t.device).clone(), stats, kind, steps,
                                    fractions, preserve)
        zs.append(z)
        before.append(info[0])
        after.append(info[1])
        kept.append(info[2])
    return torch.cat(zs), {"before": np.concatenate(before), "after": np.concatenate(after),
                           "improved": np.concatenate(kept)}


def _refine_chunk(net: MaskNet, model: Model, x: torch.Tensor, yb: torch.Tensor, stats, kind: str, steps: int,
                  fractions: Sequence[float], preserve: bool) -> tuple[torch.Tensor, tuple]:
    """One chunk of :func:`refine_logits`: refined logits and (before, after, improved) per sample."""
    from .training import mask_logits

    z0 = mask_logits(net, x).clone()  # outside inference mode: a plain tensor
    base = baseline(x, kind, stats)
    n = len(z0)
    flat = z0.reshape(n, net.groups, -1)
    mu = flat.mean(2, keepdim=True)
    sd = flat.std(2, keepdim=True).clamp_min(1e-6)
    u = ((flat - mu) / sd).detach().requires_grad_(True)
    with model.frozen():
        b0 = objective(net, model, x, yb, z0, base, fractions, preserve)
        best_u, best = u.detach().clone(), b0.clone()
        # one budget: every step's forward is the objective itself at the current logits, so the best
        # iterate of each sample is tracked for free (Adam need not end on its best point)
        track = len(fractions) == 1
        if steps > 0:
            opt = torch.optim.Adam([u], lr=REFINE_LR, eps=REFINE_EPS)
            counts = _counts(fractions, flat.shape[2])
            with torch.enable_grad():
                for i in range(int(steps)):
                    m = _to_mask(region(u, counts[i % len(counts)], REFINE_TEMPERATURE), z0.shape, x).to(x.dtype)
                    per = _per_sample(model, x, yb, m, base, preserve)
                    if track:
                        _keep_best(best_u, best, u.detach(), per.detach().double())
                    opt.zero_grad(set_to_none=True)
                    per.sum().backward()
                    g = u.grad
                    g /= g.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-30)  # unit RMS per sample
                    opt.step()
        z1 = (mu + sd * u.detach()).reshape(z0.shape)
        _keep_best(best_u, best, u.detach(), objective(net, model, x, yb, z1, base, fractions, preserve))
    better = best < b0
    shape = (-1,) + (1,) * (z0.ndim - 1)
    z = torch.where(better.reshape(shape), (mu + sd * best_u).reshape(z0.shape), z0).detach()
    return z, (b0.cpu().numpy(), torch.where(better, best, b0).cpu().numpy(), better.cpu().numpy())
