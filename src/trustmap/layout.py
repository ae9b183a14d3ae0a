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
    """A named layout of the caller's arrays; converts to ``(N, C, *spatial)`` and back."""

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
        """Caller layout -> ``(N, C, *spatial)``. Works on numpy arrays and torch tensors."""
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
        """``(N, C, *spatial)`` -> caller layout (the inverse of :meth:`to_internal`)."""
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
    Raises :class:`LayoutError` when the shape fits no layout, or fits two and
    ``layout`` was not given.
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
    """The spatial axes of an internal ``(N, C, *spatial)`` array."""
    return tuple(range(2, t.ndim))


def resize_to(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(N, K, *s)`` maps to ``size`` along the spatial axes (linear in 1D, bilinear in 2D)."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[2:]) == size:
        return maps
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return torch.nn.functional.interpolate(maps, size=size, mode=mode, align_corners=False)
