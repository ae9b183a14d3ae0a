"""Attribution maps of 1D signals: the trace with its heatmap as a coloured band behind it,
one row per channel."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ShapeError
from ..layout import Layout
from ._style import (maps_layout, SIGNAL_CMAP, TIME_LABEL, as_numpy, attribution_scale, axes_list, channel_labels,
                     new_figure, scalar_mappable, sample_internal, select_channels)

__all__ = ["plot_signal_attribution", "plot_signal_maps"]


def _draw_row(ax, m: np.ndarray, trace: np.ndarray | None, cmap, norm) -> Any:
    """One channel: the map as a band filling the axes, the trace on top."""
    length = m.shape[-1]
    extent_x = (-0.5, length - 0.5)
    if trace is not None:
        lo, hi = float(np.min(trace)), float(np.max(trace))
        pad = 0.08 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
        y0, y1 = lo - pad, hi + pad
    else:
        y0, y1 = 0.0, 1.0
    im = ax.imshow(m[None, :], aspect="auto", extent=(*extent_x, y0, y1), origin="lower", cmap=cmap, norm=norm,
                   interpolation="nearest", zorder=0)
    if trace is not None:
        ax.plot(np.arange(length), trace, color="black", lw=1.0, zorder=2)
    else:
        ax.set_yticks([])
    ax.set_xlim(*extent_x)
    ax.set_ylim(y0, y1)
    return im


def plot_signal_attribution(maps: np.ndarray, x: np.ndarray | None = None, *, channels=None,
                            channel_names: Sequence[str] | None = None, cmap: str | None = None,
                            vmax: float | None = None, title: str | None = None, ax=None):
    """One sample's map ``(C, L)`` (and its input ``(C, L)``, optional) as rows of bands.

    A map with one channel is drawn behind every channel of ``x``. The colour scale is shared
    by all rows and shown by one colorbar.

    Parameters
    ----------
    maps : array (C, L) or (1, L)
        One sample's map.
    x : array (C, L), optional
        The sample's input, drawn as a trace over each band.
    channels : int or sequence of int, optional
        Channels to draw (all by default).
    channel_names : sequence of str, optional
    cmap : str, optional
        Colormap (default: diverging for signed maps, sequential otherwise).
    vmax : float, optional
        End of the colour scale (default: the map's largest magnitude).
    title : str, optional
    ax : Axes or list of Axes, optional
        Draw into these (one per channel) instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeError
        ``maps`` or ``x`` is not ``(C, L)``, or their shapes disagree.
    InputError
        A channel index out of range, or the wrong number of axes in ``ax``.
    DependencyError
        matplotlib is not installed (the ``plot`` extra).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_signal_attribution
    >>> x = np.sin(np.linspace(0, 6, 50))[None]
    >>> fig = plot_signal_attribution(np.abs(x), x, title="one channel")
    >>> type(fig).__name__
    'Figure'
    """
    maps = as_numpy(maps, "maps")
    if maps.ndim == 1:
        maps = maps[None]
    if maps.ndim != 2:
        raise ShapeError("a signal map has one channel axis and one time axis", parameter="maps",
                         expected="(C, L)", got=f"shape {maps.shape}", fix="pass one sample in internal layout")
    if x is not None:
        x = as_numpy(x, "x")
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[-1] != maps.shape[-1] or maps.shape[0] not in (1, x.shape[0]):
            raise ShapeError("input and map do not match", parameter="x",
                             expected=f"(C, {maps.shape[-1]}) with C = {maps.shape[0]}"
                                      + (" (or any C: the map has one channel)" if maps.shape[0] == 1 else ""),
                             got=f"shape {x.shape}", fix="pass the input the attribution was computed on")
        if maps.shape[0] == 1 and x.shape[0] > 1:
            maps = np.broadcast_to(maps, x.shape)
    c = maps.shape[0]
    chans = select_channels(channels, c)
    labels = channel_labels(channel_names, c)
    cmap, norm, clabel = attribution_scale(maps[chans], cmap, SIGNAL_CMAP, vmax)

    if ax is None:
        fig = new_figure((10.0, 0.9 + 1.25 * len(chans)))
        axes = list(fig.subplots(len(chans), 1, sharex=True, squeeze=False)[:, 0])
    else:
        axes = axes_list(ax, len(chans))
        fig = axes[0].figure
    for a, ch in zip(axes, chans):
        _draw_row(a, maps[ch], None if x is None else x[ch], cmap, norm)
        a.set_ylabel(labels[ch])
    axes[-1].set_xlabel(TIME_LABEL)
    shrink = 1.0 if len(chans) <= 3 else max(0.3, 3.0 / len(chans))
    fig.colorbar(scalar_mappable(cmap, norm), ax=axes, label=clabel, shrink=shrink)
    if title:
        if ax is None:
            fig.suptitle(title)
        else:
            axes[0].set_title(title)
    return fig


def plot_signal_maps(x, maps: Mapping[str, Any], *, layout: str | None = None, index: int = 0, channels=None,
                     channel_names: Sequence[str] | None = None, cmap: str | None = None,
                     shared_scale: bool = False, title: str | None = None):
    """Several methods' maps of one signal side by side: a column per method, a row per channel.

    Parameters
    ----------
    x : array, optional
        The input batch in ``layout`` (``None``: the maps alone).
    maps : dict name -> array or Attribution
        Arrays are batches in ``layout``; an :class:`~trustmap.Attribution` uses its own layout.
    layout : str, optional
        Layout of ``x`` and of the array maps. Default: the layout of the first Attribution in
        ``maps``, else ``'NCL'`` for 3-D arrays and ``'NL'`` for 2-D arrays.
    index : int
        Which sample of the batch to draw.
    shared_scale : bool
        One colour scale for all methods (only meaningful when their units agree); by default
        every column has its own scale and colorbar.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeError
        ``x`` or a map has the wrong number of axes, or a map's shape is not ``x``'s.
    InputError
        ``index`` or a channel out of range, or ``maps`` empty.
    DependencyError
        matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.plot import plot_signal_maps
    >>> x = np.random.default_rng(0).normal(size=(2, 1, 40))
    >>> fig = plot_signal_maps(x, {"saliency": np.abs(x), "input": x}, index=1)
    >>> len(fig.axes) >= 2
    True
    """
    from ..attribution import Attribution

    lay = maps_layout(maps, layout, 1, "plot_signal_maps", "plot_image_maps")
    cols: dict[str, np.ndarray] = {}
    for name, m in maps.items():
        if isinstance(m, Attribution):
            lay_m = Layout(m.layout)
            cols[str(name)] = sample_internal(m.maps, lay_m, index, f"maps[{name!r}]")
        else:
            cols[str(name)] = sample_internal(m, lay, index, f"maps[{name!r}]")
    xs = None if x is None else sample_internal(x, lay, index, "x")
    length = {v.shape[-1] for v in cols.values()} | ({xs.shape[-1]} if xs is not None else set())
    if len(length) != 1:
        raise ShapeError("maps and input differ in length", parameter="maps", expected="one length L for all",
                         got=sorted(length), fix="pass maps computed on the same input")
    c = max([v.shape[0] for v in cols.values()] + ([xs.shape[0]] if xs is not None else []))
    for name, v in cols.items():
        if v.shape[0] not in (1, c):
            raise ShapeError("a map's channel count does not match", parameter=f"maps[{name!r}]",
                             expected=f"1 or {c} channels", got=v.shape[0], fix="pass maps of the same input")
        cols[name] = np.broadcast_to(v, (c, v.shape[-1]))
    if xs is not None and xs.shape[0] != c:
        raise ShapeError("input and maps differ in channels", parameter="x", expected=f"{c} channels",
                         got=xs.shape[0], fix="pass the input the maps were computed on")
    chans = select_channels(channels, c)
    labels = channel_labels(channel_names, c)

    names = list(cols)
    fig = new_figure((max(4.0, 3.6 * len(names)), 1.6 + 1.15 * len(chans)))
    grid = fig.subplots(len(chans), len(names), sharex=True, squeeze=False)
    shared = attribution_scale(np.concatenate([cols[n][chans].ravel() for n in names]), cmap, SIGNAL_CMAP) \
        if shared_scale else None
    for j, name in enumerate(names):
        cm, norm, clabel = shared or attribution_scale(cols[name][chans], cmap, SIGNAL_CMAP)
        for i, ch in enumerate(chans):
            a = grid[i, j]
            _draw_row(a, cols[name][ch], None if xs is None else xs[ch], cm, norm)
            if j == 0:
                a.set_ylabel(labels[ch])
        grid[0, j].set_title(name)
        grid[-1, j].set_xlabel(TIME_LABEL)
        if not shared_scale:
            fig.colorbar(scalar_mappable(cm, norm), ax=list(grid[:, j]), location="bottom", label=clabel,
                         shrink=0.8, aspect=30)
    if shared_scale:
        fig.colorbar(scalar_mappable(shared[0], shared[1]), ax=list(grid.ravel()), label=shared[2])
    if title:
        fig.suptitle(title)
    return fig
