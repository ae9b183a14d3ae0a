"""ROAD: RemOve And Debias (Rong, Leemann, Nguyen, Fiedler, Kasneci & Kasneci, ICML 2022).

Removing entries by setting them to a constant leaks *which* entries were removed (the mask's
shape is information the model can use). ROAD instead fills every removed entry by **noisy
linear imputation**: the removed values solve, per channel, the linear system "each removed entry
equals the weighted mean of its in-bounds neighbours" (known neighbours fixed to the input's
values; 2D: the eight neighbours, 1/6 direct and 1/12 diagonal, as in the ROAD code and Quantus'
``noisy_linear_imputation``; 1D: the two direct neighbours, equal weights), then Gaussian noise of standard deviation ``noise`` is added to
the imputed entries.

For each share ``p`` in ``percentages`` (Quantus: 1, 3, ..., 99 %) the top ``p`` % of the map's
entries are removed (MoRF: most relevant first; LeRF: least relevant first) and the model's
prediction is scored: ``output='acc'`` (Quantus and the paper: 1 when the predicted class is the
target), ``'prob'`` or ``'logit'`` (the target's score). Per sample the value is the mean over the
shares (the area under the curve of the score against the share removed, on the shares' grid);
``extras['curve']`` is the mean curve. MoRF: **lower** is better; LeRF: **higher** is better.

Ranking follows the shared masking convention (:mod:`trustmap.metrics.masking`: raw values unless
``normalize=``, ties in a fixed random order, ``channels='mean'`` removes whole positions — every
channel of a position, as Quantus does for channel-summed maps). Cost: ``len(percentages)``
forward passes per sample plus the imputation (a batched conjugate-gradient solve on the
grid, all samples, shares and channels at once). The noise is drawn from ``seed`` chunk by chunk: a
result is reproducible for a given seed and memory budget.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..errors import InputError
from .masking import (Masking, MetricResult, chunks, group_size, importance, make_masking, prepare, rank_entries)

__all__ = ["road", "road_morf", "road_lerf", "noisy_linear_imputation", "scores_of_variants", "NEIGHBOURS"]

#: neighbour offsets and weights along the spatial axes (ROAD's; 1D keeps the two direct neighbours)
NEIGHBOURS = {
    1: [((1,), 1 / 6), ((-1,), 1 / 6)],
    2: [((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((0, -1), 1 / 6),
        ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6)],
}
OUTPUTS = ("acc", "prob", "logit")


def _shift(t: torch.Tensor, offset: tuple[int, ...]) -> torch.Tensor:
    """``out[..., u] = t[..., u + offset]`` along the trailing spatial axes, zero outside."""
    out = t
    nd = len(offset)
    for k, o in enumerate(offset):
        if o == 0:
            continue
        ax = t.ndim - nd + k
        n = t.shape[ax]
        z = torch.zeros_like(out.narrow(ax, 0, min(abs(o), n)))
        if o > 0:
            out = torch.cat([out.narrow(ax, o, n - o), z], dim=ax) if o < n else torch.zeros_like(out)
        else:
            out = torch.cat([z, out.narrow(ax, 0, n + o)], dim=ax) if -o < n else torch.zeros_like(out)
    return out


def _tridiagonal_solve(xd: torch.Tensor, rem: torch.Tensor, w: float) -> torch.Tensor:
    """1D: the full-line system (kept entries ``y = x``; removed ``deg y_u - w y_(u-1) - w y_(u+1) = 0``)
    by the Thomas algorithm, vectorized over all rows and channels (one step per position). A line
    with nothing kept has no data and is imputed as 0."""
    flat_x = xd.reshape(-1, xd.shape[-1])
    r = rem.reshape(-1, xd.shape[-1])
    empty = r.all(1, keepdim=True)
    flat_x = torch.where(empty, torch.zeros_like(flat_x), flat_x)   # nothing kept: solve y = 0 there
    r = r & ~empty
    L = flat_x.shape[1]
    rf = r.to(torch.float64)
    has_left = torch.ones(L, dtype=torch.float64, device=xd.device)
    has_left[0] = 0
    has_right = torch.ones(L, dtype=torch.float64, device=xd.device)
    has_right[-1] = 0
    a = -w * has_left * rf                              # coefficient of y_(u-1)
    c = -w * has_right * rf                             # coefficient of y_(u+1)
    b = torch.where(r, w * (has_left + has_right), torch.ones_like(rf))
    d = torch.where(r, torch.zeros_like(flat_x), flat_x)
    cp = torch.empty_like(flat_x)
    dp = torch.empty_like(flat_x)
    cp[:, 0] = c[:, 0] / b[:, 0]
    dp[:, 0] = d[:, 0] / b[:, 0]
    for i in range(1, L):
        m = b[:, i] - a[:, i] * cp[:, i - 1]
        cp[:, i] = c[:, i] / m
        dp[:, i] = (d[:, i] - a[:, i] * dp[:, i - 1]) / m
    y = torch.empty_like(flat_x)
    y[:, -1] = dp[:, -1]
    for i in range(L - 2, -1, -1):
        y[:, i] = dp[:, i] - cp[:, i] * y[:, i + 1]
    return y.reshape(xd.shape)


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None, tol: float = 1e-12,
                            max_iter: int | None = None) -> torch.Tensor:
    """Impute the ``removed`` entries of ``x`` ``(R, C, *spatial)`` from their neighbours, plus noise.

    Solves ``sum_v w_uv (y_u - y_v) = 0`` over the in-bounds neighbours ``v`` of every removed
    ``u`` (``y_v = x_v`` where not removed), for every row and channel at once, by Jacobi-
    preconditioned conjugate gradients in float64 (symmetric positive definite as long as some
    entry of the channel is kept) — 1D lines directly by the Thomas algorithm — then adds
    ``N(0, noise²)`` to the imputed entries.
    """
    nd = x.ndim - 2
    offs = NEIGHBOURS[nd]
    xd = x.to(torch.float64)
    rem = removed.to(torch.bool).expand_as(xd)
    if nd == 1 and max_iter is None and x.shape[-1] <= 4096:
        y = _tridiagonal_solve(xd, rem, offs[0][1])
        if noise:
            y = y + torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y.device) * float(noise)
        return torch.where(rem, y, xd).to(x.dtype)
    keep = (~rem).to(torch.float64)
    remf = rem.to(torch.float64)
    ones = torch.ones_like(xd[:1, :1])
    deg = sum(w * _shift(ones, o) for o, w in offs).expand_as(xd)                      # in-bounds weight sum
    known = xd * keep
    b = sum(w * _shift(known, o) for o, w in offs) * remf                              # known neighbours

    def op(y: torch.Tensor) -> torch.Tensor:
        return (deg * y - sum(w * _shift(y, o) for o, w in offs)) * remf

    inv = torch.where(rem, 1.0 / deg, torch.zeros_like(deg))
    y = b * inv
    r = b - op(y)
    z = r * inv
    p = z.clone()
    dims = tuple(range(1, xd.ndim))
    rz = (r * z).sum(dims, keepdim=True)
    bn = torch.sqrt((b * b).sum(dims, keepdim=True)).clamp_min(1e-300)
    limit = max_iter if max_iter is not None else int(rem[0].numel()) + 10
    for _ in range(limit):
        if bool((torch.sqrt((r * r).sum(dims, keepdim=True)) <= tol * bn).all()):
            break
        ap = op(p)
        den = (p * ap).sum(dims, keepdim=True)
        alpha = torch.where(den > 0, rz / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        y = y + alpha * p
        r = r - alpha * ap
        z = r * inv
        rz_new = (r * z).sum(dims, keepdim=True)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
    if noise:
        y = y + torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y.device) * float(noise)
    return torch.where(rem, y, xd).to(x.dtype)


def scores_of_variants(model, x: torch.Tensor, targets: np.ndarray, n_variants: int,
                       build: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], output: str) -> np.ndarray:
    """``(N, n_variants)`` float64: the score of ``build(i, j)`` (the inputs of rows ``r``, sample
    ``i = r // n_variants``, variant ``j = r % n_variants``), built and scored chunk by chunk under
    the model's memory budget. ``output``: 'prob', 'logit' or 'acc' (1 when the target is predicted)."""
    n = len(x)
    tg = torch.as_tensor(targets, device=x.device)
    out = []
    with model.frozen(), torch.inference_mode():
        for s in chunks(model, n * n_variants, x[0].numel()):
            r = torch.arange(s.start, s.stop, device=x.device)
            i, j = r // n_variants, r % n_variants
            logits = model.logits_t(build(i, j))
            if output == "acc":
                out.append((logits.argmax(1) == tg[i]).to(torch.float64))
            else:
                z = torch.softmax(logits.to(torch.float64), 1) if output == "prob" else logits.to(torch.float64)
                out.append(z.gather(1, tg[i].view(-1, 1)).view(-1))
    return torch.cat(out).cpu().numpy().reshape(n, n_variants)


def _percentages(percentages) -> np.ndarray:
    if percentages is None:
        return np.arange(1, 100, 2, dtype=np.float64)
    p = np.asarray(percentages, dtype=np.float64).ravel()
    if p.size == 0 or not np.isfinite(p).all() or (p < 0).any() or (p > 100).any():
        raise InputError("percentages must be in [0, 100]", parameter="percentages",
                         expected="a list of shares in percent, e.g. [10, 30, 50, 70, 90]", got=percentages,
                         fix="pass percentages=None for Quantus' 1, 3, ..., 99")
    return p


def road(model, X, maps, *, order: str = "morf", percentages=None, noise: float = 0.01, output: str = "acc",
         target=None, layout=None, masking: Masking | None = None, normalize: str | None = None,
         channels: str = "each", seed: int = 0, **_: Any) -> MetricResult:
    """ROAD with noisy linear imputation (see the module docstring); ``order='morf'`` (lower is
    better) or ``'lerf'`` (higher is better).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    order : {'morf', 'lerf'}, default 'morf'
        Most or least relevant entries removed first.
    percentages : sequence of float, optional
        Removed shares in percent, in [0, 100] (default: the module's grid).
    noise : float, default 0.01
        Standard deviation of the imputation noise.
    output : {'acc', 'prob', 'logit'}, default 'acc'
    target, layout, seed
        As :func:`trustmap.metrics.deletion`.
    masking, normalize, channels
        The ranking convention of :mod:`trustmap.metrics.masking`.

    Returns
    -------
    MetricResult
        ``value``: the mean score over the percentages.

    Raises
    ------
    InputError
        Unknown ``order`` or ``output``, ``noise`` < 0, or ``percentages`` outside [0, 100].
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import road
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> oracle = np.array([[[0.0, 0, 5, 5, 0, 0]]])
    >>> road(model, X, oracle, percentages=[50]).value  # imputed from neighbours, class 1 still wins
    1.0
    """
    if order not in ("morf", "lerf"):
        raise InputError("unknown order", parameter="order", expected="'morf' or 'lerf'", got=order,
                         fix="order='morf' (most relevant first)")
    if output not in OUTPUTS:
        raise InputError("unknown output", parameter="output", expected="'acc', 'prob' or 'logit'", got=output,
                         fix="output='acc' (the paper's accuracy)")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not float(noise) >= 0:
        raise InputError("noise must be >= 0", parameter="noise", expected="a standard deviation >= 0", got=noise,
                         fix="noise=0.01 (ROAD's)")
    pct = _percentages(percentages)
    mk = masking if masking is not None else make_masking(None, normalize=normalize, channels=channels, seed=seed)
    p = prepare(model, X, maps, target=target, layout=layout)
    ranks = rank_entries(importance(p.maps, mk), mk)
    m = group_size(tuple(p.x.shape), mk)
    counts = torch.as_tensor((m * pct / 100.0).astype(np.int64), device=p.x.device)       # Quantus: int(a_size * p / 100)
    if order == "lerf":
        ranks = (m - 1) - ranks
    shape = (-1,) + (1,) * (p.x.ndim - 1)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) * 9973 + 5)

    def build(i, j):
        rem = ranks[i] < counts[j].reshape(shape)
        return noisy_linear_imputation(p.x[i], rem, noise, gen).to(p.x.dtype)

    curves = scores_of_variants(p.model, p.x, p.targets, len(pct), build, output)
    v = curves.mean(1)
    name = f"road_{order}"
    return MetricResult(name, float(v.mean()) if len(v) else math.nan, v, order == "lerf",
                        {"order": order, "percentages": pct.tolist(), "noise": float(noise), "output": output,
                         "method": p.method}, mk.record(),
                        {"curves": curves, "curve": curves.mean(0), "targets": p.targets})


def road_morf(model, X, maps, **kw) -> MetricResult:
    """ROAD, most relevant first removed (lower is better); see :func:`road`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    **kw
        The other keywords of :func:`road`.

    Returns
    -------
    MetricResult
        ``value``: the mean score over the percentages.

    Raises
    ------
    InputError
        As :func:`road`.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import road_morf
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> road_morf(model, X, np.array([[[0.0, 0, 5, 5, 0, 0]]])).value
    1.0
    """
    return road(model, X, maps, order="morf", **kw)


def road_lerf(model, X, maps, **kw) -> MetricResult:
    """ROAD, least relevant first removed (higher is better); see :func:`road`.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    X : array
        The inputs, in the caller's layout.
    maps : Attribution or array
        One map per input, with the input's shape.
    **kw
        The other keywords of :func:`road`.

    Returns
    -------
    MetricResult
        ``value``: the mean score over the percentages.

    Raises
    ------
    InputError
        As :func:`road`.
    ShapeError, LayoutError
        ``X`` does not fit the model, or ``maps`` do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch, trustmap
    >>> from trustmap.metrics import road_lerf
    >>> lin = torch.nn.Linear(6, 2, bias=False)  # class 1 reads positions 2 and 3
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.ones((1, 1, 6), np.float32)
    >>> road_lerf(model, X, np.array([[[0.0, 0, 5, 5, 0, 0]]])).value
    1.0
    """
    return road(model, X, maps, order="lerf", **kw)
