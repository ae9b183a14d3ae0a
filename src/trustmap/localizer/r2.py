"""The generalized partial R² of the TRUST localizer, its confidence interval, and the 'auto' target.

For a frozen classifier f, per-sample risks on clean inputs ``c_i`` and on masked inputs ``m_i``
(0/1 errors for ``metric='acc'``, ``1 - p_y`` for ``metric='prob'``, cross-entropy for
``metric='loss'``)::

    R² = 1 - mean(c) / mean(m)

The interval is a paired bootstrap over samples (percentile) or the delta method; the samples'
clean and masked risks are resampled together, so their correlation is respected.

The 'auto' target is the R² the classifier would have if its predictions carried no information
about the labels: ``1 - mean(c) / chance``. For accuracy ``chance`` is the error with permuted
labels; the paper draws one random permutation, here it is the exact expectation over all
permutations, ``1 - sum_k pi_k q_k`` (label and prediction frequencies ``pi`` and ``q``), which
removes that noise. ``'prob'`` (risk ``1 - p_y``, the expected error of a prediction drawn from
the classifier's probabilities) likewise, with ``q`` the mean predicted probabilities. For the loss, ``chance`` is the cross-entropy of the best prediction that
carries no information about the input, the label frequencies themselves: the entropy
``-sum_k pi_k log pi_k``. (The permutation expectation of the loss, ``mean_i sum_k pi_k (-log p_k(x_i))``,
grows without bound with the classifier's confidence: it measures confidently wrong predictions, not
the absence of information, and no removal reaches it.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["R2Estimate", "R2Path", "per_sample_risk", "chance_risk", "permutation_risk", "boot_means", "boot_quantiles", "above_chance",
           "r2_summary", "r2_keep_summary", "target_gap", "isotonic", "r2_value"]

METRICS = ("acc", "prob", "loss")


@dataclass(frozen=True)
class R2Estimate:
    """An R² with its confidence interval (``low``, ``high``) at ``level``.

    Unpacks as ``estimate, low, high``; ``float(r2)`` is the estimate.

    Parameters
    ----------
    estimate : float
        The generalized partial R² = 1 - ``clean_risk`` / ``masked_risk``.
    low, high : float
        The confidence interval's bounds.
    level : float
        The interval's confidence level (e.g. 0.95).
    metric : str
        The risk: ``'acc'`` (0/1 errors), ``'prob'`` (``1 - p_y``) or ``'loss'`` (cross-entropy).
    method : str
        How the interval was computed: ``'bootstrap'`` or ``'delta'`` (the Localizer's ``ci``).
    n : int
        The number of samples.
    clean_risk, masked_risk : float
        The mean risk on the inputs and on the masked inputs.
    tau : float, optional
        The mask budget τ the estimate is for.

    Examples
    --------
    >>> from trustmap.localizer import R2Estimate
    >>> r2 = R2Estimate(0.6, 0.5, 0.7, 0.95, "acc", "bootstrap", 200, 0.1, 0.25, tau=4.0)
    >>> estimate, low, high = r2
    >>> print(r2)
    R² = 0.600 [0.500, 0.700] (95% bootstrap, acc, n=200)
    """

    estimate: float
    low: float
    high: float
    level: float
    metric: str
    method: str
    n: int
    clean_risk: float
    masked_risk: float
    tau: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __iter__(self):  # estimate, low, high = r2
        return iter((self.estimate, self.low, self.high))

    def __float__(self) -> float:
        return float(self.estimate)

    def __str__(self) -> str:
        return (f"R² = {self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}] "
                f"({int(round(self.level * 100))}% {self.method}, {self.metric}, n={self.n})")


@dataclass
class R2Path:
    """R² along the τ path on one split: monotone (isotonic) estimates and bounds, the raw ones beside.

    Parameters
    ----------
    tau : array (k,)
        The mask budgets τ, one per point of the path.
    estimate, low, high : array (k,)
        The monotone (isotonic) R² estimates and interval bounds at each τ.
    raw_estimate, raw_low, raw_high : array (k,)
        The same before the monotone fit.
    split : str
        The data split the path is computed on.
    n : int
        The number of samples.
    level : float
        The intervals' confidence level.
    metric : str
        The risk (``'acc'``, ``'prob'`` or ``'loss'``).
    target : float, optional
        The target R² the τ search aimed for.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.localizer import R2Path
    >>> a = np.array([0.2, 0.5, 0.8])
    >>> path = R2Path(np.array([1.0, 2.0, 4.0]), a, a - 0.1, a + 0.1, a, a - 0.1, a + 0.1, "val", 100, 0.95, "acc")
    >>> len(path), R2Path.from_dict(path.to_dict()).estimate.tolist()
    (3, [0.2, 0.5, 0.8])
    """

    tau: np.ndarray
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    raw_estimate: np.ndarray
    raw_low: np.ndarray
    raw_high: np.ndarray
    split: str
    n: int
    level: float
    metric: str
    target: float | None = None

    def __len__(self) -> int:
        return int(len(self.tau))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "R2Path":
        arrays = ("tau", "estimate", "low", "high", "raw_estimate", "raw_low", "raw_high")
        kw = {k: (np.asarray(v, dtype=np.float64) if k in arrays else v) for k, v in d.items()}
        return cls(**kw)

    def plot(self, **kwargs):
        from .plots import plot_r2_path

        return plot_r2_path(self, **kwargs)


def per_sample_risk(logits: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    """Per sample, ``(N,)`` float64: 0/1 error (``'acc'``), ``1 - p_y`` (``'prob'``: the expected error of
    a prediction drawn from the classifier's probabilities) or cross-entropy (``'loss'``)."""
    if metric == "acc":
        return (logits.argmax(1) != y).to(torch.float64)
    if metric == "prob":
        return 1.0 - torch.softmax(logits.to(torch.float64), dim=1).gather(1, y[:, None])[:, 0]
    return torch.nn.functional.cross_entropy(logits.to(torch.float64), y, reduction="none")


def _chance_rows(y: np.ndarray, clean_logits: np.ndarray, metric: str, n_classes: int) -> np.ndarray:
    """Rows whose means give the chance risk: label indicators, then prediction indicators
    (``'acc'``) or per-class negative log-likelihoods (``'loss'``): ``(2K, N)``."""
    y_hot = np.eye(n_classes)[y].T
    if metric == "acc":
        return np.concatenate([y_hot, np.eye(n_classes)[clean_logits.argmax(1)].T])
    if metric == "prob":
        return np.concatenate([y_hot, np.exp(clean_logits - _logsumexp(clean_logits)).T])
    return y_hot


def _chance_from_means(means: np.ndarray, metric: str, n_classes: int) -> np.ndarray:
    pi = means[:n_classes]
    if metric in ("acc", "prob"):
        return 1.0 - (pi * means[n_classes:]).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(pi > 0, pi * np.log(np.where(pi > 0, pi, 1.0)), 0.0).sum(0)


def chance_risk(y: np.ndarray, clean_logits: np.ndarray, metric: str, n_classes: int) -> float:
    """The risk of predictions that carry no information about the input: the exact expectation
    under a random permutation of the labels, ``1 - sum_k pi_k q_k``, for ``'acc'`` (``q``: the
    frequencies of the predicted classes) and ``'prob'`` (``q``: the mean predicted probabilities); the entropy of
    the label frequencies ``-sum_k pi_k log pi_k`` (the cross-entropy of predicting them) for ``'loss'``."""
    rows = _chance_rows(np.asarray(y), np.asarray(clean_logits, dtype=np.float64), metric, n_classes)
    return float(_chance_from_means(rows.mean(1), metric, n_classes))


def permutation_risk(y: np.ndarray, clean_logits: np.ndarray, metric: str, rng: np.random.Generator) -> float:
    """The paper's version: the risk on one random permutation of the labels."""
    yp = rng.permutation(y)
    t = torch.from_numpy(clean_logits)
    return float(per_sample_risk(t, torch.from_numpy(yp), metric).mean())


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(1, keepdims=True))


def boot_means(rows: np.ndarray, n_boot: int, seed: int, chunk_bytes: int = 32 * 2**20) -> np.ndarray:
    """Bootstrap means of each row of ``rows`` ``(R, N)``: ``(R, n_boot)``.

    The resampling counts (multinomial, one draw of N indices per replicate) are made in chunks of
    replicates, so memory stays small for large N; the same ``seed`` gives the same replicates
    for every row, so rows stay paired.
    """
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    n = rows.shape[1]
    rng = np.random.default_rng(seed)
    step = max(1, min(int(n_boot), chunk_bytes // max(1, 8 * n)))
    out = np.empty((rows.shape[0], int(n_boot)))
    for b0 in range(0, int(n_boot), step):
        b = min(step, int(n_boot) - b0)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        w = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        out[:, b0:b0 + b] = rows @ w.T / n
    return out


def r2_value(clean_mean, masked_mean):
    """1 - c/m elementwise; 0 where the masked risk is 0 (nothing was removed)."""
    c = np.asarray(clean_mean, dtype=np.float64)
    m = np.asarray(masked_mean, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(m > 0, 1.0 - c / np.where(m > 0, m, 1.0), 0.0)
    return out


def _ratio_summary(num: np.ndarray, den: np.ndarray, level: float, method: str, n_boot: int,
                   seed: int) -> dict[str, np.ndarray]:
    """``1 - mean(num) / mean(den)`` for paired per-sample risks, with its interval: ``num`` and
    ``den`` are ``(T, N)`` or ``(N,)`` (one of them a single row, broadcast against the other's ``T``
    rows). The bootstrap resamples the ``N`` samples jointly for every row (paired); the delta method
    uses the variance of a ratio of means."""
    num = np.atleast_2d(np.asarray(num, dtype=np.float64))
    den = np.atleast_2d(np.asarray(den, dtype=np.float64))
    n = num.shape[1]
    a, b = num.mean(1), den.mean(1)
    est = r2_value(a, b)
    alpha = 1.0 - level
    if method == "bootstrap":
        means = boot_means(np.concatenate([num, den]), n_boot, seed)
        r_star = r2_value(means[:len(num)], means[len(num):])
        low = np.quantile(r_star, alpha / 2, axis=1)
        high = np.quantile(r_star, 1 - alpha / 2, axis=1)
    elif method == "delta":
        from statistics import NormalDist

        z = NormalDist().inv_cdf(1 - alpha / 2)
        va = num.var(1, ddof=1) if n > 1 else np.zeros_like(a)
        vb = den.var(1, ddof=1) if n > 1 else np.zeros_like(b)
        cov = ((num - a[:, None]) * (den - b[:, None])).sum(1) / max(n - 1, 1)
        sb = np.where(b > 0, b, np.inf)
        var = (va / sb ** 2 + a ** 2 * vb / sb ** 4 - 2 * a * cov / sb ** 3) / n
        se = np.sqrt(np.maximum(var, 0.0))
        low, high = est - z * se, est + z * se
    else:  # pragma: no cover - validated by the caller
        raise ValueError(method)
    low = np.minimum(low, est)
    high = np.maximum(high, est)
    return {"estimate": est, "low": low, "high": high, "clean": np.broadcast_to(a, est.shape).copy(),
            "masked": np.broadcast_to(b, est.shape).copy()}


def r2_summary(clean: np.ndarray, masked: np.ndarray, *, level: float = 0.95, method: str = "bootstrap",
               n_boot: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Point estimates and two-sided intervals of R² for ``masked`` risks ``(T, N)`` (or ``(N,)``).

    Returns ``estimate``, ``low``, ``high`` (``(T,)``), plus ``clean`` and ``masked`` mean risks.
    """
    return _ratio_summary(clean, masked, level, method, n_boot, seed)


def r2_keep_summary(kept: np.ndarray, base: np.ndarray, *, level: float = 0.95, method: str = "bootstrap",
                    n_boot: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """R² of the *kept* regions ('preserve'): ``1 - mean(kept) / mean(base)`` for ``kept`` risks ``(T, N)``
    (the input with only the region kept) and ``base`` risks ``(N,)`` (nothing kept: the baseline), with a
    paired bootstrap (or delta-method) interval. It is the generalized partial R² of the kept features
    against none, as the removal R² is that of the whole input against the input without the region."""
    return _ratio_summary(kept, base, level, method, n_boot, seed)


def target_gap(masked: np.ndarray, y: np.ndarray, clean_logits: np.ndarray, metric: str, n_classes: int,
               level: float, n_boot: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """Masked risk minus chance risk, ``G = mean(m) - chance``, with a paired bootstrap interval.

    With clean risk ``c > 0``, ``R² >= 'auto' target`` exactly when ``G >= 0``; unlike the R²
    difference, ``G`` stays informative when the classifier makes no error (``c = 0``). Label and
    prediction frequencies are resampled with the risks, so the target's own noise is counted.
    """
    masked = np.atleast_2d(np.asarray(masked, dtype=np.float64))
    crow = _chance_rows(np.asarray(y), np.asarray(clean_logits, dtype=np.float64), metric, n_classes)
    chance = float(_chance_from_means(crow.mean(1), metric, n_classes))
    est = masked.mean(1) - chance
    t = len(masked)
    means = boot_means(np.concatenate([masked, crow]), n_boot, seed)
    g_star = means[:t] - _chance_from_means(means[t:], metric, n_classes)[None, :]
    alpha = 1.0 - level
    return {"estimate": est, "low": np.quantile(g_star, alpha / 2, axis=1),
            "high": np.quantile(g_star, 1 - alpha / 2, axis=1), "chance": chance}


def boot_quantiles(rows: np.ndarray, level: float, n_boot: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided bootstrap percentile interval of each row's mean: ``(low, high)``."""
    means = boot_means(rows, n_boot, seed)
    alpha = 1.0 - level
    return np.quantile(means, alpha / 2, axis=1), np.quantile(means, 1 - alpha / 2, axis=1)


def above_chance(clean_err: np.ndarray, y: np.ndarray, clean_logits: np.ndarray, n_classes: int, level: float,
                 n_boot: int = 500, seed: int = 0) -> tuple[float, float, float]:
    """(error, chance error, one-sided lower bound of chance - error) for the accuracy check."""
    crow = _chance_rows(np.asarray(y), np.asarray(clean_logits, dtype=np.float64), "acc", n_classes)
    err = float(np.mean(clean_err))
    chance = float(_chance_from_means(crow.mean(1), "acc", n_classes))
    means = boot_means(np.concatenate([np.asarray(clean_err, dtype=np.float64)[None], crow]), n_boot, seed)
    diff = _chance_from_means(means[1:], "acc", n_classes) - means[0]
    return err, chance, float(np.quantile(diff, 1 - level))


def isotonic(values: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators), equal weights."""
    v = np.asarray(values, dtype=np.float64)
    blocks: list[list[float]] = []  # [mean, count]
    for x in v:
        blocks.append([float(x), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    out = []
    for m, c in blocks:
        out.extend([m] * int(c))
    return np.asarray(out)
