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


def _signal_panel(ax, x: np.ndarray, m: np.ndarray, title: str | None = None, cmap: str = "Reds",
                  after: np.ndarray | None = None, fs: float | None = None, after_label: str = "after") -> None:
    """``x``, ``m``: (C, L). One slot per channel: trace on top, mask band under it; ``after`` (C, L):
    the signal once the located features are removed (or only they are kept), drawn over the trace
    on the same scale. ``fs``: sampling rate (Hz) for a time axis in seconds."""
    c, length = x.shape
    step = 1.0 / float(fs) if fs else 1.0
    t = np.arange(length) * step
    for ch in range(c):
        base = c - 1 - ch
        tr = x[ch]
        lo, hi = float(tr.min()), float(tr.max())
        if after is not None:
            lo, hi = min(lo, float(after[ch].min())), max(hi, float(after[ch].max()))
        span = hi - lo if hi > lo else 1.0
        ax.imshow(m[ch][None, :], aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest",
                  extent=(-0.5 * step, (length - 0.5) * step, base + 0.02, base + 0.27))
        ax.plot(t, base + 0.32 + 0.63 * (tr - lo) / span, color="k", lw=0.8, label="signal" if ch == 0 else None)
        if after is not None:
            ax.plot(t, base + 0.32 + 0.63 * (after[ch] - lo) / span, color="tab:blue", lw=0.8, ls="--",
                    label=after_label if ch == 0 else None)
    ax.set_xlim(-0.5 * step, (length - 0.5) * step)
    ax.set_ylim(0, c)
    ax.set_yticks([c - 1 - ch + 0.5 for ch in range(c)])
    ax.set_yticklabels([f"ch {ch}" for ch in range(c)] if c > 1 else [""], fontsize=6)
    if fs:
        ax.set_xlabel("time (s)", fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)


def _image_panel(ax, x: np.ndarray, m: np.ndarray, title: str | None = None, cmap: str = "Reds",
                 after: np.ndarray | None = None, fs: float | None = None, after_label: str = "after") -> None:
    """``x``, ``m``: (C, H, W). Grey (or RGB) image, mask (max over channels) overlaid; ``after``: the
    image once the located features are removed, shown instead of the image (the mask's outline kept)."""
    shown = x if after is None else after
    if shown.shape[0] == 3:
        img = np.moveaxis(shown, 0, -1)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-12)
        ax.imshow(img)
    else:
        ax.imshow(shown.mean(0), cmap="gray")
    heat = m.max(0)
    ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=np.clip(heat, 0, 1) * (0.8 if after is None else 0.3))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title + (f" ({after_label})" if after is not None else ""), fontsize=8)


def _panel(ax, x, m, title=None, after=None, fs=None, after_label="after"):
    (_signal_panel if x.ndim == 2 else _image_panel)(ax, x, m, title, after=after, fs=fs, after_label=after_label)


def _threshold(masks: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is None:
        return masks
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) or not (
            0.0 <= float(threshold) < 1.0):
        raise InputError("threshold must be a number in [0, 1)", parameter="threshold", expected="0 <= threshold < 1",
                         got=threshold, fix="e.g. threshold=0.1 hides mask entries below 0.1")
    return np.where(masks >= float(threshold), masks, 0.0)


def _check_fs(fs) -> float | None:
    if fs is None:
        return None
    if isinstance(fs, bool) or not isinstance(fs, (int, float, np.integer, np.floating)) or not (
            np.isfinite(fs) and fs > 0):
        raise InputError("fs must be a positive sampling rate in Hz", parameter="fs", expected="fs > 0", got=fs,
                         fix="e.g. fs=125 for the ecg208 beats (Dataset.meta['sampling_rate_hz'])")
    return float(fs)


def _after(loc, t, masks: np.ndarray) -> np.ndarray:
    """The inputs once the located features are removed (or, for 'preserve', only they are kept),
    with the localizer's own baseline (internal layout, numpy)."""
    import torch

    from .baseline import REFERENCE, baseline
    from .training import compose

    x = t.to(torch.float32)
    d = torch.from_numpy(masks).to(x.dtype)
    kind = loc.settings_["baseline"]
    stats = loc.base_stats_.to(dtype=x.dtype, device=x.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    b = baseline(x, REFERENCE.get(kind, kind), stats, gen)
    return compose(x, d, b, loc.settings_["objective"]).cpu().numpy()


def da_plot(loc, X, y=None, n_per_class: int = 3, classes: Sequence[int] | None = None, tau: float | None = None,
            seed: int = 0, layout: str | None = None, *, index: Sequence[int] | None = None,
            threshold: float | None = None, show_after: bool = True, fs: float | None = None):
    """Data-adaptive localization: for each class (row), ``n_per_class`` example instances
    (columns) with the regions the localizer locates at ``tau`` (default ``tau_``).

    ``y``: the classes to group by (None: the classifier's predictions); ``index``: the instances to
    show (instead of a seeded random pick); ``threshold``: hide mask entries below it; ``show_after``:
    draw the signal after removing the located features (for ``objective='preserve'``: with only them
    kept), as dnn-locate's DA plot does; ``fs``: sampling rate (Hz) for time axes in seconds (default:
    the one the localizer was fitted with, ``loc.fs_``; samples when unknown)."""
    from .common import labels as _labels

    t, _ = loc._internal(X, layout)
    fs = _check_fs(getattr(loc, "fs_", None) if fs is None else fs)
    if y is None:
        if getattr(loc, "model_", None) is None:
            raise InputError("a loaded localizer needs labels (or its model) to group by class", parameter="y",
                             expected="labels, or Localizer.load(path, model=...)", got=None, fix="pass y=...")
        from .common import logits as _logits

        yt = _logits(loc.model_, t).argmax(1)
    else:
        yt = _labels(y, len(t), loc.n_classes_, "y").numpy()
    classes = sorted(set(yt.tolist())) if classes is None else list(classes)
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise InputError("n_per_class must be a positive int", parameter="n_per_class", expected=">= 1",
                         got=n_per_class, fix="e.g. n_per_class=3")
    if index is not None:
        idx_all = np.asarray(index, dtype=int).reshape(-1)
        if idx_all.size == 0 or idx_all.min() < -len(t) or idx_all.max() >= len(t):
            raise InputError("index must hold sample indices of X", parameter="index",
                             expected=f"indices in [0, {len(t)})", got=list(idx_all[:5]), fix="e.g. index=[0, 5, 9]")
        idx_all = idx_all % len(t)
        picks = [idx_all[yt[idx_all] == k][:n_per_class] for k in classes]
    else:
        rng = np.random.default_rng(seed)
        picks = []
        for k in classes:
            idx = np.flatnonzero(yt == k)
            picks.append(rng.choice(idx, size=min(n_per_class, len(idx)), replace=False) if len(idx)
                         else np.array([], int))
    flat = np.concatenate([p for p in picks if len(p)] or [np.array([], int)]).astype(int)
    tau_v = loc._check_tau(tau)
    masks = loc._masks_internal(t[flat], tau_v) if len(flat) else np.zeros((0,) + tuple(t.shape[1:]))
    after = _after(loc, t[flat], masks) if show_after and len(flat) else None
    masks = _threshold(masks, threshold)
    xs = t[flat].cpu().numpy()
    rank = t.ndim - 2
    label = "only the region kept" if loc.settings_["objective"] == "preserve" else "features removed"
    fig = _figure((3.0 * n_per_class, (1.2 + 0.5 * t.shape[1] if rank == 1 else 2.6) * len(classes)))
    pos = 0
    for r, (k, p) in enumerate(zip(classes, picks)):
        for col in range(n_per_class):
            ax = fig.add_subplot(len(classes), n_per_class, r * n_per_class + col + 1)
            if col < len(p):
                _panel(ax, xs[pos], masks[pos], f"class {k}, #{int(p[col])}",
                       after=None if after is None else after[pos], fs=fs, after_label=label)
                if pos == 0 and after is not None and rank == 1:
                    ax.legend(fontsize=6, loc="upper right")
                pos += 1
            else:
                ax.axis("off")
    fig.suptitle(f"localized regions (τ = {tau_v:.3g})", fontsize=9)
    return fig


def path_plot(loc, X, taus: Sequence[float] | None = None, n: int = 3, index: Sequence[int] | None = None,
              layout: str | None = None, *, threshold: float | None = None, show_after: bool = False,
              fs: float | None = None):
    """Masks for each τ side by side (columns), for ``n`` instances (rows; or those of ``index``), with
    the held-out R². ``threshold``: hide mask entries below it; ``show_after``: draw the signal after
    removing the located features; ``fs``: sampling rate (Hz) for time axes in seconds (default
    ``loc.fs_``, the one given at fit; samples when unknown)."""
    t, _ = loc._internal(X, layout)
    fs = _check_fs(getattr(loc, "fs_", None) if fs is None else fs)
    if taus is None:
        taus = loc.r2_path_.tau if loc.mode == "paper" else loc.tau_grid_
        if loc.mode == "paper":
            taus = [loc.tau_]
        elif len(taus) > 6:
            taus = taus[np.unique(np.round(np.linspace(0, len(taus) - 1, 6)).astype(int))]
    taus = [loc._check_tau(float(v)) for v in taus]
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InputError("n must be a positive int", parameter="n", expected=">= 1", got=n, fix="e.g. n=3")
    idx = np.arange(min(n, len(t))) if index is None else np.asarray(index, dtype=int)
    xs = t[idx].cpu().numpy()
    r2 = {float(a): float(b) for a, b in zip(loc.r2_path_.tau, loc.r2_path_.estimate)}
    rank = t.ndim - 2
    label = "only the region kept" if loc.settings_["objective"] == "preserve" else "features removed"
    fig = _figure((2.6 * len(taus), (1.0 + 0.5 * t.shape[1] if rank == 1 else 2.4) * len(idx)))
    for j, tau in enumerate(taus):
        masks = loc._masks_internal(t[idx], tau)
        after = _after(loc, t[idx], masks) if show_after else None
        masks = _threshold(masks, threshold)
        for i in range(len(idx)):
            ax = fig.add_subplot(len(idx), len(taus), i * len(taus) + j + 1)
            title = None
            if i == 0:
                title = f"τ = {tau:.3g}" + (f", R² = {r2[tau]:.2f}" if tau in r2 else "")
            _panel(ax, xs[i], masks[i], title, after=None if after is None else after[i], fs=fs, after_label=label)
    fig.suptitle("mask path", fontsize=9)
    return fig
