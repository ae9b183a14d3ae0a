"""Attribution maps of 2D inputs: the image in grey with the heatmap overlaid."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError, ShapeError
from ..layout import Layout
from ._style import (maps_layout, IMAGE_CMAP, as_numpy, attribution_scale, axes_list, channel_labels,
                     new_figure, overlay, scalar_mappable, sample_internal, select_channels)

__all__ = ["plot_image_attribution", "plot_image_maps"]

X_LABEL, Y_LABEL = "width / pixel", "height / pixel"


def _panels(maps: np.ndarray, x: np.ndarray | None, channels, names: list[str]):
    """``[(label, grey image or None, heat)]``: one panel per channel when the map differs
    between channels, else a single panel with the channel mean of ``x`` in grey."""
    c = maps.shape[0]
    per_channel = c > 1 and not np.allclose(maps, maps[:1])
    if per_channel:
        return [(names[ch], None if x is None else x[ch], maps[ch]) for ch in select_channels(channels, c)]
    if x is None:
        grey = None
        label = "all channels" if c > 1 else names[0]
    elif channels is not None:
        chans = select_channels(channels, x.shape[0])
        grey = x[chans].mean(0)
        label = ", ".join(names[ch] for ch in chans) if len(chans) < 4 else f"mean of {len(chans)} channels"
    else:
        grey = x.mean(0)
        label = names[0] if x.shape[0] == 1 else f"mean of {x.shape[0]} channels"
    return [(label, grey, maps[0])]


def _draw(ax, grey: np.ndarray | None, heat: np.ndarray, cmap, norm, alpha: float) -> None:
    if grey is not None:
        overlay(ax, grey, heat, cmap, norm, max_alpha=alpha)
    else:
        ax.imshow(heat, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)


def plot_image_attribution(maps: np.ndarray, x: np.ndarray | None = None, *, channels=None,
                           channel_names: Sequence[str] | None = None, cmap: str | None = None,
                           vmax: float | None = None, alpha: float = 0.85, title: str | None = None, ax=None):
    """One sample's map ``(C, H, W)`` over its input ``(C, H, W)`` (optional) with a colorbar.

    A map that is the same for every channel is drawn once over the channel mean of ``x``;
    otherwise one panel per (selected) channel.

    Parameters
    ----------
    maps : array (C, H, W) or (1, H, W)
        One sample's map.
    x : array (C, H, W), optional
        The sample's image, drawn in grey under the map.
    channels : int or sequence of int, optional
    channel_names : sequence of str, optional
    cmap : str, optional
    vmax : float, optional
        End of the colour scale (default: the map's largest magnitude).
    alpha : float, default 0.85
        Opacity of the map at the end of the scale.
    title : str, optional
    ax : Axes or list of Axes, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeError
        ``maps`` or ``x`` is not ``(C, H, W)``, or their shapes disagree.
    InputError
        A channel out of range, ``alpha`` outside [0, 1], or the wrong number of axes in ``ax``.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_image_attribution
    >>> img = np.random.default_rng(0).random((1, 8, 8))
    >>> fig = plot_image_attribution(img - 0.5, img)
    >>> type(fig).__name__
    'Figure'
    """
    maps = as_numpy(maps, "maps")
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ShapeError("an image map has a channel axis and two spatial axes", parameter="maps",
                         expected="(C, H, W)", got=f"shape {maps.shape}", fix="pass one sample in internal layout")
    if x is not None:
        x = as_numpy(x, "x")
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != maps.shape[1:] or maps.shape[0] not in (1, x.shape[0]):
            raise ShapeError("input and map do not match", parameter="x",
                             expected=f"(C, {maps.shape[1]}, {maps.shape[2]}) with C = {maps.shape[0]}",
                             got=f"shape {x.shape}", fix="pass the input the attribution was computed on")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError("alpha must lie in [0, 1]", parameter="alpha", expected="0 <= alpha <= 1", got=alpha,
                         fix="e.g. alpha=0.5")
    c = maps.shape[0] if x is None else x.shape[0]
    names = channel_labels(channel_names, c)
    panels = _panels(maps, x, channels, names)
    cmap, norm, clabel = attribution_scale(np.stack([p[2] for p in panels]), cmap, IMAGE_CMAP, vmax)

    n = len(panels)
    if ax is None:
        ncols = min(4, n)
        nrows = math.ceil(n / ncols)
        fig = new_figure((0.6 + 3.3 * ncols + 0.8, 0.6 + 3.2 * nrows))
        grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
        axes = list(grid[:n])
        for extra in grid[n:]:
            extra.set_visible(False)
    else:
        axes = axes_list(ax, n)
        fig = axes[0].figure
    for a, (label, grey, heat) in zip(axes, panels):
        _draw(a, grey, heat, cmap, norm, alpha)
        if n > 1:
            a.set_title(label, fontsize="medium")
    fig.colorbar(scalar_mappable(cmap, norm), ax=axes, label=clabel, shrink=0.85)
    if title:
        if ax is None:
            fig.suptitle(title)
        else:
            axes[0].set_title(title if n == 1 else f"{title}\n{axes[0].get_title()}")
    return fig


def plot_image_maps(x, maps: Mapping[str, Any], *, layout: str | None = None, index: int = 0,
                    cmap: str | None = None, alpha: float = 0.85, shared_scale: bool = False,
                    title: str | None = None):
    """Several methods' maps of one image side by side (a column per method, each over the
    image in grey, each with its colorbar unless ``shared_scale``). Maps with several channels
    are summed over channels for this overview.

    ``maps`` values are batches in ``layout`` or :class:`~trustmap.Attribution` objects; the
    default layout is that of the first Attribution, else ``'NCHW'`` (4-D) or ``'NHW'`` (3-D).

    Parameters
    ----------
    x : array or None
        The image batch in ``layout``.
    maps : dict name -> array or Attribution
    layout : str, optional
    index : int, default 0
        Which sample to draw.
    cmap : str, optional
    alpha : float, default 0.85
    shared_scale : bool, default False
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeError
        A map's shape is not ``x``'s.
    InputError
        ``index`` out of range or ``maps`` empty.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_image_maps
    >>> x = np.random.default_rng(0).random((2, 1, 8, 8))
    >>> fig = plot_image_maps(x, {"a": x, "b": -x})
    >>> type(fig).__name__
    'Figure'
    """
    from ..attribution import Attribution

    lay = maps_layout(maps, layout, 2, "plot_image_maps", "plot_signal_maps")
    cols = {}
    for name, m in maps.items():
        lay_m = Layout(m.layout) if isinstance(m, Attribution) else lay
        v = sample_internal(m.maps if isinstance(m, Attribution) else m, lay_m, index, f"maps[{name!r}]")
        cols[str(name)] = v.sum(0) if v.shape[0] > 1 and not np.allclose(v, v[:1]) else v[0]
    grey = None if x is None else sample_internal(x, lay, index, "x").mean(0)
    sizes = {v.shape for v in cols.values()} | ({grey.shape} if grey is not None else set())
    if len(sizes) != 1:
        raise ShapeError("maps and input differ in size", parameter="maps", expected="one (H, W) for all",
                         got=sorted(sizes), fix="pass maps computed on the same input")
    names = list(cols)
    fig = new_figure((max(4.0, 3.4 * len(names)), 4.4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    shared = attribution_scale(np.stack(list(cols.values())), cmap, IMAGE_CMAP) if shared_scale else None
    for a, name in zip(axes, names):
        cm, norm, clabel = shared or attribution_scale(cols[name], cmap, IMAGE_CMAP)
        _draw(a, grey, cols[name], cm, norm, alpha)
        a.set_title(name)
        if not shared_scale:
            fig.colorbar(scalar_mappable(cm, norm), ax=a, location="bottom", label=clabel, shrink=0.85)
    if shared_scale:
        fig.colorbar(scalar_mappable(shared[0], shared[1]), ax=list(axes), label=shared[2], shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig
