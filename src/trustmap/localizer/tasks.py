"""Synthetic tasks with known discriminative regions, for testing and benchmarking the localizer.

Every generator returns a :class:`Task`: ``X`` in internal layout ``(N, C, *spatial)`` (float32),
the labels ``y`` (after label noise), the clean labels, and the ground truth needed to score a
mask: where the class bump is (``centers``, ``-1`` where a sample has none), which channel
carries it, and where the shared distractor is.

``distractor_task`` is the binary task of the TRUST localizer issue: 187 samples, baseline 0.3
plus smooth noise, a distractor bump near t = 30 in *every* sample (so it carries no class
information), a class bump near t = 100 in class 1 only, and 3 % label noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["Task", "distractor_task", "multiclass_task", "multichannel_task", "image_task",
           "window_mass", "smooth_noise"]


@dataclass
class Task:
    """A synthetic classification task with known answers (internal layout ``(N, C, *spatial)``)."""

    X: np.ndarray
    y: np.ndarray
    y_clean: np.ndarray
    centers: np.ndarray                 # (N, rank) position of the class bump; -1 where absent
    channel: np.ndarray                 # (N,) channel that carries the class bump; -1 where absent
    distractor: np.ndarray | None = None  # (N, rank) position of the shared distractor
    width: float = 4.0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.y))

    def subset(self, idx) -> "Task":
        idx = np.asarray(idx)
        return Task(self.X[idx], self.y[idx], self.y_clean[idx], self.centers[idx], self.channel[idx],
                    None if self.distractor is None else self.distractor[idx], self.width, dict(self.info))


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 2:
        raise InputError("number of samples must be an int >= 2", parameter="n", expected="an int >= 2",
                         got=repr(n), fix="pass n=3000")
    return int(n)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, std: float) -> np.ndarray:
    """Gaussian noise smoothed along the last axis (or the last two) by a Gaussian of ``sigma``, scaled to ``std``."""
    white = rng.standard_normal(shape)
    k = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
    kern = np.exp(-0.5 * (k / sigma) ** 2)
    kern /= np.sqrt((kern ** 2).sum())
    out = white
    axes = (-1,) if len(shape) <= 3 else (-2, -1)
    for ax in axes:
        out = np.apply_along_axis(lambda v: np.convolve(v, kern, mode="same"), ax, out)
    return out * std


def _bump(t: np.ndarray, center: np.ndarray, width: float) -> np.ndarray:
    """Gaussian bumps exp(-(t-c)^2 / 2w^2): (N, L) for centers (N,)."""
    return np.exp(-0.5 * ((t[None, :] - center[:, None]) / width) ** 2)


def distractor_task(n: int = 3000, seed: int = 0, length: int = 187, bump_at: float = 100.0,
                    distractor_at: float = 30.0, width: float = 4.0, jitter: float = 3.0,
                    label_noise: float = 0.03, amplitude: tuple[float, float] = (0.6, 1.0)) -> Task:
    """Binary task: class 1 has a bump near ``bump_at``; every sample has one near ``distractor_at``."""
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    y_clean = rng.integers(0, 2, n)
    x = 0.3 + smooth_noise(rng, (n, length), sigma=6.0, std=0.06) + 0.02 * rng.standard_normal((n, length))
    dist_c = distractor_at + rng.uniform(-jitter, jitter, n)
    x += rng.uniform(*amplitude, n)[:, None] * _bump(t, dist_c, width)
    cls_c = bump_at + rng.uniform(-jitter, jitter, n)
    x += (y_clean == 1)[:, None] * rng.uniform(*amplitude, n)[:, None] * _bump(t, cls_c, width)
    flip = rng.random(n) < label_noise
    y = np.where(flip, 1 - y_clean, y_clean)
    centers = np.where(y_clean == 1, cls_c, -1.0)[:, None]
    return Task(x[:, None].astype(np.float32), y.astype(np.int64), y_clean.astype(np.int64), centers,
                np.where(y_clean == 1, 0, -1), dist_c[:, None], width,
                {"name": "distractor", "length": length, "label_noise": label_noise, "seed": seed})


def multiclass_task(n: int = 3000, seed: int = 0, length: int = 187, positions=(40.0, 93.0, 146.0),
                    width: float = 4.0, jitter: float = 3.0, amplitude: tuple[float, float] = (0.6, 1.0)) -> Task:
    """K-class task (K = len(positions)): class k has one clean bump near ``positions[k]``, no label noise."""
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    k = len(positions)
    y = rng.integers(0, k, n)
    c = np.asarray(positions, dtype=np.float64)[y] + rng.uniform(-jitter, jitter, n)
    x = 0.3 + smooth_noise(rng, (n, length), sigma=6.0, std=0.06) + 0.02 * rng.standard_normal((n, length))
    x += rng.uniform(*amplitude, n)[:, None] * _bump(t, c, width)
    return Task(x[:, None].astype(np.float32), y.astype(np.int64), y.astype(np.int64), c[:, None],
                np.zeros(n, dtype=np.int64), None, width, {"name": "multiclass", "length": length, "seed": seed})


def multichannel_task(n: int = 3000, seed: int = 0, channels: int = 6, carrier: int = 2, length: int = 187,
                      bump_at: float = 100.0, width: float = 4.0, jitter: float = 3.0,
                      amplitude: tuple[float, float] = (0.6, 1.0)) -> Task:
    """Binary task on ``channels`` channels: only channel ``carrier`` holds the class bump (class 1).

    Every other channel carries smooth noise and one non-discriminative bump at a random place in
    every sample, so the other channels are busy but carry no class information.
    """
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    y = rng.integers(0, 2, n)
    x = 0.3 + smooth_noise(rng, (n, channels, length), sigma=6.0, std=0.06)
    x += 0.02 * rng.standard_normal((n, channels, length))
    for ch in range(channels):
        if ch == carrier:
            continue
        c = rng.uniform(20, length - 20, n)
        x[:, ch] += rng.uniform(*amplitude, n)[:, None] * _bump(t, c, width)
    cls_c = bump_at + rng.uniform(-jitter, jitter, n)
    x[:, carrier] += (y == 1)[:, None] * rng.uniform(*amplitude, n)[:, None] * _bump(t, cls_c, width)
    return Task(x.astype(np.float32), y.astype(np.int64), y.astype(np.int64), np.where(y == 1, cls_c, -1.0)[:, None],
                np.where(y == 1, carrier, -1), None, width,
                {"name": "multichannel", "channels": channels, "carrier": carrier, "seed": seed})


def image_task(n: int = 2000, seed: int = 0, size: int = 24, blob_at=(16.0, 16.0), distractor_at=(6.0, 6.0),
               width: float = 2.0, jitter: float = 1.5, amplitude: tuple[float, float] = (0.6, 1.0)) -> Task:
    """Binary 2D task (one channel, ``size`` x ``size``): class 1 has a blob near ``blob_at``;
    every image has a distractor blob near ``distractor_at``."""
    n = _check_n(n)
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    y = rng.integers(0, 2, n)

    def blobs(center):
        return np.exp(-0.5 * (((yy[None] - center[:, 0, None, None]) ** 2 +
                               (xx[None] - center[:, 1, None, None]) ** 2) / width ** 2))

    x = 0.3 + 0.05 * rng.standard_normal((n, size, size))
    dc = np.asarray(distractor_at)[None] + rng.uniform(-jitter, jitter, (n, 2))
    x += rng.uniform(*amplitude, n)[:, None, None] * blobs(dc)
    cc = np.asarray(blob_at)[None] + rng.uniform(-jitter, jitter, (n, 2))
    x += (y == 1)[:, None, None] * rng.uniform(*amplitude, n)[:, None, None] * blobs(cc)
    return Task(x[:, None].astype(np.float32), y.astype(np.int64), y.astype(np.int64),
                np.where((y == 1)[:, None], cc, -1.0), np.where(y == 1, 0, -1), dc, width,
                {"name": "image", "size": size, "seed": seed})


def window_mass(masks: np.ndarray, centers: np.ndarray, radius: float, channel: np.ndarray | None = None) -> dict:
    """Score masks ``(N, C, *spatial)`` against known regions.

    Returns per-sample arrays: ``mass`` (fraction of the mask's total within ``radius`` of the
    center, Chebyshev distance, on ``channel`` when given, else on every channel) and ``argmax``
    (whether the mask's largest entry lies in that window).
    """
    masks = np.asarray(masks, dtype=np.float64)
    n, c = masks.shape[:2]
    spatial = masks.shape[2:]
    grids = np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij")
    dist = np.zeros((n, *spatial))
    for d, g in enumerate(grids):
        dist = np.maximum(dist, np.abs(g[None] - centers[:, d].reshape((n,) + (1,) * len(spatial))))
    inside = dist <= radius                                    # (N, *spatial)
    inside_c = np.broadcast_to(inside[:, None], masks.shape).copy()
    if channel is not None:
        onehot = np.arange(c)[None, :] == np.asarray(channel)[:, None]
        inside_c &= onehot.reshape((n, c) + (1,) * len(spatial))
    total = masks.reshape(n, -1).sum(1)
    mass = (masks * inside_c).reshape(n, -1).sum(1) / np.maximum(total, 1e-12)
    arg = masks.reshape(n, -1).argmax(1)
    hit = inside_c.reshape(n, -1)[np.arange(n), arg]
    return {"mass": mass, "argmax": hit, "total": total}
