"""Activation maximization: an input that maximizes a class score or one unit of a layer."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import TargetError
from .base import (Explainer, check_choice, check_number, chunk_rows, per_sample_normal, pick_scores, row_chunks,
                   sample_seeds)
from .registry import register

__all__ = ["ActivationMax", "ACTMAX_STARTS"]

ACTMAX_STARTS = ("noise", "mean", "input")


@register("activation_max")
class ActivationMax(Explainer):
    """Activation maximization (Erhan et al., 2009; Simonyan et al., 2014), regularized.

    For each sample ``x`` of the batch, gradient ascent (Adam) finds an input ``z`` of ``x``'s shape
    that maximizes the target's **pre-softmax score** (or, with ``layer``, the spatial mean of one
    channel of that layer's output) minus the penalties. ``z`` is parametrised as
    ``m + s·u`` with ``m`` the channel means and ``s`` the standard deviation of ``x``, so ``lr``,
    ``l2`` and ``tv`` do not depend on the data's units:

    ``maximize  score(z) − l2 · mean(u²) − tv · mean(|Δu|)``   (``Δ``: neighbour differences along each
    spatial axis), with ``z`` kept within ``x``'s value range when ``clip``.

    The maps are the optimized inputs ``z`` (input-shaped); ``extras['score']`` holds the final
    objective score and ``extras['start_score']`` the score at the start.

    Parameters
    ----------
    layer : str, optional
        Maximize a unit (channel) of this layer instead of a class; ``target`` is then the channel
        index (``None``: each sample's most active channel).
    n_steps, lr : int, float
        Adam steps and step size (in units of the sample's standard deviation).
    l2, tv : float
        Weights of the L2 and total-variation penalties.
    start : 'noise' | 'mean' | 'input'
        ``mean``: each channel flat at its mean; ``noise``: that plus 0.1·s Gaussian noise drawn from
        ``seed`` and the sample's values; ``input``: ``x`` itself (what would make this input more
        like the target).
    clip : bool
        Keep ``z`` within ``[min(x), max(x)]`` of its sample.
    """

    name = "activation_max"
    synthesizes_inputs = True
    stochastic = True

    def __init__(self, layer: str | None = None, n_steps: int = 100, lr: float = 0.1, l2: float = 0.01,
                 tv: float = 0.05, start: str = "noise", clip: bool = True, seed: int = 0) -> None:
        self.layer = layer
        self.n_steps = n_steps
        self.lr = lr
        self.l2 = l2
        self.tv = tv
        self.start = start
        self.clip = clip
        self.seed = seed

    def _validate(self):
        check_number(self.n_steps, "n_steps", minimum=0, integer=True)
        check_number(self.lr, "lr", minimum=0, open_min=True)
        check_number(self.l2, "l2", minimum=0)
        check_number(self.tv, "tv", minimum=0)
        check_choice(self.start, ACTMAX_STARTS, "start")
        check_number(self.seed, "seed", integer=True)

    def _unit_scores(self, model, z):
        with model.capture(self.layer) as cap:
            logits = model.logits_t(z)
        act = cap.activation
        return act.flatten(2).mean(2) if act.ndim > 2 else act, logits

    def _targets(self, model, target, t):
        if self.layer is None:
            return super()._targets(model, target, t)
        with torch.inference_mode():
            units, _ = self._unit_scores(model, t[:1])
        k = units.shape[1]
        if target is None:
            with torch.inference_mode():
                return torch.cat([self._unit_scores(model, t[s])[0].argmax(1)
                                  for s in row_chunks(len(t), chunk_rows(model, t))])
        arr = np.asarray(target)
        if arr.dtype.kind not in "iu" or arr.size not in (1, len(t)):
            raise TargetError("with layer=, target is a channel index (or one per sample)", parameter="target",
                              expected=f"an int in 0..{k - 1}, or {len(t)} of them", got=repr(target)[:80],
                              fix="pass target=<channel index>")
        arr = np.broadcast_to(arr.reshape(-1), (len(t),)).astype(np.int64)
        if arr.min() < 0 or arr.max() >= k:
            raise TargetError("unit index out of range", parameter="target", expected=f"channels 0..{k - 1}",
                              got=int(arr.max() if arr.max() >= k else arr.min()),
                              fix=f"layer {self.layer!r} has {k} channels")
        return torch.as_tensor(arr, device=t.device)

    def _objective(self, model, z, targets):
        if self.layer is None:
            return pick_scores(model.logits_t(z), targets)[0]
        units, _ = self._unit_scores(model, z)
        return units.gather(1, targets.view(-1, 1)).view(-1)

    def _compute(self, model, t, targets):
        maps = torch.empty_like(t)
        score = torch.empty(len(t), dtype=t.dtype, device=t.device)
        start_score = torch.empty_like(score)
        for s in row_chunks(len(t), chunk_rows(model, t)):
            maps[s], score[s], start_score[s] = self._optimize(model, t[s], targets[s])
        return maps, targets.cpu().numpy(), {"score": score.cpu().numpy(), "start_score": start_score.cpu().numpy()}

    def _optimize(self, model, x, targets):
        dims = tuple(range(2, x.ndim))
        all_dims = tuple(range(1, x.ndim))
        center = x.mean(dims, keepdim=True)
        scale = x.std(all_dims, keepdim=True) if x[0].numel() > 1 else torch.ones_like(x[:, :1])
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        if self.start == "input":
            u0 = (x - center) / scale
        elif self.start == "mean":
            u0 = torch.zeros_like(x)
        else:
            seeds = sample_seeds(x, int(self.seed))
            u0 = 0.1 * per_sample_normal(seeds, np.arange(len(x)), tuple(x.shape[1:]), 1,
                                         np.zeros(len(x), dtype=int), x.dtype, x.device)
        lo = ((x.amin(all_dims, keepdim=True) - center) / scale)
        hi = ((x.amax(all_dims, keepdim=True) - center) / scale)
        u = u0.clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=float(self.lr))
        with torch.enable_grad():
            with torch.no_grad():
                first = self._objective(model, center + scale * u, targets)
            for _ in range(int(self.n_steps)):
                opt.zero_grad(set_to_none=True)
                obj = self._objective(model, center + scale * u, targets)
                per = -obj + float(self.l2) * (u * u).flatten(1).mean(1)
                if self.tv > 0:
                    for d in dims:
                        per = per + float(self.tv) * torch.diff(u, dim=d).abs().flatten(1).mean(1)
                per.sum().backward()
                opt.step()
                if self.clip:
                    with torch.no_grad():
                        u.copy_(torch.maximum(torch.minimum(u, hi), lo))
        z = (center + scale * u).detach()
        with torch.no_grad():
            final = self._objective(model, z, targets)
        return z, final.detach(), first.detach()
