"""Small raster tiles for HTML pages: one sample's map drawn straight into pixels (Pillow), with
no axes or text (the page writes titles and scales as HTML text, which stays legible at any size).

Used by the report's per-method galleries: a tile costs a few milliseconds where a matplotlib
panel costs a tenth of a second. ``signal_tile``: one strip per channel, the map as a colour band
behind the black trace (like :func:`trustmap.plot.plot_signal_attribution`); ``image_tile``: the
image in grey with the map as a separate layer whose opacity grows with its magnitude (like
``trustmap.plot._style.overlay``). ``scale_css``: a CSS gradient of a colormap for an HTML colour bar.
"""

from __future__ import annotations

import io

import numpy as np

from ._style import mpl

__all__ = ["signal_tile", "image_tile", "scale_css"]


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _rgba(values: np.ndarray, cmap: str, lo: float, hi: float) -> np.ndarray:
    cm = mpl().colormaps[cmap]
    t = (np.where(np.isfinite(values), values, 0.0) - lo) / ((hi - lo) or 1.0)
    return cm(np.clip(t, 0.0, 1.0))


def signal_tile(x: np.ndarray, m: np.ndarray, cmap: str, lo: float, hi: float, *, width: int = 300,
                row_h: int = 44, gap: int = 3) -> bytes:
    """PNG of a signal ``x (C, L)`` with its map ``m (C, L)`` on the scale ``lo .. hi`` of ``cmap``."""
    from PIL import Image, ImageDraw

    x = np.asarray(x, dtype=np.float64)
    m = np.broadcast_to(np.asarray(m, dtype=np.float64), x.shape)
    c, length = x.shape
    h = c * row_h + (c - 1) * gap
    img = Image.new("RGB", (width, h), "white")
    draw = ImageDraw.Draw(img)
    cols = np.minimum((np.arange(width) * length) // width, length - 1)
    for ch in range(c):
        top = ch * (row_h + gap)
        band = (_rgba(m[ch], cmap, lo, hi)[cols, :3] * 255).astype(np.uint8)
        img.paste(Image.fromarray(np.repeat(band[None], row_h, axis=0)), (0, top))
        tr = x[ch]
        fin = np.isfinite(tr)
        a, b = (float(tr[fin].min()), float(tr[fin].max())) if fin.any() else (0.0, 1.0)
        pad = 0.08 * (b - a) if b > a else 0.5
        ys = top + (row_h - 1) * (1 - (np.where(fin, tr, a) - (a - pad)) / ((b - a) + 2 * pad))
        xs = (np.arange(length) + 0.5) * width / length
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(0, 0, 0), width=2 if length < width / 2 else 1)
    return _png(np.asarray(img))


def image_tile(grey: np.ndarray, heat: np.ndarray, cmap: str, lo: float, hi: float, *, size: int = 200,
               max_alpha: float = 0.9) -> bytes:
    """PNG of an image ``grey (H, W)`` with the map ``heat (H, W)`` as a layer whose opacity grows
    with its magnitude (transparent at 0, ``max_alpha`` at the scale's end)."""
    g = np.asarray(grey, dtype=np.float64)
    fin = np.isfinite(g)
    a, b = (float(g[fin].min()), float(g[fin].max())) if fin.any() else (0.0, 1.0)
    g = (np.where(fin, g, a) - a) / ((b - a) or 1.0)
    heat = np.asarray(heat, dtype=np.float64)
    rgba = _rgba(heat, cmap, lo, hi)
    hv = np.where(np.isfinite(heat), heat, 0.0)
    strength = np.abs(hv) / max(abs(lo), abs(hi)) if lo < 0 < hi else (hv - lo) / ((hi - lo) or 1.0)
    alpha = np.clip(strength, 0.0, 1.0)[..., None] * max_alpha
    out = (1 - alpha) * g[..., None] + alpha * rgba[..., :3]
    hh, ww = out.shape[:2]
    k = max(1, size // max(hh, ww))
    out = np.repeat(np.repeat(out, k, axis=0), k, axis=1)
    return _png((out * 255).round())


def scale_css(cmap: str, steps: int = 11) -> str:
    """``linear-gradient(...)`` of ``cmap`` from its low to its high end (left to right)."""
    cm = mpl().colormaps[cmap]
    stops = []
    for i in range(steps):
        r, g, b, _ = cm(i / (steps - 1))
        stops.append(f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {100 * i / (steps - 1):.0f}%")
    return "linear-gradient(to right, " + ", ".join(stops) + ")"
