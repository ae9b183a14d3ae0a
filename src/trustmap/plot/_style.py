"""Shared helpers for trustmap figures: figure creation, colour scales, input checks.

Figures are made with :class:`matplotlib.figure.Figure` on an Agg canvas, not through
``pyplot``: nothing is shown, nothing is registered globally, and figures made in a loop
(reports, the CLI) are freed when dropped. In Jupyter a returned Figure displays as usual;
``fig.savefig(path)`` writes it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import DependencyError, InputError, ShapeError

__all__ = ["mpl", "new_figure", "attribution_scale", "class_colors", "as_numpy", "check_index",
           "select_channels", "channel_labels", "scalar_mappable", "axes_list", "sample_internal",
           "overlay", "TIME_LABEL"]

TIME_LABEL = "time / sample"
SIGNED_CMAP = "RdBu_r"
SIGNAL_CMAP = "Reds"
IMAGE_CMAP = "inferno"


def mpl():
    """The matplotlib module, or a DependencyError naming the extra to install."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as exc:
        raise DependencyError("plotting needs matplotlib", parameter="matplotlib", expected="matplotlib >= 3.7",
                              got="not installed", fix="pip install 'trustmap[plot]'") from exc
    return matplotlib


def new_figure(figsize: tuple[float, float]) -> Any:
    """A Figure with constrained layout on an Agg canvas (never shown, not held by pyplot)."""
    mpl()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def attribution_scale(values: np.ndarray, cmap: str | None, default: str, vmax: float | None = None,
                      vmin: float | None = None):
    """``(cmap, Normalize, label)`` for attribution values.

    Signed values get a diverging map centred on zero (``-a .. a``); non-negative values a
    sequential map from 0. ``vmax`` / ``vmin`` override the limits.
    """
    mpl()
    from matplotlib.colors import Normalize

    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    signed = lo < 0 and not (vmin is not None and vmin >= 0)
    if signed:
        a = float(vmax) if vmax is not None else max(abs(lo), abs(hi))
        a = a if a > 0 else 1.0
        norm = Normalize(vmin=-a if vmin is None else float(vmin), vmax=a)
        return cmap or SIGNED_CMAP, norm, "attribution (signed)"
    top = float(vmax) if vmax is not None else hi
    bottom = float(vmin) if vmin is not None else 0.0
    if top <= bottom:
        top = bottom + 1.0
    return cmap or default, Normalize(vmin=bottom, vmax=top), "attribution"


def scalar_mappable(cmap, norm):
    """A colour scale for ``fig.colorbar`` independent of any drawn artist (so overlays' alpha
    does not fade the colorbar)."""
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array(np.array([]))
    return sm


def overlay(ax, grey: np.ndarray | None, heat: np.ndarray, cmap, norm, max_alpha: float = 0.9) -> None:
    """Draw ``heat`` over the image ``grey`` as a separate layer: the image in grey, the map in
    its own colours with an opacity that grows with the map's magnitude (``max_alpha`` at the
    end of the scale, transparent at zero). Where the map is strong its colours are those of its
    colour bar (nothing is blended into the colormap); where it is weak the image shows through.
    """
    mpl()
    heat = np.asarray(heat, dtype=np.float64)
    if grey is not None:
        ax.imshow(grey, cmap="gray", interpolation="nearest")
    if grey is None:
        ax.imshow(heat, cmap=cmap, norm=norm, interpolation="nearest")
        return
    finite = np.where(np.isfinite(heat), heat, 0.0)
    lo, hi = float(norm.vmin), float(norm.vmax)
    if lo < 0 < hi:  # diverging: strength is the distance from zero
        strength = np.abs(finite) / max(abs(lo), abs(hi))
    else:
        strength = (finite - lo) / ((hi - lo) or 1.0)
    ax.imshow(heat, cmap=cmap, norm=norm, alpha=np.clip(strength, 0.0, 1.0) * float(max_alpha),
              interpolation="nearest")


def class_colors(k: int) -> list:
    """``k`` distinct colours (tab10, tab20, then a continuous map)."""
    matplotlib = mpl()

    if k <= 10:
        cm = matplotlib.colormaps["tab10"]
        return [cm(i) for i in range(k)]
    if k <= 20:
        cm = matplotlib.colormaps["tab20"]
        return [cm(i) for i in range(k)]
    cm = matplotlib.colormaps["viridis"]
    return [cm(i / max(1, k - 1)) for i in range(k)]


def as_numpy(x, parameter: str = "x") -> np.ndarray:
    """numpy float array from a numpy array or torch tensor."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise InputError("array is not numeric", parameter=parameter, expected="a numeric array",
                         got=str(arr.dtype), fix="pass a float numpy array or torch tensor")
    return arr.astype(np.float64, copy=False)


def check_index(index, n: int) -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise InputError("index must be an int", parameter="index", expected="a sample index",
                         got=repr(index), fix="pass index=0 for the first sample")
    i = int(index)
    if not -n <= i < n:
        raise InputError("sample index out of range", parameter="index", expected=f"-{n} .. {n - 1}",
                         got=i, fix="pick a sample that the attribution holds")
    return i % n


def select_channels(channels: int | Sequence[int] | None, c: int) -> list[int]:
    """Channel indices to draw (all when ``None``)."""
    if channels is None:
        return list(range(c))
    chans = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if not chans:
        raise InputError("no channels selected", parameter="channels", expected="at least one channel index",
                         got=channels, fix="pass channels=None to draw every channel")
    out = []
    for ch in chans:
        if isinstance(ch, (bool, np.bool_)) or not isinstance(ch, (int, np.integer)) or not -c <= int(ch) < c:
            raise InputError("channel index out of range", parameter="channels", expected=f"ints in 0 .. {c - 1}",
                             got=ch, fix=f"the maps have {c} channel(s)")
        out.append(int(ch) % c)
    return out


def channel_labels(names: Sequence[str] | None, c: int) -> list[str]:
    if names is None:
        return [f"channel {k}" for k in range(c)]
    names = [str(n) for n in names]
    if len(names) != c:
        raise ShapeError("one name per channel is needed", parameter="channel_names", expected=f"{c} names",
                         got=f"{len(names)} names", fix="pass a name for every channel of the input")
    return names


def axes_list(ax, n: int, parameter: str = "ax") -> list:
    """The caller's axes as a list of ``n`` Axes (one Axes counts when ``n == 1``)."""
    from matplotlib.axes import Axes

    if isinstance(ax, Axes):
        axes = [ax]
    else:
        axes = list(np.asarray(ax, dtype=object).ravel())
    if len(axes) != n or not all(isinstance(a, Axes) for a in axes):
        raise InputError(f"this plot draws {n} panel(s)", parameter=parameter,
                         expected=f"{'an Axes' if n == 1 else f'{n} Axes'}", got=f"{len(axes)} object(s)",
                         fix="pass one Axes per panel, select one channel with channels=[k], or omit ax")
    return axes


def sample_internal(arr, lay, index: int, parameter: str) -> np.ndarray:
    """Sample ``index`` of a batch in the caller's layout ``lay``, as internal ``(C, *spatial)``."""
    a = as_numpy(arr, parameter)
    if a.ndim != lay.ndim:
        raise ShapeError(f"array does not have the rank of layout {lay.name}", parameter=parameter,
                         expected=f"{lay.ndim} axes (batch axis included)", got=f"shape {a.shape}",
                         fix="pass arrays with a batch axis in the layout you named, e.g. x[None]")
    i = check_index(index, a.shape[0])
    return np.asarray(lay.to_internal(a))[i]


_DEFAULT_MAP_LAYOUTS = {1: {3: "NCL", 2: "NL"}, 2: {4: "NCHW", 3: "NHW"}}


def maps_layout(maps, layout, rank: int, func: str, other: str):
    """The layout of a ``{method: maps}`` dict for ``func`` (which draws inputs of ``rank``):
    ``layout``, else the first Attribution's, else a default by the arrays' number of axes."""
    from collections.abc import Mapping

    from ..attribution import Attribution
    from ..layout import Layout, as_layout

    if not isinstance(maps, Mapping) or not maps:
        raise InputError("maps must be a non-empty dict of method name -> map", parameter="maps",
                         expected="{'saliency': array, ...}", got=type(maps).__name__,
                         fix="pass a dict with at least one entry")
    lay = as_layout(layout)
    if lay is None:
        first = next((v for v in maps.values() if isinstance(v, Attribution)), None)
        if first is not None:
            lay = Layout(first.layout)
        else:
            ndim = as_numpy(next(iter(maps.values())), "maps").ndim
            defaults = _DEFAULT_MAP_LAYOUTS[rank]
            lay = Layout(defaults.get(ndim, defaults[max(defaults)]))
    if lay.rank != rank:
        names = {1: "a 1D layout (NL, NLC, NCL)", 2: "a 2D layout (NHW, NHWC, NCHW)"}[rank]
        what = {1: "1D signals", 2: "2D inputs"}[rank]
        raise InputError(f"{func} draws {what}", parameter="layout", expected=names, got=lay.name,
                         fix=f"use {other} for {'images' if rank == 1 else 'signals'}")
    return lay
