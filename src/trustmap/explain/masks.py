"""Optimised masks: extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019; TorchRay) and dynamic
masks (Crabbé & van der Schaar, ICML 2021; tint's ``Dynamask``), rank-generic and optimised for a
whole chunk of samples at once.

Every sample's loss depends only on its own mask, so optimising the sum over a chunk with Adam (an
elementwise update) is the same as optimising each sample alone: one model call per step serves the
whole chunk instead of one call per sample and step (TorchRay and tint explain one input at a time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Explainer, check_choice, check_number, chunk_rows, row_chunks
from .registry import register
from .segments import check_baseline_param, resolve_baseline

__all__ = ["ExtremalMask", "Dynamask", "area_penalty", "GAMES", "variable_blur"]

GAMES = ("preservation", "deletion")
#: the objective's score of the target class: log-softmax (the cross-entropy Dynamask minimises; blind to
#: evidence shared by all classes), the pre-softmax logit (TorchRay's reward), or the probability
MASK_SCORES = ("log_prob", "logit", "prob")


def area_penalty(m: torch.Tensor, area) -> torch.Tensor:
    """Per row, ``mean((sort(m, descending) − r)²)`` with ``r`` the template with a fraction ``area`` (a
    number, or one per row) of ones (Fong et al.'s ranking constraint): the mask should have exactly
    that area switched on."""
    flat = m.flatten(1)
    a = torch.as_tensor(area, dtype=torch.float64, device=m.device).reshape(-1)
    k = torch.round(a * flat.shape[1])
    ref = (torch.arange(flat.shape[1], device=m.device)[None] < k[:, None]).to(m.dtype)
    return ((flat.sort(1, descending=True).values - ref) ** 2).mean(1)


def _score(model, x, tg, score):
    logits = model.logits_t(x)
    if score == "prob":
        return torch.softmax(logits, 1).gather(1, tg.view(-1, 1)).view(-1)
    if score == "log_prob":
        return torch.log_softmax(logits, 1).gather(1, tg.view(-1, 1)).view(-1)
    return logits.gather(1, tg.view(-1, 1)).view(-1)


def variable_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ``x (N, C, *spatial)`` along each spatial axis in turn, with a standard deviation
    per entry (``sigma`` shaped like ``x``): entry ``t`` becomes ``Σ_t' x[t'] g(t − t'; σ[t])`` normalised
    (Dynamask's perturbation operator)."""
    out = x
    for ax in range(2, x.ndim):
        y, s = torch.movedim(out, ax, -1), torch.movedim(sigma, ax, -1)
        n = y.shape[-1]
        d = torch.arange(n, dtype=x.dtype, device=x.device)
        d2 = (d[:, None] - d[None, :]) ** 2  # (T, T')
        w = torch.exp(-d2 / (2 * s[..., None] ** 2))  # (..., T, T')
        w = w / w.sum(-1, keepdim=True)
        out = torch.movedim((w @ y[..., None])[..., 0], -1, ax)
    return out


class _MaskOptimizer(Explainer):
    resolves_own_targets = False

    def _areas(self) -> tuple[float, ...]:
        return (self.area,) if isinstance(self.area, (int, float)) else tuple(self.area)

    def _validate_common(self):
        if isinstance(self.area, (str, bytes)) or not isinstance(self.area, (int, float, list, tuple)) or \
                (isinstance(self.area, (list, tuple)) and not self.area):
            check_number(self.area, "area", minimum=0, maximum=1, open_min=True)
        for a in self._areas():
            check_number(a, "area", minimum=0, maximum=1, open_min=True)
        check_choice(self.game, GAMES, "game")
        check_number(self.n_iter, "n_iter", minimum=1, integer=True)
        check_number(self.lr, "lr", minimum=0, open_min=True)
        check_choice(self.score, MASK_SCORES, "score")

    def _mask_shape(self, t: torch.Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def _mask(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _perturb(self, x, m, base):
        raise NotImplementedError

    def _penalty(self, m: torch.Tensor, it: int) -> torch.Tensor:
        raise NotImplementedError

    def _compute(self, model, t, targets):
        base = self._base(t)
        maps = torch.empty_like(t)
        areas = self._areas()
        n_a = len(areas)
        final = torch.empty((len(t), n_a), dtype=torch.float64, device=t.device)
        for s in row_chunks(len(t), max(1, chunk_rows(model, t) // n_a)):
            # every (sample, area) pair is a row of its own
            x, b, tg = (v[s].detach().repeat_interleave(n_a, 0) for v in (t, base, targets))
            self._row_areas = torch.as_tensor(areas * (s.stop - s.start), dtype=torch.float64, device=t.device)
            p = torch.zeros((len(x), *self._mask_shape(t)), dtype=t.dtype, device=t.device, requires_grad=True)
            # eps: gradients below ~1e-6 (a saturated score) move the mask little, so float noise between
            # batch compositions cannot flip Adam's normalised steps
            opt = torch.optim.Adam([p], lr=float(self.lr), eps=1e-6)
            sign = -1.0 if self.game == "preservation" else 1.0
            with torch.enable_grad():
                for it in range(int(self.n_iter)):
                    m = self._mask(p, x)
                    keep = m if self.game == "preservation" else 1 - m
                    sc = _score(model, self._perturb(x, keep, b), tg, self.score)
                    loss = (sign * sc + self._penalty(m, it)).sum()
                    (g,) = torch.autograd.grad(loss, p)
                    opt.zero_grad(set_to_none=True)
                    p.grad = g
                    opt.step()
            with torch.no_grad():
                m = self._mask(p, x)
                keep = m if self.game == "preservation" else 1 - m
                final[s] = _score(model, self._perturb(x, keep, b), tg, self.score).double().view(-1, n_a)
                maps[s] = m.expand_as(x).reshape(-1, n_a, *t.shape[1:]).mean(1)
        extras = {"masked_score": final.cpu().numpy() if n_a > 1 else final[:, 0].cpu().numpy(),
                  "areas": [float(a) for a in areas]}
        return maps, targets.cpu().numpy(), extras


@register("extremal_mask")
class ExtremalMask(_MaskOptimizer):
    """Extremal perturbation (Fong et al., 2019): the smooth mask of a given area that best preserves
    (``game='preservation'``: only the mask kept) or destroys (``'deletion'``: the mask removed) the
    target's score.

    The mask is a coarse grid of logits (one cell every ``step`` positions per spatial axis),
    squashed by a sigmoid and upsampled linearly to the input's size (smooth by construction); the
    area is enforced with Fong et al.'s ranking penalty ``λ·mean((sort(m) − r_area)²)``. Removed parts
    take the ``baseline`` (TorchRay blurs; ``'blur'`` here, with ``blur_sigma`` of each axis). Optimised
    with Adam, all samples of a chunk at once. The map is the mask (in [0, 1]), the same on every
    channel unless ``per_channel``.

    Parameters
    ----------
    area : float or list of floats
        The fraction of the input the mask should cover. Several areas (the default): one mask per area
        (optimised together) and the map is their mean, so the core that even the smallest area keeps
        ranks highest and the map has no plateau of ties (TorchRay sums the masks of several areas the
        same way). A single area gives a mask that is ~1 on that area.
    game : 'preservation' | 'deletion'
    n_iter, lr : optimisation steps and Adam learning rate.
    step : int, optional
        Positions per mask cell along each axis (default: an axis's length / 32, at least 1).
    regul : float
        λ of the area penalty (TorchRay: 300).
    per_channel : bool
        One mask per channel (an area over all entries) instead of one shared by the channels.
    score : 'log_prob' | 'logit' | 'prob'
        The target score that is preserved / destroyed (``MASK_SCORES``): the logit (TorchRay's reward,
        the default) keeps a gradient when the model is confident; the log-probability ignores evidence
        that all classes share (a distractor) but saturates near probability 1.

    ``extras``: ``masked_score`` (the score of the input kept / deleted by the final mask; one column per
    area when there are several), ``areas``.
    """

    name = "extremal_mask"

    def __init__(self, area: float | list[float] = (0.025, 0.05, 0.1), game: str = "preservation", n_iter: int = 200,
                 lr: float = 0.1,
                 step: int | None = None, regul: float = 300.0, per_channel: bool = False, baseline="blur",
                 blur_sigma: float = 0.1, score: str = "logit", seed: int = 0) -> None:
        self.area = area
        self.game = game
        self.n_iter = n_iter
        self.lr = lr
        self.step = step
        self.regul = regul
        self.per_channel = per_channel
        self.baseline = baseline
        self.blur_sigma = blur_sigma
        self.score = score
        self.seed = seed

    def _validate(self):
        self._validate_common()
        if self.step is not None:
            check_number(self.step, "step", minimum=1, integer=True)
        check_number(self.regul, "regul", minimum=0)
        check_baseline_param(self.baseline)
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    def _base(self, t):
        return resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))

    def _mask_shape(self, t):
        sp = t.shape[2:]
        cells = tuple(max(1, math.ceil(s / (int(self.step) if self.step else max(1, s // 32)))) for s in sp)
        return (t.shape[1] if self.per_channel else 1, *cells)

    def _mask(self, p, x):
        mode = "linear" if x.ndim == 3 else "bilinear"
        return F.interpolate(torch.sigmoid(p), size=tuple(x.shape[2:]), mode=mode, align_corners=True)

    def _perturb(self, x, keep, b):
        return keep * x + (1 - keep) * b

    def _penalty(self, m, it):
        # the weight grows from regul / 1000 to regul: the score shapes the mask first, the area follows
        n = max(1, int(self.n_iter) - 1)
        return float(self.regul) * math.exp(math.log(1000.0) * (it / n - 1.0)) * area_penalty(m, self._row_areas)


@register("dynamask")
class Dynamask(_MaskOptimizer):
    """Dynamic masks (Crabbé & van der Schaar, 2021): a mask per channel and position; where the mask
    is 0 the input is blurred in place with a Gaussian of standard deviation ``sigma_max`` (1 where
    it is 1: kept), ``x̃[t] = Σ_t' x[t'] g(t − t'; σ_max·(1 + ε − m[t]))``. The objective is the
    target's score of the perturbed input (preserved or deleted), the area penalty with a weight that
    grows exponentially from ``size_reg`` to ``size_reg × dilation`` over the iterations (Dynamask's
    schedule), and ``time_reg`` times the total variation along the spatial axes. All samples of a
    chunk are optimised together. On 2D inputs the blur runs along each axis in turn.

    Parameters
    ----------
    area : float or list of floats
        The fraction of entries the mask keeps (several: the mean of their masks).
    game : 'preservation' | 'deletion'
    n_iter, lr : optimisation steps and Adam learning rate.
    sigma_max : float
        Blur of a fully masked entry, in positions.
    size_reg, dilation : float
        Start and growth factor of the area-penalty weight.
    time_reg : float
        Weight of the mask's total variation (smoothness over time).
    score : 'log_prob' | 'logit' | 'prob'
        As for ``extremal_mask``.

    ``extras``: ``masked_score``, ``areas``.
    """

    name = "dynamask"

    def __init__(self, area: float | list[float] = (0.025, 0.05, 0.1), game: str = "preservation", n_iter: int = 200,
                 lr: float = 0.1,
                 perturbation: str = "fade", sigma_max: float = 2.0, size_reg: float = 0.5, dilation: float = 100.0,
                 time_reg: float = 0.0, score: str = "log_prob") -> None:
        self.area = area
        self.game = game
        self.n_iter = n_iter
        self.lr = lr
        self.perturbation = perturbation
        self.sigma_max = sigma_max
        self.size_reg = size_reg
        self.dilation = dilation
        self.time_reg = time_reg
        self.score = score

    def _validate(self):
        self._validate_common()
        check_choice(self.perturbation, ("fade", "blur"), "perturbation")
        check_number(self.sigma_max, "sigma_max", minimum=0, open_min=True)
        check_number(self.size_reg, "size_reg", minimum=0)
        check_number(self.dilation, "dilation", minimum=1)
        check_number(self.time_reg, "time_reg", minimum=0)

    def _base(self, t):
        return t  # the perturbation is the variable blur of the input itself

    def _mask_shape(self, t):
        return tuple(t.shape[1:])

    def _mask(self, p, x):
        return torch.sigmoid(p)

    def _perturb(self, x, keep, b):
        if self.perturbation == "fade":
            return keep * x + (1 - keep) * x.mean(tuple(range(2, x.ndim)), keepdim=True)
        return variable_blur(x, float(self.sigma_max) * (1.0 + 1e-4 - keep))

    def _penalty(self, m, it):
        n = max(1, int(self.n_iter) - 1)
        w = float(self.size_reg) * math.exp(it * math.log(float(self.dilation)) / n)
        pen = w * area_penalty(m, self._row_areas)
        if float(self.time_reg) > 0:
            for ax in range(2, m.ndim):
                pen = pen + float(self.time_reg) * m.diff(dim=ax).abs().flatten(1).mean(1)
        return pen
