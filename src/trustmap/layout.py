"""The one place that knows about ranks, channels-first/last, and resizing to the input's shape.

Inside trustmap every tensor is ``(N, C, *spatial)``. The caller's arrays may be any of

========  =========================  ======
name      shape                      rank
========  =========================  ======
``NL``    (N, L)                     1
``NLC``   (N, L, C)                  1
``NCL``   (N, C, L)                  1
``NHW``   (N, H, W)                  2
``NHWC``  (N, H, W, C)               2
``NCHW``  (N, C, H, W)               2
========  =========================  ======

:func:`resolve_layout` decides which one an array is, given what the model takes, and
:class:`Layout` converts to the internal layout and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import LayoutError, ShapeError

__all__ = ["Layout", "LAYOUTS", "resolve_layout", "spatial_dims", "resize_to", "as_layout"]

# name -> (spatial rank, where the channel axis is: None (absent), "first", "last")
LAYOUTS: dict[str, tuple[int, str | None]] = {
    "NL": (1, None),
    "NLC": (1, "last"),
    "NCL": (1, "first"),
    "NHW": (2, None),
    "NHWC": (2, "last"),
    "NCHW": (2, "first"),
}


@dataclass(frozen=True)
class Layout:
    """A named layout of the caller's arrays; converts to ``(N, C, *spatial)`` and back.

    Parameters
    ----------
    name : str
        One of :data:`LAYOUTS`: ``'NL'``, ``'NLC'``, ``'NCL'`` (signals), ``'NHW'``, ``'NHWC'``,
        ``'NCHW'`` (images).

    Raises
    ------
    LayoutError
        ``name`` is not a known layout.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.layout import Layout
    >>> lay = Layout("NLC")
    >>> lay.to_internal(np.zeros((2, 100, 3))).shape
    (2, 3, 100)
    >>> lay.from_internal(np.zeros((2, 3, 100))).shape
    (2, 100, 3)
    """

    name: str

    def __post_init__(self) -> None:
        if self.name not in LAYOUTS:
            raise LayoutError(
                "unknown layout",
                parameter="layout",
                expected="one of " + ", ".join(LAYOUTS),
                got=self.name,
                fix="pass a layout name from the list, e.g. layout='NLC' for (N, L, C) arrays",
            )

    @property
    def rank(self) -> int:
        return LAYOUTS[self.name][0]

    @property
    def channel_pos(self) -> str | None:
        return LAYOUTS[self.name][1]

    @property
    def ndim(self) -> int:
        return self.rank + (1 if self.channel_pos is None else 2)

    def to_internal(self, x):
        """Caller layout -> ``(N, C, *spatial)``. Works on numpy arrays and torch tensors.

        Raises
        ------
        ShapeError
            ``x`` does not have the layout's number of axes.
        """
        if x.ndim != self.ndim:
            raise ShapeError(
                f"array does not have the rank of layout {self.name}",
                parameter="x",
                expected=f"{self.ndim} axes",
                got=f"shape {tuple(x.shape)}",
                fix="pass arrays with a leading batch axis in the layout you named",
            )
        if self.channel_pos is None:
            return x[:, None]
        if self.channel_pos == "first":
            return x
        return _moveaxis(x, -1, 1)

    def from_internal(self, x):
        """``(N, C, *spatial)`` -> caller layout (the inverse of :meth:`to_internal`).

        Raises
        ------
        ShapeError
            The layout has no channel axis but ``x`` has more than one channel.
        """
        if self.channel_pos is None:
            if x.shape[1] != 1:
                raise ShapeError(
                    f"layout {self.name} has no channel axis but the maps have {x.shape[1]} channels",
                    parameter="layout",
                    expected="a single channel",
                    got=f"shape {tuple(x.shape)}",
                    fix="use a layout with a channel axis",
                )
            return x[:, 0]
        if self.channel_pos == "first":
            return x
        return _moveaxis(x, 1, -1)

    def __str__(self) -> str:
        return self.name


def _moveaxis(x, src: int, dst: int):
    if isinstance(x, torch.Tensor):
        return torch.movedim(x, src, dst)
    return np.moveaxis(x, src, dst)


def as_layout(layout: "str | Layout | None") -> Layout | None:
    """A :class:`Layout` from a name (any case), a Layout (returned as is) or ``None`` (returned as is).

    Parameters
    ----------
    layout : str, Layout or None

    Returns
    -------
    Layout or None

    Raises
    ------
    LayoutError
        ``layout`` is neither a string nor a Layout, or names an unknown layout.

    Examples
    --------
    >>> from trustmap.layout import as_layout
    >>> as_layout("nchw")
    Layout(name='NCHW')
    >>> as_layout(None) is None
    True
    """
    if layout is None or isinstance(layout, Layout):
        return layout
    if isinstance(layout, str):
        return Layout(layout.upper())
    raise LayoutError(
        "layout must be a name",
        parameter="layout",
        expected="a string such as 'NLC' or 'NCHW'",
        got=type(layout).__name__,
        fix="pass layout='NLC' (or another name from trustmap.layout.LAYOUTS)",
    )


def _names(rank: int) -> list[str]:
    return [n for n, (r, _) in LAYOUTS.items() if r == rank]


def resolve_layout(
    shape: Sequence[int],
    *,
    rank: int,
    channels: int,
    spatial: Sequence[int] | None = None,
    layout: "str | Layout | None" = None,
    parameter: str = "x",
) -> Layout:
    """Find the layout of an array of ``shape`` for a model taking ``channels`` and ``spatial``.

    ``spatial`` may be ``None`` (or contain ``None``) when the model accepts any size.

    Parameters
    ----------
    shape : sequence of int
        The caller's array shape, batch axis first.
    rank : int
        The model's spatial rank (1 for signals, 2 for images).
    channels : int
        The model's input channels.
    spatial : sequence of int or None, optional
        The model's spatial size (``None`` entries: any size).
    layout : str or Layout, optional
        The caller's layout, when known; it is then only checked.
    parameter : str, default 'x'
        Name of the array in error messages.

    Returns
    -------
    Layout

    Raises
    ------
    ShapeError
        The shape has the wrong rank, or the channel count or spatial size of ``layout`` does not
        match the model's.
    LayoutError
        The shape fits no layout, or fits two and ``layout`` was not given.

    Examples
    --------
    >>> from trustmap.layout import resolve_layout
    >>> resolve_layout((8, 100, 3), rank=1, channels=3)
    Layout(name='NLC')
    """
    shape = tuple(int(s) for s in shape)
    explicit = as_layout(layout)
    candidates = [explicit] if explicit is not None else [Layout(n) for n in _names(rank)]
    fits = [c for c in candidates if _fits(c, shape, rank, channels, spatial)]
    if len(fits) == 1:
        return fits[0]
    expected_shapes = _describe(rank, channels, spatial)
    if explicit is not None:
        raise ShapeError(
            f"array does not fit layout {explicit.name} for this model",
            parameter=parameter,
            expected=expected_shapes,
            got=f"shape {shape}",
            fix="check the array's axes, or pass the layout the array really has",
        )
    if not fits:
        one_sample = any(_fits(Layout(n), (1, *shape), rank, channels, spatial) for n in _names(rank))
        if one_sample:
            raise ShapeError(
                "array looks like a single sample without a batch axis",
                parameter=parameter,
                expected=expected_shapes,
                got=f"shape {shape}",
                fix="add a batch axis, e.g. x[None]",
            )
        if len(shape) not in (rank + 1, rank + 2):
            fix = "reshape the data to one of the expected shapes"
            raise ShapeError(
                f"array has the wrong rank for a {rank}D model",
                parameter=parameter,
                expected=expected_shapes,
                got=f"shape {shape}",
                fix=fix,
            )
        raise ShapeError(
            "array's channel count or size does not match the model",
            parameter=parameter,
            expected=expected_shapes,
            got=f"shape {shape}",
            fix="pass data with the model's channel count (and length), or pass layout= to say which axis holds channels",
        )
    raise LayoutError(
        "array layout is ambiguous",
        parameter="layout",
        expected="layout= naming one of " + ", ".join(f.name for f in fits),
        got=f"shape {shape}, which fits " + " and ".join(f.name for f in fits),
        fix=f"call again with layout='{fits[0].name}' or layout='{fits[-1].name}'",
    )


def _fits(lay: Layout, shape, rank, channels, spatial) -> bool:
    if lay.rank != rank or len(shape) != lay.ndim:
        return False
    if lay.channel_pos is None:
        c, sp = 1, shape[1:]
    elif lay.channel_pos == "first":
        c, sp = shape[1], shape[2:]
    else:
        c, sp = shape[-1], shape[1:-1]
    if c != channels:
        return False
    if spatial is not None:
        for want, have in zip(spatial, sp):
            if want is not None and int(want) != have:
                return False
    return True


def _describe(rank: int, channels: int, spatial) -> str:
    sp = ", ".join("?" if s is None else str(s) for s in spatial) if spatial is not None else (
        "L" if rank == 1 else "H, W"
    )
    out = []
    if channels == 1:
        out.append(f"(N, {sp})")
    out.append(f"(N, {sp}, {channels})")
    out.append(f"(N, {channels}, {sp})")
    return " or ".join(out)


def spatial_dims(t) -> tuple[int, ...]:
    """The spatial axes of an internal ``(N, C, *spatial)`` array.

    Parameters
    ----------
    t : array or tensor
        Any object with ``ndim``.

    Returns
    -------
    tuple of int
        ``(2, ..., t.ndim - 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.layout import spatial_dims
    >>> spatial_dims(np.zeros((2, 3, 4, 5)))
    (2, 3)
    """
    return tuple(range(2, t.ndim))


def resize_to(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(N, K, *s)`` maps to ``size`` along the spatial axes (linear in 1D, bilinear in 2D).

    Parameters
    ----------
    maps : torch.Tensor
        Internal maps ``(N, K, *s)``.
    size : sequence of int
        Target spatial size, one entry per spatial axis.

    Returns
    -------
    torch.Tensor
        ``maps`` itself when it already has ``size``, else a resized copy (``align_corners=False``).

    Examples
    --------
    >>> import torch
    >>> from trustmap.layout import resize_to
    >>> resize_to(torch.ones(1, 1, 4), (8,)).shape
    torch.Size([1, 1, 8])
    """
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[2:]) == size:
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return torch.nn.functional.interpolate(maps, size=size, mode=mode, align_corners=False)
