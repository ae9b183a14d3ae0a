"""Figures: attribution maps (signals and images) and model evaluation.

Every function returns a :class:`matplotlib.figure.Figure` and never shows it; save it with
``fig.savefig(path)`` or let Jupyter display it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError, ShapeError
from ..layout import Layout
from ._style import as_numpy, check_index
from .gallery import plot_class_average, plot_gallery, plot_method_grid, plot_metric_comparison, select_gallery
from .image import plot_image_attribution, plot_image_maps
from .model import plot_class_accuracy, plot_confusion, plot_model_report, plot_roc, plot_training_curves
from .signal import plot_signal_attribution, plot_signal_maps

__all__ = ["plot_attribution", "plot_signal_attribution", "plot_signal_maps", "plot_image_attribution",
           "plot_image_maps", "plot_training_curves", "plot_roc", "plot_confusion", "plot_class_accuracy",
           "plot_model_report", "select_gallery", "plot_gallery", "plot_method_grid", "plot_class_average", "plot_metric_comparison"]


def plot_attribution(attribution, x=None, *, index: int = 0, channels: int | Sequence[int] | None = None,
                     cmap: str | None = None, ax=None, vmax: float | None = None, alpha: float = 0.85,
                     channel_names: Sequence[str] | None = None, class_names: Sequence[str] | None = None):
    """Draw one sample of an :class:`~trustmap.Attribution`; returns a Figure.

    Signals: one row per channel, the trace in black over its heatmap band, a shared colour
    scale. Images: the image in grey with the heatmap overlaid (one panel per channel when the
    map differs between channels). Signed maps use a diverging scale centred on zero.

    Parameters
    ----------
    attribution : Attribution
    x : array, optional
        The input the maps were computed on, in the attribution's layout (the whole batch, or
        the one sample without its batch axis).
    index : int
        Which sample to draw.
    channels : int or list of int, optional
        Channels to draw (default: all).
    cmap : str, optional
        Colour map (default: 'RdBu_r' for signed maps, 'Reds' for signals, 'inferno' for images).
    ax : Axes or list of Axes, optional
        Draw into these (one per row / panel) instead of a new figure.
    vmax : float, optional
        Upper end of the colour scale (default: the largest absolute value drawn).
    alpha : float
        Opacity of an image overlay.
    channel_names, class_names : optional
        Labels for the channel rows and for the target in the title.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    InputError
        An ``index`` or channel out of range, or ``x`` whose shape does not match the maps.
    DependencyError
        matplotlib is not installed (``pip install 'trustmap[plot]'``).

    Examples
    --------
    >>> att = trustmap.explain(model, X, method="gradcam", per_channel=True)
    >>> fig = trustmap.plot.plot_attribution(att, X, index=0, channel_names=["I", "II", "III"])
    >>> fig.savefig("gradcam.png")
    """
    from ..attribution import Attribution

    if not isinstance(attribution, Attribution):
        raise InputError("plot_attribution draws an Attribution", parameter="attribution",
                         expected="a trustmap.Attribution", got=type(attribution).__name__,
                         fix="for raw arrays use plot_signal_attribution / plot_image_attribution")
    lay = Layout(attribution.layout)
    maps = attribution.internal()
    i = check_index(index, maps.shape[0])
    sample_map = maps[i]
    xs = None
    if x is not None:
        xa = as_numpy(x, "x")
        if xa.ndim == lay.ndim:
            if xa.shape[0] != maps.shape[0]:
                raise ShapeError("input batch and attribution differ in size", parameter="x",
                                 expected=f"{maps.shape[0]} samples (or one sample without its batch axis)",
                                 got=f"shape {xa.shape}", fix="pass the input the attribution was computed on")
            xs = np.asarray(lay.to_internal(xa))[i]
        elif xa.ndim == lay.ndim - 1:
            xs = np.asarray(lay.to_internal(xa[None]))[0]
        else:
            raise ShapeError(f"input does not have the rank of layout {lay.name}", parameter="x",
                             expected=f"{lay.ndim} axes (a batch) or {lay.ndim - 1} (one sample)",
                             got=f"shape {xa.shape}", fix="pass the input the attribution was computed on")
    target = int(attribution.targets[i])
    tname = f"{target} ({class_names[target]})" if class_names is not None and 0 <= target < len(class_names) \
        else str(target)
    title = f"{attribution.method}: target {tname}, sample {i}"
    if lay.rank == 1:
        return plot_signal_attribution(sample_map, xs, channels=channels, channel_names=channel_names, cmap=cmap,
                                       vmax=vmax, title=title, ax=ax)
    return plot_image_attribution(sample_map, xs, channels=channels, channel_names=channel_names, cmap=cmap,
                                  vmax=vmax, alpha=alpha, title=title, ax=ax)
