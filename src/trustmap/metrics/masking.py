"""The one masking convention every explanation metric in :mod:`trustmap.metrics` uses.

A metric that perturbs an input by an explanation map does it in these steps, all here:

1. **Maps and input agree.** The map has the input's shape (an :class:`~trustmap.Attribution`
   from any explainer has it; a bare array must have ``X``'s shape in ``X``'s layout). Inside,
   both are ``(N, C, *spatial)``. Maps are **per channel**: every entry ``(c, position)`` is
   ranked and masked on its own. ``channels='mean'`` averages the map over channels first and
   masks whole positions (all channels together) instead.
2. **Importance = raw map values** unless a normalization is asked for: ``normalize=None``
   ranks by the signed value (positive = evidence for the class), ``'abs'`` by magnitude,
   ``'positive'`` keeps the positive part, ``'minmax'`` rescales each sample to [0, 1]. (Ranking
   metrics do not change under per-sample positive rescaling; mass and correlation metrics do.)
3. **Ranking.** Entries are ranked by importance, most important first, within each sample
   (``budget='total'``) or within each channel (``budget='per_channel'``). Ties are broken by
   one fixed random order of the entry positions drawn from ``seed`` (the same for every
   sample), so ranks do not favour early positions and do not depend on the batch.
4. **Budget.** ``frac`` is the share of entries (of each group) kept or removed:
   ``k = max(1, round(frac * M))`` with ``M`` the entries per group; ``0 < frac <= 1``.
5. **Removal.** A removed entry takes the **baseline** value, resolved by the one baseline
   specification of :mod:`trustmap.baselines` (the explainers use the same): ``'zero'`` (the
   seeds' choice), ``'mean'`` (each sample's own per-channel mean), ``'dataset_mean'`` (each
   channel's mean over a reference set: ``reference=`` or the evaluated ``X``), ``'blur'`` (a
   Gaussian blur of the input; here ``blur_sigma`` is in positions, default 1/20 of the
   shortest spatial axis), ``'noise'``, a finite number, or an array that broadcasts to the input
   (one sample in ``X``'s layout or ``(C, *spatial)``, per channel ``(C,)``, or one per sample).
   The baseline actually used is recorded in every result (``MetricResult.masking``).
6. **Scores** are the target class's softmax probability (``output='prob'``) or pre-softmax
   score (``output='logit'``); targets are the Attribution's (the class each map explains),
   else ``target=``, else the predicted class.

Every metric takes these settings as keyword arguments (``baseline=``, ``normalize=``,
``budget=``, ``channels=``, ``seed=``, ``blur_sigma=``, ``reference=``), or a whole
:class:`Masking` as ``masking=``, which then wins over the keywords.

Perturbed inputs are built for many (sample, step) rows at once and run through the model in
chunks sized by the model's memory budget (:meth:`trustmap.Model.chunks`; on the CPU at most
1024 rows, which keep the work in cache, unless the model's ``max_batch`` is set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import _io
from ..attribution import Attribution
from ..baselines import BASELINES as _BASELINES, check_baseline, describe_baseline, resolve_baseline
from ..errors import InputError, ShapeError
from ..layout import Layout
from ..models import Model, load_model
from ..models.base import check_array

__all__ = ["Masking", "MetricResult", "Prepared", "prepare", "check_frac", "importance", "rank_entries",
           "budget_count", "baseline_like", "perturbed_scores", "target_scores", "chunks", "BASELINES", "NORMALIZATIONS",
           "BUDGETS", "OUTPUTS", "CHANNELS", "check_int", "check_positive"]

BASELINES = _BASELINES
NORMALIZATIONS = (None, "abs", "positive", "minmax")
BUDGETS = ("total", "per_channel")
OUTPUTS = ("prob", "logit")
CHANNELS = ("each", "mean")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Masking:
    """How maps become masks (see the module docstring). Validated on construction.

    Parameters
    ----------
    baseline : str, number or array, default 'zero'
        What a removed entry becomes (see :mod:`trustmap.baselines`).
    normalize : {None, 'abs', 'positive', 'minmax'}, optional
        How map values become importance (``None``: the signed value).
    budget : {'total', 'per_channel'}, default 'total'
        Rank entries over the whole sample or within each channel.
    channels : {'each', 'mean'}, default 'each'
        ``'mean'`` ranks positions by the channel-mean map and removes all channels together.
    seed : int, default 0
        Seed of the fixed random tie-break order.
    blur_sigma : float, optional
        For ``baseline='blur'``.

    Raises
    ------
    InputError
        An unknown ``normalize``, ``budget`` or ``channels``, or an invalid baseline or seed.

    Examples
    --------
    >>> from trustmap.metrics import Masking
    >>> Masking(normalize="abs")
    Masking(baseline='zero', normalize='abs', budget='total', channels='each', seed=0, blur_sigma=None)
    >>> Masking(budget="whole")
    Traceback (most recent call last):
    ...
    trustmap.errors.InputError: budget: unknown budget; ...
    """

    baseline: Any = "zero"
    normalize: str | None = None
    budget: str = "total"
    channels: str = "each"
    seed: int = 0
    blur_sigma: float | None = None

    def __post_init__(self) -> None:
        check_baseline(self.baseline, BASELINES)
        for name, allowed in (("normalize", NORMALIZATIONS), ("budget", BUDGETS), ("channels", CHANNELS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"unknown {name}", parameter=name, expected="one of " + ", ".join(map(repr, allowed)),
                                 got=getattr(self, name), fix=f"pass {name}={allowed[0]!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or int(self.seed) < 0:
            raise InputError("seed must be an int >= 0", parameter="seed", expected="an int >= 0", got=self.seed,
                             fix="seed=0")
        if self.blur_sigma is not None and (not _is_number(self.blur_sigma) or not float(self.blur_sigma) > 0):
            raise InputError("blur_sigma must be positive", parameter="blur_sigma", expected="a number > 0 or None",
                             got=self.blur_sigma, fix="e.g. blur_sigma=2.0 (None: 1/20 of the shortest axis)")

    def record(self, base_values: np.ndarray | None = None) -> dict[str, Any]:
        """A JSON record of the convention; ``base_values`` (per channel) when computed from data."""
        desc = describe_baseline(self.baseline)
        out = {"baseline": desc, "normalize": self.normalize, "budget": self.budget, "channels": self.channels,
               "seed": int(self.seed), "tie_break": "a fixed random order of positions drawn from seed"}
        if isinstance(self.baseline, str) and self.baseline == "blur":
            out["blur_sigma"] = self.blur_sigma
        if base_values is not None:
            out["baseline_values"] = np.asarray(base_values, dtype=np.float64).reshape(-1).tolist()
        return out


def make_masking(masking: Masking | None = None, **kw) -> Masking:
    """``masking`` itself when given (it wins), else a :class:`Masking` from the keywords that are not None."""
    if masking is not None:
        if not isinstance(masking, Masking):
            raise InputError("masking must be a Masking", parameter="masking", expected="trustmap.metrics.Masking",
                             got=type(masking).__name__, fix="pass Masking(baseline=..., normalize=...)")
        return masking
    return Masking(**{k: v for k, v in kw.items() if v is not None})


@dataclass
class MetricResult:
    """One metric for one set of maps: the aggregate ``value``, the ``per_sample`` values it
    aggregates, and what produced it.

    ``float(result)`` is the value. ``per_sample`` may hold NaN for samples where the metric is
    undefined (e.g. an empty ground-truth region); ``value`` ignores them.

    Parameters
    ----------
    name : str
    value : float
        The mean of the finite ``per_sample`` values.
    per_sample : ndarray (N,)
    higher_is_better : bool
    params : dict
        The metric's settings.
    masking : dict
        The masking convention's record (baseline values included).
    extras : dict
        Metric-specific arrays (curves, clean and masked scores, targets...).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import MetricResult
    >>> r = MetricResult("deletion", 0.5, np.array([0.4, 0.6]), False)
    >>> float(r), r
    (0.5, MetricResult(deletion=0.5, n=2))
    """

    name: str
    value: float
    per_sample: np.ndarray
    higher_is_better: bool
    params: dict[str, Any] = field(default_factory=dict)
    masking: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        n = int(np.isfinite(self.per_sample).sum())
        return f"MetricResult({self.name}={self.value:.4g}, n={n})"

    def to_dict(self) -> dict[str, Any]:
        return _io.to_jsonable({"name": self.name, "value": self.value, "per_sample": self.per_sample,
                                "higher_is_better": self.higher_is_better, "params": self.params,
                                "masking": self.masking, "extras": self.extras})


# ---- input validation ------------------------------------------------------------------------
@dataclass
class Prepared:
    """Model, input and maps in the internal layout, targets resolved."""

    model: Model
    x: torch.Tensor          # (N, C, *spatial), the model's dtype/device
    maps: torch.Tensor       # (N, C, *spatial), float64 on the model's device
    targets: np.ndarray      # (N,) int64
    layout: Layout
    method: str | None = None


def check_frac(frac, parameter: str = "frac") -> float:
    """``0 < frac <= 1``, else an :class:`InputError` naming ``parameter``."""
    if not _is_number(frac) or not math.isfinite(float(frac)) or not (0.0 < float(frac) <= 1.0):
        raise InputError("the share of the map must be in (0, 1]", parameter=parameter,
                         expected="a number with 0 < frac <= 1", got=frac,
                         fix="pass e.g. frac=0.3 (keep the top 30 % of the map's entries)")
    return float(frac)


def _maps_internal(maps, lay: Layout, x: torch.Tensor, X_shape: tuple, parameter: str) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """(maps (N, C, *spatial) float64, targets or None, method or None)."""
    if isinstance(maps, Attribution):
        arr = np.asarray(maps.internal(), dtype=np.float64)
        targets, method = maps.targets, maps.method
        shown = f"shape {tuple(maps.maps.shape)} (layout {maps.layout})"
    else:
        a = check_array(maps, parameter)
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
        if tuple(a.shape) != tuple(X_shape):
            raise ShapeError("maps do not have the shape of X", parameter=parameter, expected=f"shape {tuple(X_shape)}",
                             got=f"shape {tuple(a.shape)}",
                             fix="pass one map per input with the input's shape and layout (an Attribution "
                                 "from trustmap.explain has it; repeat a one-channel map over channels)")
        arr = np.asarray(lay.to_internal(a), dtype=np.float64)
        targets, method = None, None
        shown = f"shape {tuple(a.shape)}"
    if tuple(arr.shape) != tuple(x.shape):
        raise ShapeError("maps do not have the shape of X", parameter=parameter,
                         expected=f"internal shape {tuple(x.shape)} (X has shape {tuple(X_shape)})", got=shown,
                         fix="explain exactly these inputs (same samples, same shape)")
    if not np.isfinite(arr).all():
        raise ShapeError("maps contain NaN or Inf", parameter=parameter, expected="finite values",
                         got=f"{int((~np.isfinite(arr)).sum())} non-finite entries",
                         fix="replace them (np.nan_to_num) or re-run the explainer")
    return arr, targets, method


def prepare(model, X, maps, *, target=None, layout=None, parameter: str = "maps") -> Prepared:
    """Validate ``model``, ``X`` and ``maps`` and bring them to the internal layout.

    Targets: ``target`` when given; else the Attribution's targets (the class each map explains;
    entries of -1, from a localizer loaded without its model, become the prediction); else the
    model's predicted class.
    """
    m = load_model(model)
    x, lay = m.to_internal(X, layout)
    X_shape = tuple(X.shape)
    arr, a_targets, method = _maps_internal(maps, lay, x, X_shape, parameter)
    if target is not None:
        targets = m.resolve_targets(target, x)
    elif a_targets is not None and (a_targets >= 0).all():
        targets = m.resolve_targets(a_targets, x)
    else:
        pred = m.resolve_targets(None, x)
        targets = pred if a_targets is None else np.where(a_targets >= 0, a_targets, pred)
    return Prepared(m, x, torch.from_numpy(arr).to(x.device), np.asarray(targets, dtype=np.int64), lay, method)


# ---- importance, ranks, budgets -------------------------------------------------------------
def importance(maps: torch.Tensor, masking: Masking) -> torch.Tensor:
    """The values entries are ranked (and weighed) by, ``(N, C, *spatial)``; see the module docstring."""
    v = maps
    if masking.channels == "mean" and v.shape[1] > 1:
        v = v.mean(1, keepdim=True).expand_as(v)
    if masking.normalize == "abs":
        v = v.abs()
    elif masking.normalize == "positive":
        v = v.clamp_min(0)
    elif masking.normalize == "minmax":
        flat = v.reshape(len(v), -1)
        lo, hi = flat.min(1).values, flat.max(1).values
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        shape = (-1,) + (1,) * (v.ndim - 1)
        v = (v - lo.reshape(shape)) / span.reshape(shape)
    return v


def _groups(masking: Masking) -> str:
    return "per_channel" if (masking.budget == "per_channel" or masking.channels == "mean") else "total"


def _tie_order(m: int, seed: int, device) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 7919 + 104729)
    return torch.randperm(m, generator=gen).to(device)


def rank_entries(imp: torch.Tensor, masking: Masking) -> torch.Tensor:
    """Rank of every entry within its group, 0 = most important, ``(N, C, *spatial)`` int64.

    ``budget='total'``: one group per sample (``C * prod(spatial)`` entries); ``'per_channel'``
    (or ``channels='mean'``): one group per channel, with the same tie-break order in each.
    """
    n, c = imp.shape[:2]
    per_channel = _groups(masking) == "per_channel"
    flat = imp.reshape(n * c, -1) if per_channel else imp.reshape(n, -1)
    m = flat.shape[1]
    perm = _tie_order(m, masking.seed, imp.device)
    order = perm[torch.argsort(-flat[:, perm], dim=1, stable=True)]       # entry index by rank
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(m, device=imp.device).expand_as(order))
    return ranks.reshape(imp.shape)


def group_size(shape: tuple[int, ...], masking: Masking) -> int:
    """Entries per ranking group for internal ``shape`` ``(N, C, *spatial)``."""
    spatial = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return spatial if _groups(masking) == "per_channel" else spatial * int(shape[1])


def budget_count(frac: float, m: int) -> int:
    """Entries in a budget: ``max(1, round(frac * m))``."""
    return int(max(1, min(m, int(round(float(frac) * m)))))


# ---- baselines -------------------------------------------------------------------------------
def baseline_like(x: torch.Tensor, masking: Masking, reference=None, layout: Layout | None = None,
                  model: Model | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """The baseline for ``x`` (``(N, C, *spatial)``, broadcast where constant), resolved by the one
    specification :func:`trustmap.baselines.resolve_baseline`, and for ``'dataset_mean'`` the
    per-channel values (to record)."""
    b = masking.baseline
    ref = reference
    if isinstance(b, str) and b == "dataset_mean" and reference is not None:
        if isinstance(reference, torch.Tensor) and reference.ndim == x.ndim and reference.shape[1] == x.shape[1]:
            ref = reference
        elif model is not None:
            ref = model.to_internal(reference, layout, "reference")[0]
        else:
            ref = torch.as_tensor(np.asarray(reference))
    # Masking.blur_sigma is in positions (default: 1/20 of the shortest spatial axis, at least 1);
    # the resolver takes fractions of each axis length
    sigma = masking.blur_sigma or max(1.0, min(x.shape[2:]) / 20.0)
    fractions = tuple(float(sigma) / s for s in x.shape[2:])
    base = resolve_baseline(x, b, blur_sigma=fractions, seed=masking.seed, reference=ref, layout=layout)
    vals = base.reshape(-1).to(torch.float64).cpu().numpy() if isinstance(b, str) and b == "dataset_mean" else None
    return base, vals


def _pick(base: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return base[rows] if base.shape[0] > 1 else base


# ---- scoring ---------------------------------------------------------------------------------
def _scores(logits: torch.Tensor, targets: torch.Tensor, output: str) -> torch.Tensor:
    if output == "prob":
        logits = torch.softmax(logits.to(torch.float64), dim=1)
    return logits.gather(1, targets.view(-1, 1)).view(-1).to(torch.float64)


def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise InputError("unknown output", parameter="output", expected="'prob' or 'logit'", got=output,
                         fix="output='prob' (softmax probability of the target) or 'logit' (pre-softmax score)")
    return output


def check_int(v, parameter: str, minimum: int = 1, example: int = 10) -> int:
    """A whole-number parameter of a metric, ``>= minimum`` (bool refused); typed error otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise InputError(f"{parameter} must be an int >= {minimum}", parameter=parameter,
                         expected=f"an int >= {minimum}", got=v, fix=f"e.g. {parameter}={max(minimum, example)}")
    return int(v)


def check_positive(v, parameter: str) -> float:
    """A finite number ``> 0`` (bool refused); typed error otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) or not float(v) > 0:
        raise InputError(f"{parameter} must be > 0", parameter=parameter, expected="a finite number > 0", got=v,
                         fix=f"e.g. {parameter}=0.1")
    return float(v)


def chunks(model: Model, n: int, sample_numel: int) -> list[slice]:
    """Row slices for the forward passes, under the model's memory budget (:meth:`Model.chunks`)."""
    return list(model.chunks(n, sample_numel))


def target_scores(model: Model, x: torch.Tensor, targets: np.ndarray, output: str) -> np.ndarray:
    """The target's score for each row of ``x``, ``(N,)`` float64, batched under the budget."""
    tg = torch.as_tensor(targets, device=x.device)
    out = []
    with model.frozen(), torch.inference_mode():
        for s in chunks(model, len(x), x[0].numel()):
            out.append(_scores(model.logits_t(x[s]), tg[s], output))
    return torch.cat(out).cpu().numpy()


def perturbed_scores(model: Model, x: torch.Tensor, base: torch.Tensor, targets: np.ndarray, n_variants: int,
                     removed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], output: str) -> np.ndarray:
    """Scores of ``N * n_variants`` perturbed inputs, ``(N, n_variants)`` float64.

    Row ``r`` is sample ``i = r // n_variants``, variant ``j = r % n_variants``; ``removed(i, j)``
    returns the boolean mask ``(R, C, *spatial)`` of the entries replaced by the baseline.
    Rows are built and scored chunk by chunk under the model's memory budget.
    """
    n = len(x)
    total = n * n_variants
    tg = torch.as_tensor(targets, device=x.device)
    out = []
    with model.frozen(), torch.inference_mode():
        for s in chunks(model, total, x[0].numel()):
            r = torch.arange(s.start, s.stop, device=x.device)
            i, j = r // n_variants, r % n_variants
            xi = x[i]
            xp = torch.where(removed(i, j), _pick(base, i), xi)
            out.append(_scores(model.logits_t(xp), tg[i], output))
    return torch.cat(out).cpu().numpy().reshape(n, n_variants)
