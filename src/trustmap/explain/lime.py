"""Surrogate-model explainers on interpretable features: LIME and KernelSHAP.

Both switch features (segments, superpixels, a caller's labels; see
:mod:`trustmap.explain.segments`) on and off, score the perturbed inputs and fit a weighted linear
model per sample. The work is batched across samples: the perturbations of many samples form one
list of rows, every model call takes a chunk of rows bounded by the model's memory budget, and the
weighted least-squares / ridge problems of a group of samples are solved at once
(``torch.linalg`` on ``(B, F, F)`` systems, float64). Each sample's random draws come from
``seed`` and the sample's own values (:func:`~trustmap.explain.base.sample_seeds`), so a sample
gets the same result alone or in a batch, on every run.

Forward rows per sample: at most ``n_samples`` (the unperturbed input counts as one; KernelSHAP's
all-off input as another); exactly ``n_samples`` without ``tol`` (KernelSHAP: one fewer when the
sampled coalitions would be odd, as they come in pairs; fewer when it enumerates). With ``tol``
the draws come in rounds: after each round the samples whose coefficients are not yet within
``tol`` (by their standard errors) get the next round, still batched across samples. Every
coefficient comes with a standard error (``extras['coefficient_stderr']``, and spread over the
input like the map in ``extras['stderr']``): the jackknife over the random draws (iid rows for
LIME, complementary pairs for KernelSHAP; :func:`trustmap.explain.shapley.lstsq_with_cov`), i.e.
the spread of the coefficients over repeated runs with other seeds at the same ``n_samples``. For
LIME with ``alpha > 0`` the ridge penalty's shrinkage changes with ``n_samples`` and is not part
of it. KernelSHAP on probabilities adds a control variate built from the same rows' logits (no extra
model rows; ``control=``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..layout import as_layout
from .base import Explainer, check_choice, check_number, chunk_rows, pick_scores, row_chunks, sample_seeds
from .shapley import (CONTROL_MAX_CLASSES, CONTROL_MAX_FEATURES, KernelPlan, draw_pairs, enumerate_coalitions,
                      lstsq_with_cov, shapley_kernel_weights, softmax_surrogate, tol_schedule, tol_z,
                      weighted_normal_equations)
from .registry import register
from .segments import (SCORES, SEGMENTATIONS, check_baseline_param, full_scores, progress_bar, resolve_baseline,
                       scores_of, segment)

__all__ = ["Lime", "KernelShap", "weighted_lstsq", "feature_adjacency", "SPREADS"]

SPREADS = ("copy", "split")
CONTROLS = ("auto", "none")
#: float64 entries of the design matrices of one group of samples solved together (~8 MiB)
GROUP_ELEMENTS = 2 ** 20


def weighted_lstsq(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 0.0, intercept: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched weighted ridge / least squares.

    Minimizes ``Σ_s w[b,s] (y[b,s] − c[b] − X[b,s]·β[b])² + alpha |β[b]|²`` for every ``b`` (the
    intercept ``c`` unpenalized, as scikit-learn's ``Ridge(alpha).fit(X, y, sample_weight=w)``).
    ``X`` is ``(B, S, F)``, ``y`` and ``w`` ``(B, S)``. Rank-deficient systems get the minimum-norm
    solution (pseudo-inverse). Returns ``β (B, F)`` and ``c (B,)`` (zeros without intercept).
    """
    X, w, Xc, yc, wXc, A, xm, ym = weighted_normal_equations(X, y, w, alpha, intercept)
    rhs = (wXc.transpose(1, 2) @ yc[..., None])[..., 0]
    if alpha > 0:  # positive definite: a Cholesky solve (several times faster than a pseudo-inverse)
        L, info = torch.linalg.cholesky_ex(A)
        ok = bool((info == 0).all())
    if alpha > 0 and ok:
        beta = torch.cholesky_solve(rhs[..., None], L)[..., 0]
    else:
        beta = (torch.linalg.pinv(A, hermitian=True) @ rhs[..., None])[..., 0]
    if intercept:
        c = ym[:, 0] - (xm * beta).sum(1)
    else:
        c = torch.zeros(len(X), dtype=X.dtype, device=X.device)
    return beta, c


def logits_of(model, t: torch.Tensor) -> torch.Tensor:
    """All classes' logits of ``t`` ``(N, K)``, in chunks, without gradients."""
    out = None
    with torch.inference_mode():
        for s in row_chunks(len(t), chunk_rows(model, t)):
            lg = model.logits_t(t[s])
            if out is None:
                out = torch.empty((len(t), lg.shape[1]), dtype=lg.dtype, device=t.device)
            out[s] = lg
    return out


def feature_adjacency(labels: torch.Tensor, f: int) -> torch.Tensor:
    """Which features touch: ``(G, f, f)`` bool, true where two features' entries are neighbours along some
    axis of the samples' feature labels ``(G, C, *spatial)`` (the channel axis included: per-channel
    features of one segment in neighbouring channels touch)."""
    g = labels.shape[0]
    adj = torch.zeros((g, f * f), dtype=torch.uint8, device=labels.device)
    for d in range(1, labels.dim()):
        n_d = labels.shape[d]
        if n_d > 1:
            a = labels.narrow(d, 0, n_d - 1).reshape(g, -1)
            b = labels.narrow(d, 1, n_d - 1).reshape(g, -1)
            adj.scatter_(1, a * f + b, 1)
    adj = adj.view(g, f, f) > 0
    return (adj | adj.transpose(1, 2)) & ~torch.eye(f, dtype=torch.bool, device=labels.device)


class _Surrogate(Explainer):
    """Shared plan of LIME and KernelSHAP: segmentation, per-sample draws in rounds, batched scoring,
    batched solve with standard errors, and the ``tol`` stopping rule."""

    needs_gradients = False
    resolves_own_targets = True
    needs_baseline_score = False
    #: model rows per sample besides the drawn ones (LIME: the input; KernelSHAP: input and baseline)
    fixed_evals = 1

    # ---- configuration shared by both -------------------------------------------------------
    def _validate_common(self):
        seg = self.segmentation
        if isinstance(seg, str):
            check_choice(seg, SEGMENTATIONS, "segmentation", "pass segmentation='auto' or an integer label array")
        elif seg is None:
            raise InputError("invalid segmentation", parameter="segmentation",
                             expected="one of " + ", ".join(SEGMENTATIONS) + " or an integer label array",
                             got=None, fix="pass segmentation='auto'")
        if self.segment_params is not None and not isinstance(self.segment_params, dict):
            raise InputError("segment_params must be a dict", parameter="segment_params",
                             expected="a dict of scikit-image arguments", got=type(self.segment_params).__name__,
                             fix="e.g. segment_params={'n_segments': 30}")
        if self.n_samples is not None or self.name == "lime":
            check_number(self.n_samples, "n_samples", minimum=2, integer=True)
        if self.tol is not None:
            check_number(self.tol, "tol", minimum=0, open_min=True)
        check_baseline_param(self.baseline)
        check_choice(self.score, SCORES, "score")
        check_choice(self.spread, SPREADS, "spread")
        check_number(self.blur_sigma, "blur_sigma", minimum=0, open_min=True)
        check_number(self.seed, "seed", integer=True)

    # ---- per method ---------------------------------------------------------------------
    def _plan(self, n_features: int):
        """The design of samples with ``n_features`` features: an object with ``schedule``, the
        cumulative number of drawn rows after each round (one round without ``tol``)."""
        raise NotImplementedError

    def _draw(self, rng: np.random.Generator, plan, start: int, stop: int) -> np.ndarray:
        """Drawn rows ``start:stop`` (0/1 int8, ``(stop − start, F)``) of a sample's sequence."""
        raise NotImplementedError

    def _solve(self, Z, Y, fx, fb, plan, aux=None) -> dict[str, torch.Tensor]:
        """``'coefficients' (G, F)``, ``'stderr' (G, F)`` and other per-sample extras (``aux``: the
        all-class logits of the rows, the input and the baseline, when :meth:`_control_features`
        asks for them)."""
        raise NotImplementedError

    def _control_features(self, f: int) -> bool:
        """Whether samples with ``f`` features keep the all-class logits of their rows (for a
        control variate); never by default."""
        return False

    def _check_features(self, n_features: np.ndarray) -> None:
        pass

    def _switch(self, plan, m: int, se: torch.Tensor, limit: float, Z: torch.Tensor) -> torch.Tensor:
        """Which samples (after ``m`` drawn rows ``Z``, standard errors ``se``) finish by enumeration instead
        (:meth:`_finish_rows`, :meth:`_solve_finish`); none by default."""
        return torch.zeros(len(se), dtype=torch.bool, device=se.device)

    # ---- the shared plan ---------------------------------------------------------------------
    def _explain(self, model, x, target, layout):
        a = super()._explain(model, x, target, layout)
        if "stderr" in a.extras:  # map-shaped: the caller's layout, like the maps
            a.extras["stderr"] = np.ascontiguousarray(as_layout(a.layout).from_internal(a.extras["stderr"]))
        return a

    def _compute(self, model, t, targets):
        n = len(t)
        seg = segment(t, self.segmentation, self.segment_size, bool(self.per_channel), self.segment_params)
        self._check_features(seg.n_features)
        base = resolve_baseline(t, self.baseline, blur_sigma=float(self.blur_sigma), seed=int(self.seed))
        f_all = np.unique(seg.n_features)
        want_logits = any(self._control_features(int(f)) for f in f_all) and self.needs_baseline_score
        lx = lb = None
        if want_logits:  # the same rows as full_scores, with all classes' logits kept
            lx, lb = logits_of(model, t), logits_of(model, base)
            if not 2 <= lx.shape[1] <= CONTROL_MAX_CLASSES:
                want_logits, lx, lb = False, None, None
        if lx is not None:
            fx, tg = pick_scores(torch.softmax(lx, 1), targets)
            fb = pick_scores(torch.softmax(lb, 1), tg)[0]
            fx, fb = fx.double(), fb.double()
            lx, lb = lx.double(), lb.double()
        else:
            fx, tg = full_scores(model, t, targets, self.score)
            fb = full_scores(model, base, tg, self.score)[0] if self.needs_baseline_score else None
        seeds = sample_seeds(t, int(self.seed))
        tol = None if self.tol is None else float(self.tol)
        f_max = int(seg.n_features.max())
        coef_all = torch.full((n, f_max), float("nan"), dtype=torch.float64, device=t.device)
        se_all = torch.full((n, f_max), float("nan"), dtype=torch.float64, device=t.device)
        n_evals = np.zeros(n, dtype=np.int64)
        extras_all: dict[str, torch.Tensor] = {}
        flat_t, flat_b = t.reshape(n, -1), base.reshape(n, -1)
        rows_per_call = chunk_rows(model, t)
        plans, groups = {}, []
        for f in f_all:
            idx = np.nonzero(seg.n_features == f)[0]
            plans[int(f)] = pl = self._plan(int(f))
            m = pl.schedule[-1]
            g = int(max(1, min(len(idx), GROUP_ELEMENTS // max(1, (m + 2) * (int(f) + 2)))))
            groups += [(int(f), idx[i:i + g]) for i in range(0, len(idx), g)]
        bar = progress_bar(bool(self.progress), sum(plans[f].schedule[-1] * len(ix) for f, ix in groups), self.name)
        def score_flat(s_rows: torch.Tensor, z_rows: torch.Tensor, keep_logits: bool = False):
            """Scores of the coalitions ``z_rows (r, f)`` of the samples ``s_rows (r,)``, contiguous slices
            per model call; with ``keep_logits`` also the rows' logits ``(r, K)`` (else None)."""
            y_rows = torch.empty(len(z_rows), dtype=torch.float64, device=t.device)
            Ln = torch.empty((len(z_rows), lx.shape[1]), dtype=torch.float64, device=t.device) if keep_logits else None
            with torch.inference_mode():
                for rows in row_chunks(len(z_rows), rows_per_call):
                    si = s_rows[rows]
                    on = torch.gather(z_rows[rows], 1, seg.rows(si)) > 0.5  # (rows, numel)
                    xr = torch.where(on, flat_t[si], flat_b[si]).view(len(si), *t.shape[1:])
                    if keep_logits:
                        lg = model.logits_t(xr)
                        y_rows[rows] = pick_scores(torch.softmax(lg, 1), tg[si])[0].double()
                        Ln[rows] = lg.double()
                    else:
                        y_rows[rows] = scores_of(model, xr, tg[si], self.score)[0]
                    bar.update(len(si))
            return y_rows, Ln

        def score_rows(idx_t: torch.Tensor, Zn: torch.Tensor, keep_logits: bool = False):
            """Scores of the coalitions ``Zn (G, r, f)`` of the samples ``idx_t``: one list of rows in order
            (sample, draw); with ``keep_logits`` also the rows' logits ``(G, r, K)`` (else None)."""
            g_, r_, f_ = Zn.shape
            y_rows, Ln = score_flat(idx_t.repeat_interleave(r_), Zn.reshape(-1, f_), keep_logits)
            return y_rows.view(g_, r_), None if Ln is None else Ln.view(g_, r_, -1)

        def store(idx_t: torch.Tensor, out: dict, f: int) -> torch.Tensor:
            coef_all[idx_t, :f] = out.pop("coefficients")
            se = out.pop("stderr")
            se_all[idx_t, :f] = se
            for k, v in out.items():
                if k not in extras_all:
                    extras_all[k] = torch.empty(n, dtype=v.dtype, device=t.device)
                extras_all[k][idx_t] = v
            return se

        try:
            for f, idx in groups:
                pl = plans[f]
                cv = want_logits and self._control_features(f)
                rngs = [np.random.default_rng(seeds[i]) for i in idx]
                active = np.arange(len(idx))  # positions in idx still sampling
                Z = torch.zeros((len(idx), 0, f), dtype=torch.float32, device=t.device)
                Y = torch.zeros((len(idx), 0), dtype=torch.float64, device=t.device)
                Lg = torch.zeros((len(idx), 0, lx.shape[1]), dtype=torch.float64, device=t.device) if cv else None
                prev, finish = 0, []
                for m in pl.schedule:
                    Zn = torch.as_tensor(np.stack([self._draw(rngs[a], pl, prev, m) for a in active]).reshape(
                        len(active), m - prev, f), dtype=torch.float32, device=t.device)
                    idx_t = torch.as_tensor(idx[active], device=t.device)
                    Yn, Ln = score_rows(idx_t, Zn, cv)
                    Z, Y = torch.cat([Z, Zn], 1), torch.cat([Y, Yn], 1)
                    aux = None
                    if cv:
                        Lg = torch.cat([Lg, Ln], 1)
                        aux = {"logits": Lg, "lx": lx[idx_t], "lb": lb[idx_t], "targets": tg[idx_t],
                               "adjacent": feature_adjacency(seg.rows(idx_t).view(len(idx_t), *t.shape[1:]), f)}
                    se = store(idx_t, self._solve(Z, Y, fx[idx_t], None if fb is None else fb[idx_t], pl, aux), f)
                    n_evals[idx[active]] = m + self.fixed_evals
                    if tol is None:
                        break
                    limit = tol / tol_z(f)
                    keep = ~(se.max(1).values <= limit)  # NaN SE: not converged
                    # samples better finished by enumerating what is left than by sampling on
                    sw = keep & self._switch(pl, m, se, limit, Z)
                    if bool(sw.any()):
                        finish.append((active[sw.cpu().numpy()], Z[sw], Y[sw], m))
                    keep = keep & ~sw
                    active, Z, Y = active[keep.cpu().numpy()], Z[keep], Y[keep]
                    Lg = Lg[keep] if cv else None
                    prev = m
                    if not len(active):
                        break
                for act, Zf, Yf, m in finish:
                    # every coalition left, scored only where the sample has not drawn it already
                    idx_t = torch.as_tensor(idx[act], device=t.device)
                    Zn = torch.as_tensor(self._finish_rows(pl), dtype=torch.float32, device=t.device)
                    bits = 1 << torch.arange(f, device=t.device)
                    table = torch.full((len(act), 2 ** f), float("nan"), dtype=torch.float64, device=t.device)
                    table.scatter_(1, (Zf.long() * bits).sum(-1), Yf)
                    Yn = table[:, (Zn.long() * bits).sum(-1)]  # (G, n_rest): NaN where not yet scored
                    new = torch.isnan(Yn)
                    gi, ri = torch.nonzero(new, as_tuple=True)
                    if len(gi):
                        Yn[gi, ri] = score_flat(idx_t[gi], Zn[ri])[0]
                    store(idx_t, self._solve_finish(Zf, Yf, Zn[None].expand(len(act), -1, -1), Yn, fx[idx_t],
                                                    fb[idx_t], pl), f)
                    n_evals[idx[act]] = m + new.sum(1).cpu().numpy() + self.fixed_evals
        finally:
            bar.close()
        # spread the coefficients (and their standard errors) over the input entries of each feature
        labels = seg.rows(torch.arange(n, device=t.device))
        vals = torch.gather(torch.nan_to_num(coef_all, nan=0.0), 1, labels)
        sevals = torch.gather(torch.nan_to_num(se_all, nan=0.0), 1, labels)
        if self.spread == "split":
            sizes = torch.zeros((n, f_max), dtype=torch.float64, device=t.device)
            sizes.scatter_add_(1, labels, torch.ones_like(vals))
            vals = vals / torch.gather(sizes, 1, labels)
            sevals = sevals / torch.gather(sizes, 1, labels)
        maps = vals.to(t.dtype).view_as(t)
        extras = {"coefficients": coef_all.cpu().numpy(), "coefficient_stderr": se_all.cpu().numpy(),
                  "stderr": sevals.view_as(t).cpu().numpy(), "n_evals": n_evals,
                  "n_features": seg.n_features.copy(), "score": fx.cpu().numpy()}
        if tol is not None:
            z = np.array([tol_z(int(k)) for k in seg.n_features])
            extras["converged"] = np.nan_to_num(se_all.cpu().numpy(), nan=0.0).max(1) <= tol / z
        if fb is not None:
            extras["baseline_score"] = fb.cpu().numpy()
        extras.update({k: v.cpu().numpy() for k, v in extras_all.items()})
        if seg.spatial is not None:
            extras["segments"] = seg.spatial
        return maps, tg.cpu().numpy(), extras


class _Plan:
    def __init__(self, schedule, **kw):
        self.schedule = schedule
        self.__dict__.update(kw)


#: the design of rows that hold every coalition (in any order)
_ALL = object()


_COMMON_DOC = """
    segmentation : 'auto' | 'fixed' | 'quickshift' | 'slic' | int array
        The interpretable features. ``'auto'``: ``'fixed'`` for 1D inputs, ``'quickshift'`` for 2D.
        ``'fixed'``: blocks of ``segment_size`` positions along each spatial axis (segments in 1D,
        patches in 2D). ``'quickshift'`` / ``'slic'``: scikit-image superpixels of each sample (2D;
        ``segment_params`` are passed on). An integer array: your labels, shaped like one sample
        (``(C, *spatial)``, ``(*spatial, C)`` or ``(*spatial)``) or like the batch.
    segment_size : int or tuple
        Block size for ``'fixed'`` (per spatial axis).
    per_channel : bool
        Every (channel, segment) pair is a feature of its own (maps differ per channel); ``False``
        switches all channels of a segment together.
    segment_params : dict, optional
        Extra arguments of ``skimage.segmentation.quickshift`` / ``slic`` (defaults
        ``DEFAULT_QUICKSHIFT`` / ``DEFAULT_SLIC`` in :mod:`trustmap.explain.segments`, for inputs
        scaled to [0, 1]).
    baseline : 'zero' | 'mean' | 'blur' | 'noise' | float | array
        The value of a switched-off feature (names as for ``integrated_gradients``; an array is one
        sample or the batch).
    score : 'prob' | 'logit'
        The explained score of the target class: its probability (the seed and the lime package)
        or its pre-softmax score.
    tol : float, optional
        Sample until every coefficient of a sample is within ``tol`` of its converged value (for
        KernelSHAP: the exact Shapley value) with 95 % confidence for the sample as a whole, in score
        units (probability or logit): sampling of a sample stops once ``z_F · SE ≤ tol`` for all its
        ``F`` coefficients, ``z_F = Φ⁻¹(1 − 0.025 / F)`` (Bonferroni; 2.73 for 8 features, 2.81 for
        10), checked after each round of draws (the first ``max(64, 4 F)`` draws for LIME,
        ``max(64, 2 F + 2)`` rows for KernelSHAP, then 1.5× the random draws per round). ``n_samples``
        stays the most any sample uses (KernelSHAP enumerates all coalitions instead when that is
        cheaper and fits). ``None``: exactly ``n_samples`` rows. ``extras['converged']`` says which
        samples met it (``benchmarks/bench_shapley.py`` measures how often the error is within ``tol``).
    seed : int
        Draws come from ``seed`` and each sample's values: the same alone or in a batch.
    progress : bool
        A tqdm bar on stderr counting model rows (off by default)."""


@register("lime")
class Lime(_Surrogate):
    __doc__ = """LIME (Ribeiro et al., 2016) batched across samples.

    For each sample, ``n_samples`` binary feature vectors (the first all on, the rest Bernoulli(½)
    per feature, as in ``lime_image``) are scored; a ridge regression with intercept, weighted by
    ``sqrt(exp(−d² / kernel_width²))`` with ``d`` the cosine distance to the all-on vector, gives one
    coefficient per feature. The seed's defaults: segments of 4, 300 samples, kernel width 0.25,
    ridge ``alpha=1`` (the lime package's).

    Parameters
    ----------
    n_samples : int
        Scored perturbations per sample, the unperturbed input included (model rows per sample; with
        ``tol``, the most a sample uses).
    kernel_width : float
        Width of the exponential kernel on the cosine distance.
    alpha : float
        Ridge penalty (0: weighted least squares).
    spread : 'copy' | 'split'
        How a feature's coefficient becomes map values: every entry of the feature gets it (``copy``,
        as lime and Captum do) or an equal share of it (``split``).
    """ + _COMMON_DOC + """

    ``extras``: ``coefficients`` ``(N, F)`` (NaN-padded where samples have fewer features),
    ``coefficient_stderr`` (their standard errors; inf with too few rows to estimate them),
    ``stderr`` (spread like the map, in its shape), ``n_evals`` (model rows per sample),
    ``converged`` (with ``tol``), ``intercept``, ``r2`` (weighted R² of the surrogate, lime's
    ``score``), ``local_pred`` (the surrogate at the unperturbed input), ``score``, ``n_features``
    and ``segments`` (the spatial labels).
    """

    name = "lime"
    stochastic = True

    def __init__(self, segmentation="auto", segment_size: int | tuple[int, ...] = 4, per_channel: bool = False,
                 n_samples: int = 300, kernel_width: float = 0.25, alpha: float = 1.0, baseline="zero",
                 score: str = "prob", spread: str = "copy", segment_params: dict | None = None,
                 blur_sigma: float = 0.1, seed: int = 0, progress: bool = False, tol: float | None = None) -> None:
        self.tol = tol
        self.segmentation = segmentation
        self.segment_size = segment_size
        self.per_channel = per_channel
        self.n_samples = n_samples
        self.kernel_width = kernel_width
        self.alpha = alpha
        self.baseline = baseline
        self.score = score
        self.spread = spread
        self.segment_params = segment_params
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress

    def _validate(self):
        self._validate_common()
        check_number(self.kernel_width, "kernel_width", minimum=0, open_min=True)
        check_number(self.alpha, "alpha", minimum=0)

    def _plan(self, f):
        m = int(self.n_samples) - 1
        return _Plan([m] if self.tol is None else tol_schedule(min(m, max(64, 4 * f)), m, step=1), f=f)

    def _draw(self, rng, plan, start, stop):
        return rng.integers(0, 2, size=(stop - start, plan.f), dtype=np.int8)

    def _solve(self, Z, Y, fx, fb, plan, aux=None):
        g, _, f = Z.shape
        X = torch.cat([torch.ones((g, 1, f), dtype=torch.float64, device=Z.device), Z.double()], 1)
        y = torch.cat([fx[:, None], Y], 1)
        k = X.sum(-1)
        d = torch.where(k > 0, 1.0 - torch.sqrt(k / f), torch.ones_like(k))  # cosine distance to all-on
        w = torch.sqrt(torch.exp(-(d ** 2) / float(self.kernel_width) ** 2))
        beta, c, cov = lstsq_with_cov(X, y, w, float(self.alpha), intercept=True, fixed=1, unit=1)
        pred = c[:, None] + (X * beta[:, None]).sum(-1)
        ym = (w * y).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        ss_res = (w * (y - pred) ** 2).sum(1)
        ss_tot = (w * (y - ym) ** 2).sum(1)
        r2 = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300), torch.ones_like(ss_tot))
        se = torch.diagonal(cov, dim1=1, dim2=2).clamp_min(0).sqrt()
        return {"coefficients": beta, "stderr": se, "intercept": c, "r2": r2, "local_pred": pred[:, 0]}


@register("kernelshap")
class KernelShap(_Surrogate):
    __doc__ = """KernelSHAP (Lundberg & Lee, 2017) batched across samples: Shapley values of the features.

    The smallest and largest coalitions, where the Shapley kernel puts most of its weight, are
    enumerated with their exact kernel weights while the budget would draw each of them at least
    once in expectation (the ``shap`` package's rule); the other coalition sizes are sampled from the
    kernel in complementary pairs (a size ``k`` with probability ∝ ``(F−1)/(k(F−k))``, a uniform
    subset of that size, and its complement). All are fitted by weighted least squares under the
    constraint ``Σ φ = f(x) − f(baseline)`` (efficiency holds exactly). When all ``2^F − 2``
    non-trivial coalitions fit into ``n_samples − 2`` they are enumerated, which gives the exact
    Shapley values (and fewer model rows); with ``tol``, also when a round would sample as many
    coalitions as are left. With a probability score a control variate (Goldwasser & Hooker 2023)
    takes out most of the sampling error at no extra model rows: every class's logit is fitted with a
    quadratic in the coalition from the same rows (its interactions shrunk by a ridge penalty chosen by
    generalized cross-validation, growing with the features' distance, so it works from the
    smallest budgets on), the softmax of those fits is a surrogate game whose
    Shapley values are enumerated exactly, and the estimate is ``KS(v) − c (KS(g) − φ(g))`` with the
    variance-minimizing ``c`` per sample (see :func:`trustmap.explain.shapley.softmax_surrogate`).
    See :mod:`trustmap.explain.shapley` for the design and the standard errors,
    ``benchmarks/bench_shapley.py`` for the error per model evaluation beside Captum and shap.

    Parameters
    ----------
    n_samples : int, optional
        Model rows per sample: the input, the baseline and ``n_samples − 2`` coalitions (with
        ``tol``, the most a sample uses). Must be at least the number of features + 1. Default
        (``None``): ``max(300, 2 F + 2)`` for ``F`` features.
    spread : 'copy' | 'split'
        ``split`` (default): each entry of a feature gets an equal share of its value, so the map of a
        sample sums to ``f(x) − f(baseline)``; ``copy``: every entry gets the feature's value.
    control : 'auto' | 'none' | None
        ``'auto'`` (default): the softmax control variate wherever it applies (``score='prob'``,
        3–14 features, 2–64 classes, sampled rather than enumerated; ``extras['control']`` says
        where it was used); the standard errors are those of the corrected estimate, infinite (not
        yet estimable) below ``2 (F − 1 + F (F − 1) / 2)`` coalition rows (twice the surrogate's
        coefficients), where ``tol`` uses the plain estimate and its standard error. ``'none'``
        (or None): plain paired KernelSHAP.
    """ + _COMMON_DOC + """

    ``extras``: ``coefficients`` (the Shapley values, ``(N, F)``, NaN-padded),
    ``coefficient_stderr`` (their standard errors: 0 where exact, inf where too few pairs were drawn
    to estimate them), ``stderr`` (the standard errors spread like the map, in its shape),
    ``n_evals`` (model rows per sample), ``converged`` (with ``tol``), ``score`` (f(x)),
    ``baseline_score`` (f(baseline)), ``exact`` (whether all coalitions were enumerated),
    ``control`` (whether the control variate was used),
    ``n_features``, ``segments``.
    """

    name = "kernelshap"
    stochastic = True
    needs_baseline_score = True
    fixed_evals = 2

    def __init__(self, segmentation="auto", segment_size: int | tuple[int, ...] = 4, per_channel: bool = False,
                 n_samples: int | None = None, baseline="zero", score: str = "prob", spread: str = "split",
                 segment_params: dict | None = None, blur_sigma: float = 0.1, seed: int = 0,
                 progress: bool = False, tol: float | None = None, control: str = "auto") -> None:
        self.tol = tol
        self.control = control
        self.segmentation = segmentation
        self.segment_size = segment_size
        self.per_channel = per_channel
        self.n_samples = n_samples
        self.baseline = baseline
        self.score = score
        self.spread = spread
        self.segment_params = segment_params
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress

    def _validate(self):
        self._validate_common()
        if self.control is not None:  # None (the CLI's ``control=none``) is 'none'
            check_choice(self.control, CONTROLS, "control")

    def _control_features(self, f):
        return self.control == "auto" and self.score == "prob" and 3 <= f <= CONTROL_MAX_FEATURES

    def _rows(self) -> int:
        return int(self.n_samples) if self.n_samples is not None else max(300, 2 * self._f_max + 2)

    def _check_features(self, n_features):
        f = self._f_max = int(n_features.max())
        if self._rows() < f + 1:
            raise InputError("n_samples is smaller than the number of features + 1", parameter="n_samples",
                             expected=f"at least {f + 1} (the input has up to {f} features)", got=self.n_samples,
                             fix=f"pass n_samples>={max(f + 1, 2 * f)}, or use fewer features (a larger "
                                 "segment_size)")

    def _plan(self, f):
        m = self._rows() - 2
        if f == 1:
            return _Plan([0], f=f, design=None)
        first = m if self.tol is None else min(m, max(62, 2 * f))
        design = KernelPlan(f, first)
        if design.exact:
            return _Plan([design.n_enum], f=f, design=design, m=m, n_rest=None)
        sched = tol_schedule(first, m, fixed=design.n_enum, step=2)
        n_rest = (2 ** f - 2 - design.n_enum) if f < 31 else None
        return _Plan(sched[:1] if self.tol is None else sched, f=f, design=design, m=m, n_rest=n_rest)

    def _switch(self, plan, m, se, limit, Z):
        """Enumerate the rest when it fits under ``n_samples`` and costs fewer rows than sampling on is
        predicted to (the standard error falls as 1/√draws: ``s ((max SE / limit)² − 1)`` more draws;
        the enumeration costs the coalitions not drawn yet), or when the schedule has no further round."""
        no = torch.zeros(len(se), dtype=torch.bool, device=se.device)
        d = plan.design
        if d is None or d.exact or plan.n_rest is None or m + plan.n_rest > plan.m:
            return no
        s = m - d.n_enum
        more = s * ((se.max(1).values / limit) ** 2 - 1)
        codes = (Z[:, d.n_enum:].long() << torch.arange(plan.f, device=Z.device)).sum(-1).sort(1).values
        drawn = (codes[:, 1:] != codes[:, :-1]).sum(1) + int(codes.shape[1] > 0)  # distinct coalitions drawn
        last = m == plan.schedule[-1]
        return (more >= plan.n_rest - drawn) | torch.full_like(no, last)

    def _finish_rows(self, plan):
        return enumerate_coalitions(plan.f, plan.design.sizes)

    def _solve_finish(self, Z, Y, Zn, Yn, fx, fb, plan):
        """Exact Shapley values from the enumerated strata (the first rows of ``Z``) and the rest (``Zn``)."""
        d = plan.design
        Z = torch.cat([Z[:, :d.n_enum], Zn], 1)
        Y = torch.cat([Y[:, :d.n_enum], Yn], 1)
        return self._solve(Z, Y, fx, fb, _Plan([Z.shape[1]], f=plan.f, design=_ALL))

    def _draw(self, rng, plan, start, stop):
        d = plan.design
        if d is None:
            return np.zeros((0, plan.f), dtype=np.int8)
        head = d.z_enum[start:min(stop, d.n_enum)]
        pairs = draw_pairs(rng, d, (stop - max(start, d.n_enum)) // 2)
        return np.concatenate([head, pairs])

    def _solve(self, Z, Y, fx, fb, plan, aux=None):
        g, m, f = Z.shape
        d = plan.design
        no = torch.zeros(g, dtype=torch.bool, device=Z.device)
        if d is None or m == 0:
            phi = (fx - fb)[:, None].expand(g, f).clone() / f
            return {"coefficients": phi, "stderr": torch.zeros_like(phi),
                    "exact": torch.ones(g, dtype=torch.bool, device=Z.device), "control": no}
        exact = d is _ALL or d.exact
        if exact:  # every coalition is among the rows: their kernel weights give the exact values
            w = torch.as_tensor(shapley_kernel_weights(Z[0].cpu().numpy().astype(np.int8)), dtype=torch.float64,
                                device=Z.device)
            n_fixed = Z.shape[1]
        else:
            w = torch.as_tensor(d.weights(m - d.n_enum), dtype=torch.float64, device=Z.device)
            n_fixed = d.n_enum
        # the control variate's standard errors hold (the jackknife ignores the surrogate's own fit)
        # once there are at least twice as many rows as the surrogate has coefficients; with ``tol``
        # the plain estimate and its standard error are used before that, without it the corrected
        # estimate is returned with an infinite ("not yet estimable") standard error
        se_ok = m >= 2 * (f - 1 + f * (f - 1) // 2)
        if aux is not None and not se_ok and self.tol is not None:
            aux = None
        if aux is None or exact:
            phi, se = self._kernel_fit(Z, Y, w, fx, fb, n_fixed)
            control = no
        else:  # control variate: φ = KS(v) − c (KS(g) − φ(g)), the surrogate's sampling error known exactly
            phi_g, g_rows, g_b, g_x = softmax_surrogate(Z, w, aux["logits"], aux["lx"], aux["lb"], aux["targets"],
                                                        aux.get("adjacent"))
            phi_v, se_v = self._kernel_fit(Z, Y, w, fx, fb, n_fixed)
            phi_s, se_s = self._kernel_fit(Z, g_rows, w, g_x, g_b, n_fixed)
            _, se_r = self._kernel_fit(Z, Y - g_rows, w, fx - g_x, fb - g_b, n_fixed)
            va, vb, vr = se_v ** 2, se_s ** 2, se_r ** 2
            cov = (va + vb - vr) / 2  # jackknife Cov(KS(v), KS(g)) per feature
            # one coefficient per sample (keeps Σ φ = Δ: the errors KS(g) − φ(g) sum to 0), the
            # variance-minimizing one; 1 (the plain difference) where it cannot be estimated
            c = cov.sum(1) / vb.sum(1)
            c = torch.where(torch.isfinite(c), c, torch.ones_like(c)).clamp(0.0, 2.0)
            phi = phi_v - c[:, None] * (phi_s - phi_g)
            var = va - 2 * c[:, None] * cov + c[:, None] ** 2 * vb
            var = torch.where(torch.isfinite(va) & torch.isfinite(vb), var, torch.full_like(var, float("inf")))
            se = var.clamp_min(0).sqrt() if se_ok else torch.full_like(var, float("inf"))
            control = ~no
        if exact:
            se = torch.zeros_like(phi)
        return {"coefficients": phi, "stderr": se,
                "exact": torch.full((g,), exact, dtype=torch.bool, device=Z.device), "control": control}

    @staticmethod
    def _kernel_fit(Z, Y, w, fx, fb, n_fixed):
        """Weighted least squares under ``Σ φ = fx − fb`` (the last feature eliminated); the standard
        errors from the jackknife over the pairs past the ``n_fixed`` enumerated rows."""
        delta = fx - fb
        # enumerated strata are closed under complements, and a complement's row is the negated row
        Zd = Z.double()
        X = Zd[..., :-1] - Zd[..., -1:]
        y = Y - fb[:, None] - Zd[..., -1] * delta[:, None]
        beta, _, cov = lstsq_with_cov(X, y, w, 0.0, intercept=False, fixed=n_fixed, unit=2, fixed_dirs=n_fixed // 2)
        phi = torch.cat([beta, (delta - beta.sum(1))[:, None]], 1)
        var = torch.cat([torch.diagonal(cov, dim1=1, dim2=2), cov.sum((1, 2))[:, None]], 1)
        return phi, var.clamp_min(0).sqrt()
