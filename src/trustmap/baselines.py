"""The one baseline specification: what a removed, occluded or "absent" input entry becomes.

Integrated gradients, occlusion, LIME, KernelSHAP and every masking metric
(:mod:`trustmap.metrics.masking`) resolve their ``baseline=`` here, so a name means the same
thing everywhere:

``'zero'``
    All zeros.
``'mean'``
    **Each sample's own** per-channel mean over its positions (a flat signal / a flat image per
    channel). It depends on the sample only, never on the batch it is explained in.
``'dataset_mean'``
    Each channel's mean over a reference set: ``reference=`` (e.g. training inputs) when given,
    else over the batch being explained or scored (then it depends on the batch: pass
    ``reference=`` for results that do not).
``'blur'``
    The sample blurred by a Gaussian along its spatial axes (:func:`gaussian_blur`, reflect
    padding); ``blur_sigma`` is the standard deviation as a **fraction of each axis length**
    (default 0.1), or a tuple of fractions, one per spatial axis.
``'noise'``
    Gaussian noise with each channel's mean and standard deviation of the sample, drawn from
    ``seed`` and the sample's own values (the same draws alone or in any batch).
a number
    A constant input; it must be finite (NaN or Inf is refused).
an array or tensor
    Anything that broadcasts to the input, as Captum takes baselines: one sample or the whole
    batch, in the caller's layout or the internal ``(C, *spatial)`` order; ``(C,)`` is one value
    per channel. Accepted shapes (each with an optional leading axis of ``N`` or ``1``):
    ``(C, *spatial)``, ``(*spatial, C)``, ``(*spatial)`` (every channel), ``(C,)``, and any shape
    that broadcasts (NumPy rules) to the caller's array or to ``(N, C, *spatial)``. Values must be
    finite.

Errors name ``baseline`` (an :class:`~trustmap.errors.InputError`, or a
:class:`~trustmap.errors.ShapeError` for an array that does not fit).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .errors import InputError, ShapeError

__all__ = ["BASELINES", "check_baseline", "resolve_baseline", "describe_baseline", "gaussian_blur",
           "sample_seeds", "sample_normal", "is_number"]

#: the baseline names, each with one meaning (see the module docstring)
BASELINES = ("zero", "mean", "dataset_mean", "blur", "noise")


def is_number(v: Any) -> bool:
    """A real scalar (Python or NumPy number, not bool).

    Parameters
    ----------
    v : object

    Returns
    -------
    bool

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.baselines import is_number
    >>> is_number(3), is_number(np.float32(0.5)), is_number(True), is_number("3")
    (True, True, False, False)
    """
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _expected(names: Sequence[str]) -> str:
    return "one of " + ", ".join(map(repr, names)) + ", a finite number, or an array that broadcasts to the input"


def check_baseline(baseline, names: Sequence[str] = BASELINES, parameter: str = "baseline") -> None:
    """Validate a baseline specification before any work (a name among ``names``, a finite number,
    or a numeric, finite array or tensor); the shape is checked against the input by
    :func:`resolve_baseline`.

    Parameters
    ----------
    baseline : str, number, array or tensor
        The specification to check.
    names : sequence of str, default BASELINES
        The names the caller accepts.
    parameter : str, default 'baseline'
        Name used in error messages.

    Returns
    -------
    None

    Raises
    ------
    InputError
        An unknown name, a non-finite number, a non-numeric or non-finite array, or another type.
    ShapeError
        An empty array.

    Examples
    --------
    >>> from trustmap.baselines import check_baseline
    >>> check_baseline("mean")
    >>> check_baseline("blurry")
    Traceback (most recent call last):
    ...
    trustmap.errors.InputError: baseline: unknown baseline; ... fix: did you mean 'blur'?
    """
    if isinstance(baseline, str):
        if baseline not in names:
            import difflib

            close = difflib.get_close_matches(baseline, list(names), n=2)
            raise InputError("unknown baseline", parameter=parameter, expected=_expected(names), got=baseline,
                             fix=("did you mean " + " or ".join(map(repr, close)) + "?") if close
                             else f"pass {parameter}='zero'")
        return
    if isinstance(baseline, bool) or baseline is None:
        raise InputError("invalid baseline", parameter=parameter, expected=_expected(names), got=baseline,
                         fix=f"pass {parameter}='zero'")
    if is_number(baseline):
        if not math.isfinite(float(baseline)):
            raise InputError("baseline must be finite", parameter=parameter, expected="a finite number",
                             got=baseline, fix=f"pass e.g. {parameter}=0.0")
        return
    _as_array(baseline, names, parameter)


def _as_array(baseline, names: Sequence[str], parameter: str) -> np.ndarray:
    if isinstance(baseline, torch.Tensor):
        if baseline.is_complex() or baseline.dtype == torch.bool:
            raise InputError("invalid baseline", parameter=parameter, expected=_expected(names),
                             got=f"a {baseline.dtype} tensor", fix="pass a float tensor")
        a = baseline.detach().cpu().to(torch.float64).numpy()
    else:
        try:
            a = np.asarray(baseline)
        except ValueError as exc:  # ragged lists
            raise InputError("invalid baseline", parameter=parameter, expected=_expected(names),
                             got="a ragged sequence", fix="pass a rectangular array") from exc
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise InputError("invalid baseline", parameter=parameter, expected=_expected(names),
                             got=type(baseline).__name__ if a.dtype == object else f"dtype {a.dtype}",
                             fix=f"pass {parameter}='zero', a number or a float array")
        a = a.astype(np.float64)
    if a.size == 0:
        raise ShapeError("baseline array is empty", parameter=parameter, expected="values for the input's entries",
                         got=f"shape {a.shape}", fix="pass one sample's worth of baseline values")
    if not np.isfinite(a).all():
        raise InputError("baseline has NaN or Inf values", parameter=parameter, expected="finite values",
                         got=f"{int((~np.isfinite(a)).sum())} non-finite value(s)",
                         fix="pass a finite baseline (e.g. np.nan_to_num(baseline))")
    return a


def _caller_shape(internal: tuple[int, ...], layout) -> tuple[int, ...]:
    """The caller's array shape for an internal shape (computed on a zero-stride view: no allocation)."""
    return tuple(np.shape(layout.from_internal(np.broadcast_to(np.zeros((), np.float32), internal))))


def _fit_array(a: np.ndarray, t: torch.Tensor, layout, parameter: str) -> np.ndarray:
    """The array brought to an internal shape that broadcasts to ``t`` ``(N, C, *spatial)``."""
    n, c, sp = t.shape[0], t.shape[1], tuple(t.shape[2:])
    internal = tuple(t.shape)
    if a.ndim == 0:
        return a.reshape((1,) * t.ndim)
    if a.shape == (c,):  # one value per channel
        return a.reshape((1, c) + (1,) * len(sp))
    if layout is not None:  # the caller's layout: anything that broadcasts to the caller's array
        caller = _caller_shape(internal, layout)
        if a.ndim <= len(caller):
            padded = a.reshape((1,) * (len(caller) - a.ndim) + a.shape)
            try:
                fits = np.broadcast_shapes(padded.shape, caller) == caller
            except ValueError:
                fits = False
            if fits:  # size-1 axes move like the caller's axes; nothing is expanded
                return np.asarray(layout.to_internal(padded))
    for lead in ((), (1,), (n,)):
        b = a if lead else a[None]
        if a.shape == lead + (*sp, c) and (*sp, c) != (c, *sp):  # one sample channels-last
            return np.moveaxis(b, -1, 1)
        if lead and a.shape == lead + sp:  # one map per sample, the same for every channel
            return b[:, None]
    try:
        if np.broadcast_shapes(a.shape, internal) == internal:
            return a.reshape((1,) * (t.ndim - a.ndim) + a.shape)
    except ValueError:
        pass
    caller_txt = ""
    if layout is not None:
        caller_txt = f", {_caller_shape(internal, layout)[1:]} (one sample in {layout.name})"
    raise ShapeError("baseline does not match the input's shape (it must broadcast to it)", parameter=parameter,
                     expected=f"a shape that broadcasts to the input: ({c},) per channel, {(c, *sp)}, {(*sp, c)}, "
                              f"{sp}{caller_txt}, optionally with a leading axis of {n}",
                     got=f"shape {a.shape}", fix="pass one sample's worth of baseline values, or one per sample")


def resolve_baseline(t: torch.Tensor, baseline, *, blur_sigma: float | Sequence[float] = 0.1, seed: int = 0,
                     reference=None, layout=None, names: Sequence[str] = BASELINES,
                     parameter: str = "baseline") -> torch.Tensor:
    """The baseline for the internal batch ``t`` ``(N, C, *spatial)``, as a tensor of ``t``'s dtype and
    device that broadcasts to ``t`` (shape ``(N or 1, C or 1, *spatial or 1)``).

    Parameters
    ----------
    t : torch.Tensor
        The internal batch ``(N, C, *spatial)``.
    baseline : str, number, array or tensor
        A name among ``names`` (see the module docstring), a finite number, or an array that
        broadcasts to the input.
    blur_sigma : float or sequence of float, default 0.1
        For ``'blur'``: the Gaussian's sigma as a fraction of each spatial axis' length.
    seed : int, default 0
        For ``'noise'``: mixed with each sample's bytes (see :func:`sample_seeds`).
    reference : array or tensor, optional
        For ``'dataset_mean'``: reference inputs, an internal tensor ``(M, C, *spatial)`` or
        per-channel values ``(C,)``; ``None`` uses ``t``.
    layout : Layout, optional
        The :class:`~trustmap.layout.Layout` of the caller's array, so arrays in the caller's layout
        broadcast like the caller's data.
    names : sequence of str, default BASELINES
        The names accepted.
    parameter : str, default 'baseline'
        Name used in error messages.

    Returns
    -------
    torch.Tensor
        The baseline, broadcastable to ``t``.

    Raises
    ------
    InputError
        An invalid specification (see :func:`check_baseline`) or ``blur_sigma`` not positive.
    ShapeError
        An array that does not broadcast to ``t``, or ``reference`` with another channel count.

    Examples
    --------
    >>> import torch
    >>> from trustmap.baselines import resolve_baseline
    >>> t = torch.arange(6.0).reshape(1, 1, 6)
    >>> resolve_baseline(t, "mean")
    tensor([[[2.5000]]])
    >>> resolve_baseline(t, 0.0)
    tensor([[[0.]]])
    """
    check_baseline(baseline, names, parameter)
    dims = tuple(range(2, t.ndim))
    c = t.shape[1]
    bshape = (1, c) + (1,) * len(dims)
    if isinstance(baseline, str):
        if baseline == "zero":
            return torch.zeros(bshape, dtype=t.dtype, device=t.device)
        if baseline == "mean":
            return t.mean(dims, keepdim=True)
        if baseline == "dataset_mean":
            ref = t if reference is None else torch.as_tensor(reference)
            ref = ref.to(device=t.device, dtype=torch.float64)
            if ref.ndim == 1 and ref.shape[0] == c:
                vals = ref
            elif ref.ndim == t.ndim and ref.shape[1] == c:
                vals = ref.mean((0,) + dims)
            else:
                raise ShapeError("reference data do not match the input", parameter="reference",
                                 expected=f"samples with {c} channel(s) like the input, or ({c},) channel means",
                                 got=f"shape {tuple(ref.shape)}", fix="pass training inputs in the input's layout")
            return vals.to(t.dtype).reshape(bshape)
        if baseline == "blur":
            fr = (blur_sigma,) * len(dims) if is_number(blur_sigma) else tuple(blur_sigma)
            if len(fr) != len(dims) or not all(is_number(f) and float(f) > 0 for f in fr):
                raise InputError("blur_sigma must be positive", parameter="blur_sigma",
                                 expected=f"a number > 0 or {len(dims)} of them (fractions of each axis length)",
                                 got=blur_sigma, fix="e.g. blur_sigma=0.1")
            return gaussian_blur(t, tuple(max(float(f) * s, 1e-12) for f, s in zip(fr, t.shape[2:])))
        # noise: per-channel mean and std of each sample, drawn from the sample's own seed
        seeds = sample_seeds(t, seed)
        z = sample_normal(seeds, np.arange(len(t)), tuple(t.shape[1:]), 1, np.zeros(len(t), dtype=int),
                          t.dtype, t.device)
        return t.mean(dims, keepdim=True) + z * t.std(dims, keepdim=True)
    if is_number(baseline):
        return torch.full(bshape, float(baseline), dtype=t.dtype, device=t.device)
    a = _fit_array(_as_array(baseline, names, parameter), t, layout, parameter)
    return torch.as_tensor(np.ascontiguousarray(a), dtype=t.dtype, device=t.device)


def describe_baseline(baseline) -> Any:
    """A JSON-ready record of a baseline specification (arrays: shape, fingerprint, small values).

    Parameters
    ----------
    baseline : str, number, array, tensor or None

    Returns
    -------
    str, float, dict or None
        A name or ``None`` as is, a number as float, an array as ``{'array_shape', 'sha256',
        'values'}`` (``values`` only up to 64 entries).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.baselines import describe_baseline
    >>> describe_baseline("blur"), describe_baseline(1)
    ('blur', 1.0)
    >>> describe_baseline(np.zeros(2))["values"]
    [0.0, 0.0]
    """
    if isinstance(baseline, str) or baseline is None:
        return baseline
    if is_number(baseline):
        return float(baseline)
    from . import _io

    arr = np.asarray(baseline.detach().cpu() if isinstance(baseline, torch.Tensor) else baseline, dtype=np.float64)
    return {"array_shape": list(arr.shape), "sha256": _io.fingerprint_array(arr),
            "values": arr.tolist() if arr.size <= 64 else None}


# ---- the one Gaussian blur ----------------------------------------------------------------
def gaussian_blur(t: torch.Tensor, sigma: float | Sequence[float]) -> torch.Tensor:
    """Gaussian blur of ``(N, C, *spatial)`` along every spatial axis, separable, reflect padding.

    ``sigma`` is in positions: one number for every axis or one per spatial axis (0 skips an
    axis). The kernel has radius ``round(3 sigma)`` (at least 1), cut to the axis length - 1 and
    renormalized on short axes.

    Parameters
    ----------
    t : torch.Tensor
        Internal batch ``(N, C, *spatial)``.
    sigma : float or sequence of float
        Standard deviation in positions.

    Returns
    -------
    torch.Tensor
        The blurred batch, ``t``'s shape and dtype.

    Examples
    --------
    >>> import torch
    >>> from trustmap.baselines import gaussian_blur
    >>> gaussian_blur(torch.tensor([[[0.0, 0.0, 1.0, 0.0, 0.0]]]), 1.0)
    tensor([[[0.1080, 0.2465, 0.3991, 0.2465, 0.1080]]])
    """
    nsp = t.ndim - 2
    sigmas = (float(sigma),) * nsp if is_number(sigma) else tuple(float(s) for s in sigma)
    out = t
    for ax, s in enumerate(sigmas):
        if s <= 0:
            continue
        size = out.shape[2 + ax]
        radius = int(min(max(1, round(3 * s)), size - 1)) if size > 1 else 0
        if radius == 0:
            continue
        k = torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device)
        k = torch.exp(-0.5 * (k / s) ** 2)
        k = k / k.sum()
        moved = torch.movedim(out, 2 + ax, -1)
        shp = moved.shape
        flat = moved.reshape(-1, 1, shp[-1])
        padded = torch.nn.functional.pad(flat, (radius, radius), mode="reflect")
        conv = torch.nn.functional.conv1d(padded, k.view(1, 1, -1))
        out = torch.movedim(conv.reshape(shp), -1, 2 + ax)
    return out


# ---- per-sample random draws (batch invariant) -----------------------------------------------
def sample_seeds(t: torch.Tensor, seed: int) -> list[int]:
    """One seed per sample, from ``seed`` and the sample's bytes: draws made from them are the same
    whether a sample is processed alone or in a batch, and on every run.

    Parameters
    ----------
    t : torch.Tensor
        The batch, sample axis first.
    seed : int

    Returns
    -------
    list of int
        One non-negative 63-bit seed per sample.

    Examples
    --------
    >>> import torch
    >>> from trustmap.baselines import sample_seeds
    >>> a, b = sample_seeds(torch.zeros(2, 1, 3), 0)
    >>> a == b  # equal samples, equal seeds
    True
    """
    import hashlib

    arr = t.detach().cpu().contiguous().numpy()
    out = []
    for row in arr:
        h = hashlib.sha256(str(int(seed)).encode())
        h.update(row.tobytes())
        out.append(int.from_bytes(h.digest()[:8], "little") & ((1 << 63) - 1))
    return out


def sample_normal(seeds: list[int], idx: np.ndarray, shape: tuple[int, ...], draws: int, draw_idx: np.ndarray,
                  dtype, device) -> torch.Tensor:
    """Standard normal noise for rows (sample ``idx[r]``, draw ``draw_idx[r]``) of a plan where every
    sample has ``draws`` draws of ``shape``; each sample's draws come from its own seed (a private
    generator: the global RNGs are untouched).

    Parameters
    ----------
    seeds : list of int
        One seed per sample (from :func:`sample_seeds`).
    idx : ndarray of int
        The sample of each output row.
    shape : tuple of int
        Shape of one draw.
    draws : int
        Draws per sample.
    draw_idx : ndarray of int
        Which of the sample's draws each row takes.
    dtype : torch.dtype
    device : torch.device or str

    Returns
    -------
    torch.Tensor
        ``(len(idx), *shape)``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from trustmap.baselines import sample_normal
    >>> z = sample_normal([7], np.array([0, 0]), (3,), 2, np.array([1, 1]), torch.float32, "cpu")
    >>> bool((z[0] == z[1]).all())  # the same draw of the same sample
    True
    """
    out = torch.empty((len(idx), *shape), dtype=dtype, device=device)
    gen = torch.Generator(device="cpu")
    for s in np.unique(idx):
        rows = np.nonzero(idx == s)[0]
        gen.manual_seed(seeds[int(s)])
        noise = torch.randn((draws, *shape), generator=gen, dtype=torch.float64)
        out[torch.as_tensor(rows, device=device)] = noise[torch.as_tensor(draw_idx[rows])].to(dtype=dtype,
                                                                                                device=device)
    return out
