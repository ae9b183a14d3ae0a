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

__all__ = ["KernelPlan", "kernel_plan", "draw_pairs", "lstsq_with_cov", "enumerate_coalitions",
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


def lstsq_with_cov(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 0.0, intercept: bool = True,
                   fixed: int = 0, unit: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
    """
    X, y = X.double(), y.double()
    w = w.double().expand(y.shape) if w.dim() == 1 else w.double()
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
    if n_units > 1:
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
