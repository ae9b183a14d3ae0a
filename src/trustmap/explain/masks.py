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
#: the objective's score of the target class: the log-odds ``z_t − logsumexp(z_others)`` (a contrastive
#: logit, like TorchRay's contrastive reward: blind to evidence all classes share and not saturating),
#: log-softmax (the cross-entropy Dynamask minimises; saturates near probability 1), the pre-softmax
#: logit (TorchRay's simple reward; rewards shared evidence too), or the probability
MASK_SCORES = ("log_odds", "log_prob", "logit", "prob")


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
    if score == "log_odds":  # z_t - logsumexp(z_others): contrastive, does not saturate
        zt = logits.gather(1, tg.view(-1, 1)).view(-1)
        others = logits.scatter(1, tg.view(-1, 1), float("-inf"))
        return zt - torch.logsumexp(others, 1)
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

    def _objective(self, model, x, m, b, tg):
        """What the mask maximises: the target's score with only the mask kept (preservation), minus
        it with the mask removed (deletion)."""
        if self.game == "preservation":
            return _score(model, self._perturb(x, m, b), tg, self.score)
        return -_score(model, self._perturb(x, 1 - m, b), tg, self.score)

    #: initial value of the mask's parameters
    _init = 0.0

    def _optimizer(self, p):
        # eps: gradients below ~1e-6 (a saturated score) move the mask little, so float noise between
        # batch compositions cannot flip Adam's normalised steps
        return torch.optim.Adam([p], lr=float(self.lr), eps=1e-6)

    def _project(self, p):
        pass

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
            # an area is a fraction of the positions: a mask per channel keeps area × positions entries in
            # all (a fraction area / C of its entries), as many as a mask shared by the channels would
            frac = 1.0 / t.shape[1] if self._mask_shape(t)[0] == t.shape[1] > 1 else 1.0
            self._row_areas = torch.as_tensor([a * frac for a in areas] * (s.stop - s.start), dtype=torch.float64,
                                              device=t.device)
            p = torch.full((len(x), *self._mask_shape(t)), self._init, dtype=t.dtype, device=t.device,
                           requires_grad=True)
            opt = self._optimizer(p)
            with torch.enable_grad():
                for it in range(int(self.n_iter)):
                    m = self._mask(p, x)
                    loss = (-self._objective(model, x, m, b, tg) + self._penalty(m, it)).sum()
                    (g,) = torch.autograd.grad(loss, p)
                    opt.zero_grad(set_to_none=True)
                    p.grad = g
                    opt.step()
                    self._project(p)
            with torch.no_grad():
                m = self._mask(p, x)
                obj = self._objective(model, x, m, b, tg).double().view(-1, n_a)
                final[s] = -obj if self.game == "deletion" else obj  # deletion: the deleted input's score
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
    channel of a 2D input unless ``per_channel``.

    Parameters
    ----------
    area : float or list of floats
        The fraction of the input's positions the mask should cover (a per-channel mask: that many
        entries over all channels). Several areas (the default): one mask per area
        (optimised together) and the map is their mean, so the core that even the smallest area keeps
        ranks highest and the map has no plateau of ties (TorchRay sums the masks of several areas the
        same way). A single area gives a mask that is ~1 on that area.
    game : 'preservation' | 'deletion'
    n_iter, lr : optimisation steps and Adam learning rate.
    step : int, optional
        Positions per mask cell along each axis (default: an axis's length / 32, at least 3, as TorchRay's 7 for 224: a one-position grid has no
        smoothness and keeps isolated entries).
    regul : float
        λ of the area penalty (TorchRay: 300).
    per_channel : bool or 'auto'
        One mask per channel instead of one shared by the channels. ``'auto'`` (the default): per channel
        for multichannel 1D inputs (the leads of a time series are separate features, as Dynamask's
        per-feature masks; a shared mask ties the channels and cannot say which lead matters), shared
        for 2D inputs (an image's colour channels are one pixel, as in Fong et al.). A per-channel mask
        of area ``a`` keeps ``a × positions`` entries over all channels (as many as a shared mask).
    score : 'log_odds' | 'log_prob' | 'logit' | 'prob'
        The target score that is preserved / destroyed (``MASK_SCORES``). The default log-odds ignores
        evidence all classes share (a distractor: with the plain logit the mask keeps the distractor of
        the synthetic 2D task) and keeps a gradient when the model is confident (the log-probability
        saturates near probability 1).

    ``extras``: ``masked_score`` (the score of the input kept / deleted by the final mask; one column per
    area when there are several), ``areas``.
    """

    name = "extremal_mask"

    def __init__(self, area: float | list[float] = (0.025, 0.05, 0.1), game: str = "preservation", n_iter: int = 200,
                 lr: float = 0.1,
                 step: int | None = None, regul: float = 300.0, per_channel: bool | str = "auto", baseline="blur",
                 blur_sigma: float = 0.1, score: str = "log_odds", seed: int = 0) -> None:
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
        if self.per_channel != "auto":
            check_choice(self.per_channel, (True, False, "auto"), "per_channel")
        check_baseline_param(self.baseline)
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    def _base(self, t):
        return resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))

    def _mask_shape(self, t):
        sp = t.shape[2:]
        cells = tuple(max(1, math.ceil(s / (int(self.step) if self.step else min(s, max(3, s // 32))))) for s in sp)
        per = (t.ndim == 3 and t.shape[1] > 1) if self.per_channel == "auto" else bool(self.per_channel)
        return (t.shape[1] if per else 1, *cells)

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
    """Dynamic masks (Crabbé & van der Schaar, 2021; tint's ``Dynamask``): a mask per channel and
    position, optimised as in the paper's code: the mask itself (initialised at 0.5, clamped to
    [0, 1] after each step) by SGD with momentum. Where the mask is 0 the input fades to its mean over
    the positions (``perturbation='fade'``, Dynamask's ``FadeMovingAverage``) or is blurred in place
    with a Gaussian of standard deviation ``sigma_max`` (``'blur'``: ``x̃[t] = Σ_t' x[t'] g(t − t';
    σ_max·(1 + ε − m[t]))``; on 2D along each axis in turn; slow, a T×T kernel per entry). The
    objective is the target's score of the perturbed input (preserved or deleted), the area penalty
    with a weight that grows exponentially from ``size_reg`` to ``size_reg × dilation`` over the
    iterations (Dynamask's schedule), and ``time_reg`` times the total variation along the spatial
    axes, counted with zeros beyond both ends (a kept block costs its two edges wherever it lies;
    otherwise blocks at the input's border cost half, and the area the score does not need gathers
    there). All samples of a chunk are optimised together (the update is elementwise, so each sample
    gets the mask it would get alone).

    Parameters
    ----------
    area : float or list of floats
        The fraction of the positions the mask keeps, ``area × positions`` entries over all channels
        (several: the mean of their masks, so the core the smallest area keeps ranks highest).
    game : 'preservation' | 'deletion'
    n_iter, lr : optimisation steps and learning rate.
    optimizer : 'sgd' | 'adam'
        ``'sgd'`` (the paper's: SGD with ``momentum`` on the clamped mask) or ``'adam'`` (Adam on the
        logits of a sigmoid mask; its sign-normalised steps move every entry with a steady gradient
        at the same speed, so weak and strong evidence saturate alike: pointing game on the 12-channel
        task 0.93 against 0.97 with SGD).
    perturbation : 'fade' | 'blur'
    sigma_max : float
        Blur of a fully masked entry, in positions (``perturbation='blur'``).
    size_reg, dilation : float
        Start and growth factor of the area-penalty weight.
    time_reg : float
        Weight of the mask's total variation (smoothness over time; Dynamask's λ_c). Without it the
        per-entry mask may keep isolated entries of evidence all classes share (pointing game on the
        ``synthetic-distractor`` task: 0.88 with 0, 1.00 with 1).
    score : 'log_odds' | 'log_prob' | 'logit' | 'prob'
        As for ``extremal_mask``; the default is Dynamask's cross-entropy (log-probability). It
        saturates where the model is certain (probability 1 in float32, as the 2D synthetic task's
        CNN): the score then has no gradient, the mask is shaped by the penalties alone and its
        maximum need not lie on the evidence (pointing game 0.59 on ``synthetic-2d``, where
        ``extremal_mask``, with log-odds and smooth masks, reaches 1.00).

    ``extras``: ``masked_score``, ``areas``.
    """

    name = "dynamask"

    def __init__(self, area: float | list[float] = (0.025, 0.05, 0.1), game: str = "preservation", n_iter: int = 200,
                 lr: float = 0.1,
                 perturbation: str = "fade", sigma_max: float = 2.0, size_reg: float = 0.5, dilation: float = 100.0,
                 time_reg: float = 1.0, score: str = "log_prob", optimizer: str = "sgd", momentum: float = 0.9) -> None:
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
        self.optimizer = optimizer
        self.momentum = momentum

    @property
    def _init(self):
        return 0.5 if self.optimizer == "sgd" else 0.0

    def _optimizer(self, p):
        if self.optimizer == "sgd":
            return torch.optim.SGD([p], lr=float(self.lr), momentum=float(self.momentum))
        return super()._optimizer(p)

    def _project(self, p):
        if self.optimizer == "sgd":
            with torch.no_grad():
                p.clamp_(0, 1)

    def _validate(self):
        self._validate_common()
        check_choice(self.optimizer, ("sgd", "adam"), "optimizer")
        check_number(self.momentum, "momentum", minimum=0, maximum=1)
        check_choice(self.perturbation, ("fade", "blur"), "perturbation")
        check_number(self.sigma_max, "sigma_max", minimum=0, open_min=True)
        check_number(self.size_reg, "size_reg", minimum=0)
        check_number(self.dilation, "dilation", minimum=1)
        check_number(self.time_reg, "time_reg", minimum=0)

    def _base(self, t):
        return t  # 'fade': to the mean of the input, 'blur': the variable blur of the input itself

    def _mask_shape(self, t):
        return tuple(t.shape[1:])

    def _mask(self, p, x):
        return p if self.optimizer == "sgd" else torch.sigmoid(p)

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
                # zeros beyond both ends: a kept block costs its two edges wherever it lies (without them a
                # block at the input's border costs half, and the area the score does not need goes there)
                pad = [0, 0] * (m.ndim - 1 - ax) + [1, 1]
                pen = pen + float(self.time_reg) * F.pad(m, pad).diff(dim=ax).abs().flatten(1).mean(1)
        return pen
