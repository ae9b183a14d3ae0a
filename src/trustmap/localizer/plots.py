"""Plots of the TRUST localizer: the R² path with its band, the DA plot, the path plot.

Functions return matplotlib Figures (built without pyplot, never shown). 1D signals: one row
per channel, the trace with the mask as a band under it; 2D: the image with the mask overlaid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DependencyError, InputError

__all__ = ["plot_r2_path", "da_plot", "path_plot"]


def _figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise DependencyError("matplotlib is needed for plots", parameter="plot", expected="matplotlib>=3.7",
                              got="no module named matplotlib", fix="pip install 'trustmap[plot]'") from exc
    return Figure(figsize=figsize, layout="constrained")


def plot_r2_path(path, tau: float | None = None, target: float | None = None, ax=None, title: str | None = None):
    """R² against τ (log axis): the monotone estimate, its confidence band, the raw estimates,
    the target (dashed) and the chosen τ (dotted)."""
    fig = None
    if ax is None:
        fig = _figure((5.5, 3.6))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    t = np.asarray(path.tau)
    ax.fill_between(t, path.low, path.high, color="tab:blue", alpha=0.2, linewidth=0,
                    label=f"{int(round(path.level * 100))}% interval")
    ax.plot(t, path.estimate, "-o", color="tab:blue", ms=3, label=f"R² ({path.split})")
    if not np.allclose(path.raw_estimate, path.estimate):
        ax.plot(t, path.raw_estimate, "x", color="tab:gray", ms=4, label="raw estimate")
    target = path.target if target is None else target
    if target is not None:
        ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target:.3f}")
    if tau is not None:
        ax.axvline(tau, color="k", ls=":", lw=1, label=f"chosen τ = {tau:.3g}")
    if len(t) > 1 and t.min() > 0 and t.max() / t.min() > 4:
        ax.set_xscale("log")
    ax.set_xlabel("τ (mask budget)")
    ax.set_ylabel(f"generalized partial R² ({path.metric})")
    ax.set_title(title or f"R² path, n = {path.n}")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _signal_panel(ax, x: np.ndarray, m: np.ndarray, title: str | None = None, cmap: str = "Reds") -> None:
    """``x``, ``m``: (C, L). One slot per channel: trace on top, mask band under it."""
    c, length = x.shape
    for ch in range(c):
        base = c - 1 - ch
        tr = x[ch]
        lo, hi = float(tr.min()), float(tr.max())
        scaled = (tr - lo) / (hi - lo if hi > lo else 1.0)
        ax.imshow(m[ch][None, :], aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest",
                  extent=(-0.5, length - 0.5, base + 0.02, base + 0.27))
        ax.plot(np.arange(length), base + 0.32 + 0.63 * scaled, color="k", lw=0.8)
    ax.set_xlim(-0.5, length - 0.5)
    ax.set_ylim(0, c)
    ax.set_yticks([c - 1 - ch + 0.5 for ch in range(c)])
    ax.set_yticklabels([f"ch {ch}" for ch in range(c)] if c > 1 else [""], fontsize=6)
    if title:
        ax.set_title(title, fontsize=8)


def _image_panel(ax, x: np.ndarray, m: np.ndarray, title: str | None = None, cmap: str = "Reds") -> None:
    """``x``, ``m``: (C, H, W). Grey (or RGB) image, mask (max over channels) overlaid."""
    if x.shape[0] == 3:
        img = np.moveaxis(x, 0, -1)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
        ax.imshow(img)
    else:
        ax.imshow(x.mean(0), cmap="gray")
    heat = m.max(0)
    ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=np.clip(heat, 0, 1) * 0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _panel(ax, x, m, title=None):
    (_signal_panel if x.ndim == 2 else _image_panel)(ax, x, m, title)


def da_plot(loc, X, y, n_per_class: int = 3, classes: Sequence[int] | None = None, tau: float | None = None,
            seed: int = 0, layout: str | None = None):
    """Data-adaptive localization: for each class (row), ``n_per_class`` example instances
    (columns) with the regions the localizer removes at ``tau`` (default ``tau_``)."""
    from .common import labels as _labels

    t, _ = loc._internal(X, layout)
    yt = _labels(y, len(t), loc.n_classes_, "y").numpy()
    classes = sorted(set(yt.tolist())) if classes is None else list(classes)
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise InputError("n_per_class must be a positive int", parameter="n_per_class", expected=">= 1",
                         got=n_per_class, fix="e.g. n_per_class=3")
    rng = np.random.default_rng(seed)
    picks = []
    for k in classes:
        idx = np.flatnonzero(yt == k)
        picks.append(rng.choice(idx, size=min(n_per_class, len(idx)), replace=False) if len(idx) else np.array([], int))
    flat = np.concatenate([p for p in picks if len(p)]).astype(int)
    tau_v = loc._check_tau(tau)
    masks = loc._masks_internal(t[flat], tau_v) if len(flat) else np.zeros((0,) + tuple(t.shape[1:]))
    xs = t[flat].cpu().numpy()
    rank = t.ndim - 2
    fig = _figure((3.0 * n_per_class, (1.2 + 0.5 * t.shape[1] if rank == 1 else 2.6) * len(classes)))
    pos = 0
    for r, (k, p) in enumerate(zip(classes, picks)):
        for col in range(n_per_class):
            ax = fig.add_subplot(len(classes), n_per_class, r * n_per_class + col + 1)
            if col < len(p):
                _panel(ax, xs[pos], masks[pos], f"class {k}, #{int(p[col])}")
                pos += 1
            else:
                ax.axis("off")
    fig.suptitle(f"localized regions (τ = {tau_v:.3g})", fontsize=9)
    return fig


def path_plot(loc, X, taus: Sequence[float] | None = None, n: int = 3, index: Sequence[int] | None = None,
              layout: str | None = None):
    """Masks for each τ side by side (columns), for ``n`` instances (rows), with the held-out R²."""
    t, _ = loc._internal(X, layout)
    if taus is None:
        taus = loc.r2_path_.tau if loc.mode == "paper" else loc.tau_grid_
        if loc.mode == "paper":
            taus = [loc.tau_]
        elif len(taus) > 6:
            taus = taus[np.unique(np.round(np.linspace(0, len(taus) - 1, 6)).astype(int))]
    taus = [loc._check_tau(float(v)) for v in taus]
    idx = np.arange(min(n, len(t))) if index is None else np.asarray(index, dtype=int)
    xs = t[idx].cpu().numpy()
    r2 = {float(a): float(b) for a, b in zip(loc.r2_path_.tau, loc.r2_path_.estimate)}
    rank = t.ndim - 2
    fig = _figure((2.6 * len(taus), (1.0 + 0.5 * t.shape[1] if rank == 1 else 2.4) * len(idx)))
    for j, tau in enumerate(taus):
        masks = loc._masks_internal(t[idx], tau)
        for i in range(len(idx)):
            ax = fig.add_subplot(len(idx), len(taus), i * len(taus) + j + 1)
            title = None
            if i == 0:
                title = f"τ = {tau:.3g}" + (f", R² = {r2[tau]:.2f}" if tau in r2 else "")
            _panel(ax, xs[i], masks[i], title)
    fig.suptitle("mask path", fontsize=9)
    return fig
