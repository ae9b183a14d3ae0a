"""Synthetic classification tasks whose answer is known.

Every sample is ``baseline`` + smooth noise; each class owns a shape (a raised-cosine bump,
a square pulse, a triangle, one sine period; in 2D a blob, a square, a pyramid, a ring) at
its own place, drawn on the informative channels only. An optional distractor (the same
bump in every sample, on every channel) is present but carries no class information.
``Dataset.mask`` marks, for each sample, where its true class's shape is: the region an
explainer should point at. The distractor is never in the mask (its region is in
``per_sample["distractor_mask"]``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, LayoutError
from ..layout import as_layout
from .loaders import Dataset

__all__ = ["make_synthetic", "SHAPES_1D", "SHAPES_2D"]

SHAPES_1D = ("bump", "square", "triangle", "wave")
SHAPES_2D = ("blob", "square", "pyramid", "ring")


# --------------------------------------------------------------------------------------------
# shapes: values on a normalised offset u (|u| < 1 inside the region), and the region itself
# --------------------------------------------------------------------------------------------


def _shape_values(name: str, u: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(values, support) of a shape at normalised offsets ``u`` (one array per spatial axis)."""
    if len(u) == 1:
        a = np.abs(u[0])
        inside = a < 1
        if name == "bump":
            v = 0.5 * (1 + np.cos(np.pi * u[0]))
        elif name == "square":
            v = np.ones_like(a)
        elif name == "triangle":
            v = 1 - a
        elif name == "wave":
            v = np.sin(np.pi * u[0])
        else:  # pragma: no cover - names come from SHAPES_1D
            raise KeyError(name)
        return np.where(inside, v, 0.0), inside
    r = np.sqrt(u[0] ** 2 + u[1] ** 2)
    cheb = np.maximum(np.abs(u[0]), np.abs(u[1]))
    if name == "blob":
        inside = r < 1
        v = 0.5 * (1 + np.cos(np.pi * np.minimum(r, 1)))
    elif name == "square":
        inside = cheb < 1
        v = np.ones_like(r)
    elif name == "pyramid":
        inside = cheb < 1
        v = 1 - cheb
    elif name == "ring":
        inside = (r >= 0.5) & (r < 1)
        v = np.ones_like(r)
    else:  # pragma: no cover
        raise KeyError(name)
    return np.where(inside, v, 0.0), inside


def _draw(name: str, starts: np.ndarray, width: int, spatial: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Shape ``name`` of side ``width`` with its region starting at ``starts`` (n, rank).

    Returns (values, support), each (n, *spatial)."""
    half = width / 2.0
    u = []
    for ax, size in enumerate(spatial):
        centre = starts[:, ax] + (width - 1) / 2.0
        grid = np.arange(size, dtype=np.float64)
        shape = [1] * (1 + len(spatial))
        shape[1 + ax] = size
        cshape = [len(starts)] + [1] * len(spatial)
        u.append((grid.reshape(shape) - centre.reshape(cshape)) / half)
    if len(u) == 2:
        u = list(np.broadcast_arrays(*u))
    return _shape_values(name, u)


def _smooth_noise(rng: np.random.Generator, lead: tuple[int, ...], spatial: tuple[int, ...],
                  corr: float) -> np.ndarray:
    """Stationary Gaussian noise with unit variance and a Gaussian autocorrelation of scale ``corr``."""
    if corr <= 0:
        return rng.standard_normal(lead + spatial)
    pad = int(math.ceil(4 * corr))
    full = tuple(s + 2 * pad for s in spatial)
    axes = tuple(range(len(lead), len(lead) + len(spatial)))
    white = rng.standard_normal(lead + full)
    spec = np.fft.rfftn(white, axes=axes)
    transfer = np.ones(spec.shape[len(lead):])
    var = 1.0
    for i, n in enumerate(full):
        f = np.fft.rfftfreq(n) if i == len(full) - 1 else np.fft.fftfreq(n)
        h = np.exp(-0.5 * (2 * np.pi * f * corr) ** 2)
        var *= float(np.mean(np.exp(-(2 * np.pi * np.fft.fftfreq(n) * corr) ** 2)))  # mean |H|^2 on the full grid
        shape = [1] * len(full)
        shape[i] = len(h)
        transfer = transfer * h.reshape(shape)
    out = np.fft.irfftn(spec * transfer, s=full, axes=axes) / math.sqrt(var)
    crop = (slice(None),) * len(lead) + tuple(slice(pad, pad + s) for s in spatial)
    return out[crop]


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


def _int(value, parameter: str, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError("must be an integer", parameter=parameter, expected="an int", got=value,
                         fix=f"pass {parameter}=<int>")
    if low is not None and value < low:
        raise InputError("too small", parameter=parameter, expected=f">= {low}", got=int(value),
                         fix=f"pass {parameter} >= {low}")
    return int(value)


def _real(value, parameter: str, *, low: float | None = None, high: float | None = None,
          high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise InputError("must be a finite number", parameter=parameter, expected="a float", got=value,
                         fix=f"pass {parameter}=<number>")
    v = float(value)
    if (low is not None and v < low) or (high is not None and (v >= high if high_open else v > high)):
        rng = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{')' if high_open else ']'}"
        raise InputError("out of range", parameter=parameter, expected=f"a value in {rng}", got=v,
                         fix=f"pick {parameter} in {rng}")
    return v


def _point(value, rank: int, parameter: str) -> tuple[int, ...]:
    arr = np.asarray(value, dtype=object).reshape(-1) if not np.isscalar(value) else np.array([value], dtype=object)
    if arr.size != rank or not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                                   for v in arr.tolist()):
        raise InputError("a position must be a number per spatial axis", parameter=parameter,
                         expected="an int" if rank == 1 else "a (row, col) pair", got=value,
                         fix="pass e.g. 60" if rank == 1 else "pass e.g. (10, 20)")
    return tuple(int(round(float(v))) for v in arr.tolist())


def _check_region(start: tuple[int, ...], width: int, jitter: int, spatial: tuple[int, ...], parameter: str,
                  got) -> None:
    for s, n in zip(start, spatial):
        if s - jitter < 0 or s + width + jitter > n:
            raise InputError("the region does not fit inside the input", parameter=parameter,
                             expected=f"regions (width {width}, jitter {jitter}) inside size {spatial}",
                             got=got, fix="move it inward, or lower width/jitter")


def _overlap(a: tuple[int, ...], b: tuple[int, ...], width: int, jitter: int) -> bool:
    return all(abs(x - y) < width + 2 * jitter for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


def make_synthetic(
    n: int,
    *,
    rank: int = 1,
    size: int | Sequence[int] = 128,
    channels: int = 1,
    n_classes: int = 3,
    informative_channels: Sequence[int] = (0,),
    distractor: bool | int | Sequence[int] = True,
    null_class: bool = False,
    label_noise: float = 0.0,
    noise: float = 0.1,
    baseline: float = 0.0,
    positions: Sequence | None = None,
    width: int | None = None,
    amplitude: float = 1.0,
    jitter: int = 0,
    corr_length: float | None = None,
    seed: int = 0,
    layout: str | None = None,
    name: str = "synthetic",
) -> Dataset:
    """A classification task with a known discriminative region per sample.

    Parameters
    ----------
    n
        Number of samples (classes are balanced: ``n // n_classes`` each, the rest spread).
    rank
        1 for signals, 2 for images.
    size
        Length (rank 1) or ``(H, W)`` (rank 2; an int means square).
    channels, informative_channels
        Channel count; the class shape is drawn on ``informative_channels`` only.
    n_classes, null_class
        Number of classes; with ``null_class`` class 0 has no shape (only noise and distractor).
    distractor
        ``True``: a bump (blob in 2D) at 15 % of each axis in every sample, on every channel,
        with an amplitude independent of the class; an int (or (row, col)) places it; ``False``: none.
    label_noise
        Fraction of labels replaced by another class (exactly ``round(label_noise * n)``). The
        mask still marks the true class's region; ``per_sample["y_true"]`` and
        ``per_sample["flipped"]`` record what happened.
    noise, corr_length, baseline
        Standard deviation and correlation length (default ``size/40`` in 1D, ``min(H, W)/16``
        in 2D) of the smooth Gaussian background noise, and the constant level it sits on.
    positions
        One place per class that has a shape (the start of the region is ``position - width // 2``);
        default: evenly spread over 35-85 % of the length (1D) or on a circle around the centre (2D).
    width, amplitude, jitter
        Region side in samples/pixels (default ``size/16`` in 1D, ``min(H, W)/6`` in 2D), shape
        height (times a per-sample factor in [0.75, 1.25]), and a per-sample random shift of
        the class region of up to ``jitter`` along each axis.
    seed
        Everything is drawn from ``np.random.default_rng(seed)``.
    layout
        Output layout; default ``NL`` (one channel) / ``NCL`` in 1D, ``NHW`` / ``NCHW`` in 2D.
    name
        The data set's name (``Dataset.name``).

    Returns
    -------
    Dataset
        ``X`` (float32), ``y``, class names, the ground-truth ``mask`` (the class region, the same
        shape as ``X``) and the generator's arguments in ``meta``.

    Raises
    ------
    InputError
        An argument out of range or of the wrong type, a region that does not fit inside the input,
        or a class region that overlaps the distractor.
    LayoutError
        A ``layout`` of the wrong rank, or without a channel axis when ``channels > 1``.

    Examples
    --------
    >>> from trustmap.datasets import make_synthetic
    >>> ds = make_synthetic(30, size=64, n_classes=3, seed=0)
    >>> ds.X.shape, ds.layout, ds.mask.shape, len(ds.classes)
    ((30, 64), 'NL', (30, 64), 3)
    >>> img = make_synthetic(8, rank=2, size=(24, 24), channels=2, seed=1)
    >>> img.X.shape, img.layout
    ((8, 2, 24, 24), 'NCHW')
    """
    n = _int(n, "n", low=1)
    rank = _int(rank, "rank", low=1)
    if rank not in (1, 2):
        raise InputError("rank must be 1 (signals) or 2 (images)", parameter="rank", expected="1 or 2", got=rank,
                         fix="pass rank=1 or rank=2")
    if rank == 1:
        if not np.isscalar(size):
            sz = list(np.asarray(size).reshape(-1))
            if len(sz) != 1:
                raise InputError("1D data needs one length", parameter="size", expected="an int", got=size,
                                 fix="pass size=128, or rank=2 for images")
            size = sz[0]
        spatial = (_int(size if not isinstance(size, np.generic) else size.item(), "size", low=4),)
    else:
        pair = [size, size] if np.isscalar(size) else list(np.asarray(size).reshape(-1))
        if len(pair) != 2:
            raise InputError("2D data needs (H, W)", parameter="size", expected="an int or a pair", got=size,
                             fix="pass size=(32, 32)")
        spatial = tuple(_int(v.item() if isinstance(v, np.generic) else v, "size", low=4) for v in pair)
    channels = _int(channels, "channels", low=1)
    n_classes = _int(n_classes, "n_classes", low=2)
    label_noise = _real(label_noise, "label_noise", low=0.0, high=1.0, high_open=True)
    noise = _real(noise, "noise", low=0.0)
    baseline = _real(baseline, "baseline")
    amplitude = _real(amplitude, "amplitude")
    jitter = _int(jitter, "jitter", low=0)
    seed = _int(seed, "seed", low=0)
    inf = sorted({_int(c, "informative_channels") for c in np.asarray(informative_channels, dtype=object).reshape(-1)})
    if not inf or inf[0] < 0 or inf[-1] >= channels:
        raise InputError("informative channels must be channel indices", parameter="informative_channels",
                         expected=f"a non-empty subset of 0..{channels - 1}", got=informative_channels,
                         fix="pass e.g. informative_channels=(0,)")
    short = min(spatial)
    corr = (spatial[0] / 40.0 if rank == 1 else short / 16.0) if corr_length is None else \
        _real(corr_length, "corr_length", low=0.0)

    # classes with a region: 0..K-1, or 1..K-1 with a null class
    region_classes = list(range(1, n_classes)) if null_class else list(range(n_classes))
    n_regions = len(region_classes)
    if width is None:
        width = max(3, int(round(spatial[0] / 16.0))) if rank == 1 else max(3, int(round(short / 6.0)))
        if rank == 1 and positions is None:
            width = max(2, min(width, int(0.5 * spatial[0] / n_regions) - 2 * jitter))
    width = _int(width, "width", low=2)
    shapes = SHAPES_1D if rank == 1 else SHAPES_2D

    # places: starts of each class's region, and of the distractor
    if positions is None:
        if rank == 1:
            L = spatial[0]
            centres = [(int(round(L * (0.35 + 0.5 * (j + 0.5) / n_regions))),) for j in range(n_regions)]
        else:
            H, W = spatial
            rad = 0.28 * short
            centres = [(int(round((H - 1) / 2 + rad * math.sin(math.radians(-90 + 360 * j / n_regions)))),
                        int(round((W - 1) / 2 + rad * math.cos(math.radians(-90 + 360 * j / n_regions)))))
                       for j in range(n_regions)]
    else:
        plist = list(positions) if not isinstance(positions, (str, bytes)) else None
        if plist is None or len(plist) not in (n_regions, n_classes):
            raise InputError("one position per class with a region", parameter="positions",
                             expected=f"{n_regions} positions" + (" (classes 1..K-1; class 0 is the null class)"
                                                                  if null_class else ""),
                             got=positions, fix="pass a list with one place per class")
        if len(plist) == n_classes and null_class:
            plist = plist[1:]
        centres = [_point(v, rank, "positions") for v in plist]
    starts = [tuple(c - width // 2 for c in ctr) for ctr in centres]
    for k, st in zip(region_classes, starts):
        _check_region(st, width, jitter, spatial, "positions", f"class {k} at {centres[region_classes.index(k)]}")

    d_start = None
    d_centre = None
    if distractor is not False and distractor is not None:
        if distractor is True:
            d_centre = tuple(int(round(0.15 * s)) for s in spatial)
        else:
            d_centre = _point(distractor, rank, "distractor")
        d_start = tuple(c - width // 2 for c in d_centre)
        _check_region(d_start, width, 0, spatial, "distractor", d_centre)
        for k, st in zip(region_classes, starts):
            if _overlap(st, d_start, width, jitter):
                raise InputError("a class region overlaps the distractor", parameter="positions",
                                 expected="class regions apart from the distractor",
                                 got=f"class {k} at {centres[region_classes.index(k)]}, distractor at {d_centre}",
                                 fix="move the class or the distractor (distractor=<place>)")

    lay = as_layout(layout)
    if lay is None:
        lay = as_layout(("NL" if channels == 1 else "NCL") if rank == 1 else ("NHW" if channels == 1 else "NCHW"))
    if lay.rank != rank:
        raise LayoutError("layout does not match the rank", parameter="layout",
                          expected=f"a {rank}D layout", got=lay.name, fix="pass e.g. 'NCL' (1D) or 'NCHW' (2D)")
    if lay.channel_pos is None and channels != 1:
        raise LayoutError("layout has no channel axis but channels > 1", parameter="layout",
                          expected="a layout with channels", got=lay.name, fix="pass 'NCL'/'NLC' or 'NCHW'/'NHWC'")

    # -- draw -----------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    y_true = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    amp = amplitude * rng.uniform(0.75, 1.25, size=n)
    d_amp = amplitude * rng.uniform(0.75, 1.25, size=n)
    shift = rng.integers(-jitter, jitter + 1, size=(n, rank)) if jitter else np.zeros((n, rank), dtype=np.int64)
    background = _smooth_noise(rng, (n, channels), spatial, corr)
    m_flip = int(round(label_noise * n))
    flip_idx = rng.choice(n, size=m_flip, replace=False) if m_flip else np.zeros(0, dtype=np.int64)
    y = y_true.copy()
    y[flip_idx] = (y_true[flip_idx] + rng.integers(1, n_classes, size=m_flip)) % n_classes
    flipped = np.zeros(n, dtype=bool)
    flipped[flip_idx] = True

    X = baseline + noise * background
    mask = np.zeros((n, channels) + spatial, dtype=bool)
    regions: list[dict[str, Any]] = []
    for j, k in enumerate(region_classes):
        shape = shapes[j % len(shapes)]
        sign = -1.0 if (j // len(shapes)) % 2 else 1.0
        regions.append({"class": k, "shape": shape, "sign": sign, "position": list(centres[j]),
                        "start": list(starts[j]), "width": width})
        idx = np.flatnonzero(y_true == k)
        if idx.size == 0:
            continue
        st = np.asarray(starts[j])[None, :] + shift[idx]
        vals, support = _draw(shape, st, width, spatial)
        add = (sign * amp[idx]).reshape((-1,) + (1,) * rank) * vals
        for c in inf:
            X[idx, c] += add
            mask[idx, c] = support
    d_mask = np.zeros_like(mask)
    if d_start is not None:
        vals, support = _draw(shapes[0], np.asarray(d_start)[None, :], width, spatial)
        X += d_amp.reshape((-1,) + (1,) * (rank + 1)) * vals[:, None]
        d_mask[:] = support[:, None]

    classes = []
    for k in range(n_classes):
        if null_class and k == 0:
            classes.append("none")
            continue
        r = regions[region_classes.index(k)]
        place = str(r["position"][0]) if rank == 1 else "({},{})".format(*r["position"])
        classes.append(f"{'-' if r['sign'] < 0 else ''}{r['shape']}@{place}")

    meta = {
        "source": "trustmap.data.make_synthetic",
        "seed": seed,
        "params": {"n": n, "rank": rank, "size": list(spatial), "channels": channels, "n_classes": n_classes,
                   "informative_channels": inf, "null_class": bool(null_class), "label_noise": label_noise,
                   "noise": noise, "corr_length": corr, "baseline": baseline, "width": width,
                   "amplitude": amplitude, "jitter": jitter},
        "regions": regions,
        "distractor": None if d_start is None else {"shape": shapes[0], "position": list(d_centre),
                                                    "start": list(d_start), "width": width, "channels": "all"},
        "n_flipped": m_flip,
    }
    per_sample = {"y_true": y_true, "flipped": flipped, "shift": shift.astype(np.int64),
                  "amplitude": amp.astype(np.float32),
                  "distractor_mask": np.ascontiguousarray(lay.from_internal(d_mask))}
    return Dataset(np.ascontiguousarray(lay.from_internal(X.astype(np.float32))), y, lay.name, classes,
                   np.ascontiguousarray(lay.from_internal(mask)), name, meta, per_sample)
