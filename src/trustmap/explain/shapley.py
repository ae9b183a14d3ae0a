"""Estimators behind KernelSHAP and LIME: the coalition design, batched weighted least squares with
standard errors, and the sampling schedule of the ``tol=`` stopping rule.

KernelSHAP design (what reaches a given error with the fewest model evaluations, measured in
``benchmarks/bench_shapley.py``):

* **Enumerated outer strata.** The Shapley kernel puts most of its mass on the smallest and largest
  coalitions (size ``k`` and ``F − k`` together carry ``∝ 2 (F−1) / (k (F−k))`` of it), which are
  few. Strata are taken from the outside in and enumerated with their exact kernel weights while the
  budget would, in expectation, draw each of their coalitions at least once (the rule of the ``shap``
  package's KernelExplainer). They then contribute no sampling variance at all.
* **Paired (antithetic) sampling** of the remaining strata (Covert & Lee 2021): a size from the
  kernel restricted to those strata, a uniform subset of that size, and its complement. The pair's
  errors largely cancel in the regression.
* **Efficiency built in**: the last feature is eliminated (``φ_F = Δ − Σ φ_j``), an unconstrained
  weighted regression on the other ``F − 1``.
* **Standard errors** by the delta method (the estimator is a smooth function of sample means):
  ``Cov(β) ≈ A⁻¹ S A⁻¹`` with ``A = XᵀWX`` and ``S`` the sample covariance of the pair units'
  score contributions ``Σ_{i∈pair} w_i r_i x_i`` (a cluster-robust sandwich with the CR3 (jackknife)
  small-sample correction, :func:`lstsq_with_cov`; enumerated rows are
  not random and do not enter ``S``). This is the variance estimate Covert & Lee use for the
  convergence test of KernelSHAP, without their separate unbiased estimator (which has a higher
  variance for the same evaluations).

* **Control variate** (Goldwasser & Hooker 2023; probability scores, :func:`softmax_surrogate`):
  paired KernelSHAP is exact for games whose interactions are at most pairwise, so its error comes
  from the higher-order part of ``v``, and an additive or quadratic surrogate would cancel nothing
  (checked). The softmax of quadratic fits of all the classes' logits (from the same rows: no extra
  model evaluations) has interactions of every order, like the probability; its exact Shapley
  values ``φ(g)`` are enumerated, and ``φ = KS(v) − c (KS(g) − φ(g))``, ``c`` the variance-minimizing
  coefficient of the sample (jackknife variances and covariance; efficiency is kept). The quadratic
  has more coefficients (54 per class for 10 features) than a small budget has rows, so its
  interactions are shrunk by a ridge penalty chosen by generalized cross-validation per sample and
  class, growing with the two features' distance in the feature graph (:func:`ridge_gcv`,
  :func:`graph_hops`): the control variate then works from the smallest budgets on (the softmax of
  additive logits needs only ``F − 1`` directions).

Leverage-score sampling (Musco & Witter 2024) draws sizes uniformly instead of from the kernel and
is provably accurate; with the outer strata enumerated the two differ only on the middle strata,
where the kernel and the leverage scores are nearly flat, so it was not added.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import torch

__all__ = ["KernelPlan", "kernel_plan", "draw_pairs", "lstsq_with_cov", "enumerate_coalitions", "shapley_matrix",
           "softmax_surrogate", "ridge_gcv", "graph_hops", "CONTROL_MAX_FEATURES", "CONTROL_MAX_CLASSES",
           "shapley_kernel_weights", "tol_schedule", "tol_z"]


def tol_z(n_features: int, level: float = 0.95) -> float:
    """The normal quantile that makes ``±z SE`` intervals of ``n_features`` coefficients hold together
    with probability ``level`` (Bonferroni): ``Φ⁻¹(1 − (1 − level) / (2 F))``."""
    return statistics.NormalDist().inv_cdf(1 - (1 - level) / (2 * max(1, int(n_features))))


def enumerate_coalitions(f: int, sizes=None) -> np.ndarray:
    """All coalitions of ``f`` features (0/1 int8 rows) whose size is in ``sizes`` (default: 1..f−1),
    by size, then lexicographically."""
    rows = []
    for k in sorted(range(1, f) if sizes is None else sizes):
        for c in itertools.combinations(range(f), int(k)):
            z = np.zeros(f, dtype=np.int8)
            z[list(c)] = 1
            rows.append(z)
    return np.stack(rows) if rows else np.zeros((0, f), dtype=np.int8)


def shapley_kernel_weights(z: np.ndarray) -> np.ndarray:
    """The Shapley kernel weight ``(F−1) / (C(F,k) k (F−k))`` of each coalition row (``0 < k < F``)."""
    f = z.shape[1]
    k = z.sum(1).astype(np.int64)
    lc = np.array([math.lgamma(f + 1) - math.lgamma(j + 1) - math.lgamma(f - j + 1) for j in k])
    return (f - 1) / (np.exp(lc) * k * (f - k))


class KernelPlan:
    """The coalition design of ``f`` features for a first batch of ``m`` coalitions.

    ``z_enum``/``w_enum``: the enumerated coalitions and their kernel weights; ``sizes``/``p``: the
    sampled sizes and their probabilities; ``mass``: the kernel mass of the sampled strata (each
    sampled row gets ``mass / n_sampled``); ``exact``: all coalitions are enumerated.
    """

    def __init__(self, f: int, m: int) -> None:
        self.f = f
        if f >= 2 and f < 31 and 2 ** f - 2 <= m:
            self.exact = True
            self.z_enum = enumerate_coalitions(f)
            self.sizes, self.p, self.mass = np.zeros(0, dtype=np.int64), np.zeros(0), 0.0
        else:
            self.exact = False
            strata = [(k, f - k) if k != f - k else (k,) for k in range(1, f // 2 + 1)]
            mass = {k: (f - 1) / (k * (f - k)) for k in range(1, f)}  # kernel mass of each size
            left, rest, enum = float(m), sum(mass.values()), []
            for s in strata:
                n_sub = sum(math.comb(f, k) for k in s)
                ms = sum(mass[k] for k in s)
                if left - n_sub >= 2 and left * ms / rest >= n_sub - 1e-8:  # keep >= one pair sampled
                    enum += list(s)
                    left -= n_sub
                    rest -= ms
                else:
                    break
            self.z_enum = enumerate_coalitions(f, enum) if enum else np.zeros((0, f), dtype=np.int8)
            self.sizes = np.array([k for k in range(1, f) if k not in enum], dtype=np.int64)
            self.p = np.array([mass[k] for k in self.sizes])
            self.mass = float(self.p.sum())
            self.p = self.p / self.mass
        self.w_enum = shapley_kernel_weights(self.z_enum) if len(self.z_enum) else np.zeros(0)
        self.n_enum = len(self.z_enum)

    def weights(self, n_sampled: int) -> np.ndarray:
        """Regression weights of ``n_enum + n_sampled`` rows (enumerated first)."""
        w = np.full(n_sampled, self.mass / max(n_sampled, 1))
        return np.concatenate([self.w_enum, w])


def kernel_plan(f: int, m: int) -> KernelPlan:
    return KernelPlan(int(f), int(m))


def draw_pairs(rng: np.random.Generator, plan: KernelPlan, n_pairs: int) -> np.ndarray:
    """``2 n_pairs`` coalitions from the sampled strata, each followed by its complement."""
    f = plan.f
    if n_pairs <= 0:
        return np.zeros((0, f), dtype=np.int8)
    k = rng.choice(plan.sizes, size=n_pairs, p=plan.p)
    ranks = rng.random((n_pairs, f)).argsort(1).argsort(1)
    z = (ranks < k[:, None]).astype(np.int8)
    return np.stack([z, 1 - z], 1).reshape(2 * n_pairs, f)


def weighted_normal_equations(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 0.0,
                              intercept: bool = True):
    """The centred system of the batched weighted ridge ``y ~ c + X·β`` (float64; ``w`` ``(B, S)`` or
    ``(S,)``): returns ``X, w, Xc, yc, wXc, A, xm, ym`` with ``A = Xcᵀ W Xc + alpha I`` ``(B, F, F)`` (a bmm,
    no ``(B, S, F, F)`` intermediate) and the weighted means ``xm``, ``ym`` (None without intercept)."""
    X, y = X.double(), y.double()
    w = w.double().expand(y.shape) if w.dim() == 1 else w.double()
    xm = ym = None
    if intercept:
        sw = w.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        xm = (w[:, None, :] @ X)[:, 0] / sw
        ym = (w * y).sum(1, keepdim=True) / sw
        Xc, yc = X - xm[:, None], y - ym
    else:
        Xc, yc = X, y
    wXc = Xc * w[..., None]
    A = Xc.transpose(1, 2) @ wXc
    if alpha > 0:
        A = A + alpha * torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return X, w, Xc, yc, wXc, A, xm, ym


def lstsq_with_cov(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 0.0, intercept: bool = True,
                   fixed: int = 0, unit: int = 1, fixed_dirs: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched weighted ridge / least squares with a sandwich covariance of the coefficients.

    The fit is :func:`trustmap.explain.lime.weighted_lstsq`'s (``X (B, S, F)``, ``y``/``w`` ``(B, S)``
    or ``w (S,)``). Rows ``fixed:`` are random draws in independent units of ``unit`` consecutive
    rows (1: iid rows; 2: antithetic pairs); the first ``fixed`` rows are not random. The covariance
    is the jackknife over the ``n`` units, ``(n−1)/n Σ_u (d_u − d̄)(d_u − d̄)ᵀ`` with ``d_u`` the change
    of ``β`` when unit ``u`` is left out, in closed form ``d_u = B⁻¹ X̃_uᵀ (I − H_uu)⁻¹ r̃_u``
    (``B = XcᵀWXc + αI``, ``X̃ = W^½ Xc``, ``r̃`` the weighted residuals, ``H_uu = X̃_u B⁻¹ X̃_uᵀ``): the
    cluster-robust sandwich of the delta method with the CR3 small-sample correction, which keeps
    ``±2 SE`` intervals near their nominal coverage at a few dozen units.
    Returns ``β (B, F)``, the intercept ``(B,)`` and ``Cov(β) (B, F, F)``.

    With too few residual degrees of freedom the fit nearly interpolates, the residuals vanish and
    so would the estimate: ``df = fixed_dirs + n − F − intercept`` (``fixed_dirs``: independent
    directions among the fixed rows, default ``fixed``; an antithetic unit counts once) below
    ``max(4, F / 2)`` gives an infinite covariance ("not yet estimable").
    """
    X, w, Xc, yc, wXc, A, xm, ym = weighted_normal_equations(X, y, w, alpha, intercept)
    Ainv = None
    if alpha > 0:  # positive definite: Cholesky (several times faster than a pseudo-inverse)
        L, info = torch.linalg.cholesky_ex(A)
        if bool((info == 0).all()):
            Ainv = torch.cholesky_inverse(L)
    if Ainv is None:  # rank-deficient systems: the minimum-norm solution
        Ainv = torch.linalg.pinv(A, hermitian=True)
    beta = (Ainv @ (wXc.transpose(1, 2) @ yc[..., None]))[..., 0]
    r = yc - (Xc @ beta[..., None])[..., 0]
    sw = w.clamp_min(0).sqrt()
    Xt, rt = (Xc * sw[..., None])[:, fixed:], (r * sw)[:, fixed:]
    n_units = Xt.shape[1] // unit
    p = Xt.shape[-1]
    Xt = Xt[:, :n_units * unit].reshape(len(Xt), n_units, unit, p)
    rt = rt[:, :n_units * unit].reshape(len(rt), n_units, unit)
    df = (fixed if fixed_dirs is None else fixed_dirs) + n_units - p - int(intercept)
    if n_units > 1 and df < max(4, p / 2):
        cov = torch.full_like(A, float("inf"))
    elif n_units > 1:
        # jackknife over units (CR3): d_u = A⁻¹ X̃_uᵀ (I − H_uu)⁻¹ r̃_u, the change of β without unit u
        AX = Xt @ Ainv[:, None]  # (B, n, unit, p)
        H = AX @ Xt.transpose(2, 3)  # (B, n, unit, unit)
        e = _solve_small(H, rt)
        d = (AX * e[..., None]).sum(2)  # (B, n, p)
        dc = d - d.mean(1, keepdim=True)
        cov = dc.transpose(1, 2) @ dc * ((n_units - 1) / n_units)
    else:
        cov = torch.full_like(A, float("inf") if n_units == 1 else 0.0)
    c = ym[:, 0] - (xm * beta).sum(1) if intercept else torch.zeros(len(X), dtype=X.dtype, device=X.device)
    return beta, c, cov


def _solve_small(H: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``(I − H)⁻¹ r`` for many tiny blocks ``H (..., u, u)``, ``r (..., u)``: closed forms for ``u`` = 1, 2
    (a unit with leverage 1 is left as it is: its deletion is not identifiable)."""
    u = H.shape[-1]
    tiny = 1e-12
    if u == 1:
        den = 1 - H[..., 0, 0]
        return torch.where(den.abs() > tiny, r[..., 0] / den.where(den.abs() > tiny, torch.ones_like(den)),
                           r[..., 0])[..., None]
    if u == 2:
        a, b, c, d = 1 - H[..., 0, 0], -H[..., 0, 1], -H[..., 1, 0], 1 - H[..., 1, 1]
        det = a * d - b * c
        ok = det.abs() > tiny
        det = det.where(ok, torch.ones_like(det))
        x0 = (d * r[..., 0] - b * r[..., 1]) / det
        x1 = (-c * r[..., 0] + a * r[..., 1]) / det
        return torch.where(ok[..., None], torch.stack([x0, x1], -1), r)
    eye = torch.eye(u, dtype=H.dtype, device=H.device)
    return (torch.linalg.pinv(eye - H) @ r[..., None])[..., 0]


def tol_schedule(first: int, cap: int, fixed: int = 0, growth: float = 1.5, step: int = 2) -> list[int]:
    """Cumulative random rows at the end of each round: ``first`` rows, then the random part (rows past
    ``fixed``) grows by ``growth`` each round, in multiples of ``step``, up to ``cap``."""
    def floor_step(m):
        return fixed + (m - fixed) // step * step
    out = [floor_step(min(first, cap))]
    while out[-1] < floor_step(cap):
        s = out[-1] - fixed
        nxt = floor_step(fixed + max(s + step, int(math.ceil(s * growth))))
        out.append(min(nxt, floor_step(cap)))
    return out


# ---- control variate: a softmax-of-quadratic-logits surrogate ------------------------------------

#: largest number of features for which the surrogate's Shapley values are enumerated (2^F coalitions)
CONTROL_MAX_FEATURES = 14
#: most classes the surrogate models (all-class logits are kept for every drawn row)
CONTROL_MAX_CLASSES = 64
#: ridge on the first-order coefficients of the surrogate's logits, relative to their mean weighted sum of
#: squares (only for designs that do not determine them: a complementary pair is one direction)
CONTROL_RIDGE = 1e-9
#: penalties on the interaction coefficients tried by generalized cross-validation, relative to their mean
#: weighted sum of squares (the last, 1e4, all but removes them: softmax of additive logits)
CONTROL_PENALTIES = tuple(float(10.0 ** e) for e in np.arange(-6.0, 4.01, 0.5))

#: exponents γ tried by GCV: the interaction of two features ``h`` hops apart in the feature graph
#: (neighbours: 1 hop) is penalized ``h^γ`` times the neighbours' (0: all pairs alike)
CONTROL_LOCALITY = (0.0, 8.0)

_SHAPLEY_MATRIX: dict[int, np.ndarray] = {}


def shapley_matrix(f: int) -> np.ndarray:
    """``M (f, 2^f)`` with ``φ = M v`` the Shapley values of a game ``v`` listed by coalition code
    (feature ``j`` is bit ``j``)."""
    if f not in _SHAPLEY_MATRIX:
        codes = np.arange(2 ** f)
        k = np.array([bin(c).count("1") for c in codes])
        fact = [math.factorial(i) for i in range(f + 1)]
        M = np.zeros((f, 2 ** f))
        for j in range(f):
            wo = codes[((codes >> j) & 1) == 0]
            wg = np.array([fact[s] * fact[f - s - 1] / fact[f] for s in k[wo]])
            M[j, wo | (1 << j)] += wg
            M[j, wo] -= wg
        _SHAPLEY_MATRIX[f] = M
    return _SHAPLEY_MATRIX[f]


def ridge_gcv(X: torch.Tensor, w: torch.Tensor, Y: torch.Tensor, n_free: int,
              penalties=CONTROL_PENALTIES, scales=None) -> torch.Tensor:
    """Batched weighted generalized ridge ``Y ≈ X B`` with the penalty chosen by GCV, per sample and column.

    ``X (G, m, p)``, ``w (m,)`` row weights, ``Y (G, m, K)``. The first ``n_free`` coefficients get only a
    tiny ridge (``CONTROL_RIDGE``, for rank deficiency), the others ``λ`` times their mean weighted sum
    of squares, ``λ`` from ``penalties``; for each sample and column of ``Y`` the ``λ`` with the smallest
    generalized cross-validation score ``m · RSS_w / (m − tr H)²`` (Golub, Heath & Wahba 1979; ``tr H``
    the effective number of coefficients, ``tr((XᵀWX + P)⁻¹ XᵀWX)``) is kept. ``scales``: a list of
    relative penalties of the penalized coefficients ``(G, p − n_free)``, each tried with every ``λ``
    (default: all 1). Returns ``B (G, p, K)``.

    All ``λ`` at once: the free coefficients are profiled out (a Cholesky solve), the penalized block's
    Schur complement ``M`` is diagonalized once per scale (``M̃ = D M D = V Λ Vᵀ``, ``D`` the scale's
    ``P^{-1/2}``), and then ``RSS(λ) = RSS₁ − Σ (2/(Λ+λ) − Λ/(Λ+λ)²) ρ²`` and ``tr H(λ) = tr₁ +
    Σ Λ/(Λ+λ)`` (``ρ = Vᵀ D r₂``) cost ``O(p)`` per ``λ``.
    """
    G, m, p = X.shape
    n1, q = n_free, p - n_free
    wX = X * w[None, :, None]
    A0 = X.transpose(1, 2) @ wX
    R = wX.transpose(1, 2) @ Y
    yy = (w[None, :, None] * Y ** 2).sum(1)  # (G, K)
    d = torch.diagonal(A0, dim1=1, dim2=2)
    tiny = torch.finfo(torch.float64).tiny
    eps1 = CONTROL_RIDGE * d[:, :n1].mean(1, keepdim=True).clamp_min(tiny)  # (G, 1)
    s2 = d[:, n1:].mean(1, keepdim=True).clamp_min(tiny)
    L1, _ = torch.linalg.cholesky_ex(A0[:, :n1, :n1] + torch.diag_embed(eps1.expand(G, n1)))
    A12 = A0[:, :n1, n1:]
    T = torch.cholesky_solve(torch.cat([A12, R[:, :n1]], 2), L1)
    T12, T1 = T[..., :q], T[..., q:]
    if q == 0:
        return T1
    M = A0[:, n1:, n1:] - A12.transpose(1, 2) @ T12  # (G, q, q)
    r2 = R[:, n1:] - A12.transpose(1, 2) @ T1  # (G, q, K)
    rss1 = yy - (R[:, :n1] * T1).sum(1)  # (G, K)
    tr1 = n1 - (torch.diagonal(torch.cholesky_inverse(L1), dim1=1, dim2=2) * eps1).sum(1)  # (G,)
    lam = torch.as_tensor(penalties, dtype=X.dtype, device=X.device)
    if scales is None:
        scales = [torch.ones((G, q), dtype=X.dtype, device=X.device)]
    best = torch.full((G, Y.shape[-1]), float("inf"), dtype=X.dtype, device=X.device)
    b_best = torch.zeros((G, q, Y.shape[-1]), dtype=X.dtype, device=X.device)
    for sc in scales:
        D = (s2 * sc).rsqrt()  # (G, q)
        Lam, V = torch.linalg.eigh(D[:, :, None] * M * D[:, None, :])
        Lam = Lam.clamp_min(0)
        rho = V.transpose(1, 2) @ (D[..., None] * r2)  # (G, q, K)
        f = 1 / (Lam[:, None, :] + lam[None, :, None])  # (G, nλ, q)
        rho2 = rho ** 2
        rss = (rss1[:, None] - 2 * f @ rho2 + (Lam[:, None, :] * f ** 2) @ rho2).clamp_min(0)  # (G, nλ, K)
        den = 1 - (tr1[:, None] + (Lam[:, None, :] * f).sum(-1)) / m  # (G, nλ)
        gcv = torch.where((den > 1 / m)[..., None], rss / den.clamp_min(tiny)[..., None] ** 2,
                          torch.full_like(rss, float("inf")))
        g, i = gcv.min(1)  # (G, K)
        b = D[..., None] * (V @ (rho / (Lam[:, :, None] + lam[i][:, None, :])))
        better = g < best
        best = torch.where(better, g, best)
        b_best = torch.where(better[:, None], b, b_best)
    return torch.cat([T1 - T12 @ b_best, b_best], 1)


def graph_hops(adjacent: torch.Tensor) -> torch.Tensor:
    """Hop distances ``(G, F, F)`` (float64; F + 1 where unreachable) of the feature graph ``adjacent``."""
    G, f, _ = adjacent.shape
    hop = torch.full((G, f, f), float(f + 1), dtype=torch.float64, device=adjacent.device)
    hop[:, torch.arange(f), torch.arange(f)] = 0
    reach = torch.eye(f, dtype=torch.bool, device=adjacent.device).expand(G, f, f).clone()
    a = adjacent.double()
    for k in range(1, f):
        nxt = (reach.double() @ a) > 0
        new = nxt & ~reach
        if not bool(new.any()):
            break
        hop[new] = float(k)
        reach |= nxt
    return hop


def softmax_surrogate(Z: torch.Tensor, w: torch.Tensor, L: torch.Tensor, lx: torch.Tensor, lb: torch.Tensor,
                      targets: torch.Tensor, adjacent: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The control variate of KernelSHAP on a probability score (Goldwasser & Hooker 2023).

    Every class's logit is fitted, by the same kernel-weighted least squares as KernelSHAP, with a
    quadratic in the coalition (``ℓ(S) ≈ ℓ(∅) + Σ a_j z_j + Σ b_jk z_j z_k``, exact at ``∅`` and the
    full input; ``b`` shrunk, see below); the surrogate ``g(S) = softmax(ℓ̂(S))[target]`` then has
    interactions of every order, like the explained probability, and its exact Shapley values are
    enumerated (``2^F`` evaluations of ``g``: no model rows). Paired KernelSHAP is exact for games
    of at most pairwise interactions, so an additive or quadratic control variate would change
    nothing; the softmax carries the higher-order part of ``v``, which the residual ``v − g`` then
    lacks.

    ``Z (G, m, F)`` drawn coalitions, ``w (m,)`` their weights, ``L (G, m, K)`` their logits, ``lx`` /
    ``lb (G, K)`` the input's and the baseline's, ``adjacent (G, F, F)`` which features are neighbours
    (optional). Returns ``φ_g (G, F)``, ``g`` at the rows
    ``(G, m)``, ``g(∅)`` and ``g(full)`` ``(G,)``.

    The quadratic has ``F − 1 + F (F − 1) / 2`` free coefficients per class (54 for 10 features), more
    than the rows of a small budget: the interaction coefficients are shrunk by a ridge penalty chosen
    per sample and class by generalized cross-validation (:func:`ridge_gcv`), from "none" (the plain
    quadratic, when the rows determine it) to "all" (the softmax of additive logits, determined from
    ``F − 1`` directions), so the control variate works from the smallest budgets on. With
    ``adjacent`` the interaction of two features ``h`` hops apart in the feature graph is penalized
    ``h^γ`` times more than a neighbour's (:func:`graph_hops`; ``γ`` from ``CONTROL_LOCALITY``, chosen by
    GCV too): a convolution's interactions are mostly local.
    """
    G, m, f = Z.shape
    K = L.shape[-1]
    dev = Z.device
    Zd = Z.double()
    iu = torch.triu_indices(f, f, 1, device=dev)
    X = torch.cat([Zd[..., :-1] - Zd[..., -1:], Zd[..., iu[0]] * Zd[..., iu[1]] - Zd[..., -1:]], -1)
    D = lx - lb
    Y = L - lb[:, None] - Zd[..., -1:] * D[:, None]
    scales = None
    if adjacent is not None:
        # interactions of neighbouring features (a convolution's receptive field spans them) shrunk least:
        # the penalty of a pair grows as (hops between the two features)^γ, γ chosen by GCV
        hop = graph_hops(adjacent)[:, iu[0], iu[1]]
        scales = [hop ** float(gm) for gm in CONTROL_LOCALITY]
    B = ridge_gcv(X, w, Y, f - 1, scales=scales)  # (G, p, K)
    a = torch.cat([B[:, :f - 1], (D - B.sum(1))[:, None]], 1)  # (G, f, K)
    b = B[:, f - 1:]
    codes = torch.arange(2 ** f, device=dev)
    Za = ((codes[:, None] >> torch.arange(f, device=dev)) & 1).double()
    Qa = Za[:, iu[0]] * Za[:, iu[1]]
    M = torch.as_tensor(shapley_matrix(f), dtype=torch.float64, device=dev)
    gv = torch.empty((G, 2 ** f), dtype=torch.float64, device=dev)
    step = max(1, 2 ** 21 // (2 ** f * K))
    for s in range(0, G, step):
        sl = slice(s, s + step)
        Lh = lb[sl, None] + Za @ a[sl] + Qa @ b[sl]  # (g, 2^f, K)
        gv[sl] = torch.softmax(Lh, -1).gather(-1, targets[sl].view(-1, 1, 1).expand(-1, 2 ** f, 1))[..., 0]
    phi = gv @ M.T
    rc = (Z.long() << torch.arange(f, device=dev)).sum(-1)  # (G, m) codes of the rows
    return phi, gv.gather(1, rc), gv[:, 0], gv[:, -1]
