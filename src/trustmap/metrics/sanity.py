"""Randomization sanity checks (Adebayo et al., *Sanity Checks for Saliency Maps*, 2018).

An explanation that describes the model must change when the model does. Two tests:

``model_randomization``
    Cascading model-parameter randomization: the layers with parameters are re-initialized
    one after another from the output back to the input (on a private copy: the user's model is
    never touched), and the maps of every stage are compared with the maps of the trained
    model. ``cascading=False`` randomizes each layer alone (independent randomization).
``label_randomization``
    A copy of the model is re-initialized and trained on permuted labels; its maps are
    compared with the trained model's.

Similarity per sample: the **Spearman** rank correlation of the map entries (average ranks for
ties) and the **SSIM** of the maps, each rescaled to [0, 1] per sample (uniform 7-wide window
along every spatial axis, scikit-image's defaults, averaged over channels). A method is
**flagged** as insensitive to the model when, after full randomization, the mean similarity is
still at or above ``threshold`` (default 0.5) by *either* measure; a model-dependent method falls
well below it (Grad-CAM, saliency and Ablation-CAM fall below 0.3 on the MNIST-1D CNN), while a
model-independent map (:func:`edge_detector`) stays at 1.

The explainer can be a registered method name (with ``params``), an explainer instance, an
:class:`~trustmap.Attribution` (its method and parameters are re-run), or a callable
``f(model, X, target, layout)`` returning an Attribution or an array shaped like ``X``. The
targets stay those of the trained model's maps at every stage.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import _io
from ..attribution import Attribution
from ..errors import InputError, ShapeError, UnsupportedError
from ..models import Model, load_model
from .masking import Masking, importance

__all__ = ["model_randomization", "label_randomization", "SanityResult", "spearman_rows", "ssim_rows",
           "edge_detector", "SIMILARITIES"]

SIMILARITIES = ("spearman", "ssim")


# ---- similarity measures ----------------------------------------------------------------------------
def _average_ranks_rows(a: np.ndarray) -> np.ndarray:
    """1-based ranks along each row, ties sharing their mean rank."""
    n, m = a.shape
    order = np.argsort(a, axis=1, kind="stable")
    s = np.take_along_axis(a, order, 1)
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    run = np.cumsum(starts.ravel()) - 1
    pos = np.broadcast_to(np.arange(1, m + 1, dtype=np.float64), (n, m)).ravel()
    mean_rank = np.bincount(run, weights=pos) / np.bincount(run)
    ranks = np.empty((n, m))
    np.put_along_axis(ranks, order, mean_rank[run].reshape(n, m), 1)
    return ranks


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of rows (flattened maps), ``(N,)``.

    Equals ``scipy.stats.spearmanr`` per row; NaN when a row is constant.

    Parameters
    ----------
    a, b : ndarray (N, ...)
        Maps; each row is flattened.

    Returns
    -------
    ndarray (N,)

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import spearman_rows
    >>> spearman_rows(np.array([[1.0, 2, 3], [1, 2, 3]]), np.array([[2.0, 4, 9], [3, 2, 1]]))
    array([ 1., -1.])
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    ra, rb = _average_ranks_rows(a), _average_ranks_rows(b)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def _minmax_rows(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(len(a), -1)
    lo, hi = flat.min(1), flat.max(1)
    span = np.where(hi > lo, hi - lo, 1.0)
    shape = (-1,) + (1,) * (a.ndim - 1)
    return (a - lo.reshape(shape)) / span.reshape(shape)


def _box_valid(t: np.ndarray, win: int, axes: tuple[int, ...]) -> np.ndarray:
    """Mean over a ``win``-wide window along each of ``axes``, only where the window fits."""
    out = t
    for ax in axes:
        cs = np.cumsum(out, axis=ax)
        zero = np.zeros_like(np.take(cs, [0], axis=ax))
        cs = np.concatenate([zero, cs], axis=ax)
        n = cs.shape[ax]
        out = (np.take(cs, np.arange(win, n), axis=ax) - np.take(cs, np.arange(0, n - win), axis=ax)) / win
    return out


def ssim_rows(a: np.ndarray, b: np.ndarray, *, win_size: int = 7, normalize: bool = True) -> np.ndarray:
    """Structural similarity of each pair of internal maps ``(N, C, *spatial)``, ``(N,)``.

    Each map is rescaled to [0, 1] per sample (``normalize``), then scikit-image's SSIM is taken
    (uniform window, ``K1=0.01``, ``K2=0.03``, sample covariance, data range 1, the border where
    the window does not fit left out) for each channel and averaged. The window shrinks to the
    largest odd size that fits a short axis.

    Parameters
    ----------
    a, b : ndarray (N, C, *spatial)
    win_size : int, default 7
    normalize : bool, default True

    Returns
    -------
    ndarray (N,)

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import ssim_rows
    >>> a = np.random.default_rng(0).random((2, 1, 16))
    >>> ssim_rows(a, a)
    array([1., 1.])
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 3:
        raise ShapeError("maps to compare must have the same (N, C, *spatial) shape", parameter="b",
                         expected=f"shape {a.shape}", got=f"shape {b.shape}", fix="compare maps of the same inputs")
    if normalize:
        a, b = _minmax_rows(a), _minmax_rows(b)
    spatial = a.shape[2:]
    win = int(min(win_size, *spatial))
    if win % 2 == 0:
        win -= 1
    win = max(win, 1)
    axes = tuple(range(2, a.ndim))
    npix = win ** len(spatial)
    cov_norm = npix / (npix - 1) if npix > 1 else 1.0
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ux, uy = _box_valid(a, win, axes), _box_valid(b, win, axes)
    uxx, uyy, uxy = _box_valid(a * a, win, axes), _box_valid(b * b, win, axes), _box_valid(a * b, win, axes)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(len(a), a.shape[1], -1).mean(2).mean(1)


# ---- a deliberately model-independent "explainer" ---------------------------------------------------
def edge_detector(model, X, target=None, layout=None) -> Attribution:
    """``|∇x|``: the magnitude of the input's finite-difference gradient along the spatial axes,
    per channel. It ignores the model entirely — the control a sanity check must flag.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Used only to read ``X``'s layout and to resolve the targets recorded with the maps.
    X : array
        Inputs in the caller's layout.
    target : int or array of int, optional
        Recorded targets (default: the predicted class); the maps do not depend on them.
    layout : str, optional

    Returns
    -------
    Attribution
        Method ``'edge_detector'``, maps with ``X``'s shape.

    Raises
    ------
    ModelLoadError
        ``model`` cannot be loaded.
    ShapeError, LayoutError
        ``X`` does not fit the model.
    TargetError
        ``target`` is not a class of the model.

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import edge_detector
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> edge_detector(net, np.array([[[0.0, 0, 1, 1, 1, 0]]], np.float32)).maps
    array([[[0. , 0.5, 0.5, 0. , 0.5, 1. ]]], dtype=float32)
    """
    m = load_model(model)
    t, lay = m.to_internal(X, layout)
    x = t.detach().cpu().to(torch.float64).numpy()
    g2 = np.zeros_like(x)
    for ax in range(2, x.ndim):
        if x.shape[ax] > 1:
            g2 += np.gradient(x, axis=ax) ** 2
    maps = np.sqrt(g2).astype(np.float32)
    targets = m.resolve_targets(target, t)
    return Attribution(np.ascontiguousarray(lay.from_internal(maps)), targets, "edge_detector", {}, lay.name)


# ---- explainer plumbing ------------------------------------------------------------------------------
def _explainer_fn(explainer, params: dict | None) -> tuple[Callable, str]:
    params = dict(params or {})
    if isinstance(explainer, Attribution):
        if explainer.method in ("trust", "edge_detector"):
            raise UnsupportedError("this attribution cannot be re-run on a randomized model", parameter="explainer",
                                   expected="a registered method name, an explainer, or a callable",
                                   got=explainer.method,
                                   fix="pass the method (e.g. 'gradcam') or a callable that explains a model")
        params = {**explainer.params, **params}
        explainer = explainer.method
    if isinstance(explainer, str):
        from ..explain import get_explainer

        ex = get_explainer(explainer, **params)
        return (lambda mod, X, target, layout: ex.explain(mod, X, target=target, layout=layout)), explainer
    if params:
        raise InputError("params go with a method name", parameter="params", expected="no params here",
                         got=sorted(params), fix="configure the explainer object or callable itself")
    if hasattr(explainer, "explain") and callable(explainer.explain):
        name = getattr(explainer, "name", type(explainer).__name__)
        return (lambda mod, X, target, layout: explainer.explain(mod, X, target=target, layout=layout)), str(name)
    if callable(explainer):
        return explainer, getattr(explainer, "__name__", "callable")
    raise InputError("cannot use this as an explainer", parameter="explainer",
                     expected="a method name, an explainer, an Attribution, or f(model, X, target, layout)",
                     got=type(explainer).__name__, fix="e.g. explainer='gradcam'")


def _run(fn: Callable, model: Model, X, targets, lay, x_shape) -> np.ndarray:
    out = fn(model, X, targets, lay.name)
    if isinstance(out, Attribution):
        arr = np.asarray(out.internal(), dtype=np.float64)
    else:
        arr = np.asarray(out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out, dtype=np.float64)
        if arr.shape == tuple(np.shape(X)):
            arr = np.asarray(lay.to_internal(arr))
    if arr.shape != tuple(x_shape):
        raise ShapeError("the explainer's maps do not have the input's shape", parameter="explainer",
                         expected=f"shape {tuple(np.shape(X))}", got=f"shape {arr.shape}",
                         fix="return one map per input with the input's shape")
    return arr


# ---- randomized copies -------------------------------------------------------------------------------
def _torch_adapter(m: Model, module, label: str) -> Model:
    from ..models import TorchModel

    spatial = tuple(m.spatial) if m.spatial is not None else None
    return TorchModel(module, input_shape=(m.channels, *spatial) if spatial else None, output=m.output,
                      dtype=m.dtype, device=m.device, max_batch=m.max_batch, name=f"{m.name} ({label})")


def _param_layers_torch(m: Model, x1: torch.Tensor) -> list[str]:
    """Names of the modules owning parameters directly, in execution order (traced on a copy)."""
    module = copy.deepcopy(m.module)
    probe = _torch_adapter(m, module, "probe")
    order: list[str] = []
    owners = {n: mod for n, mod in module.named_modules() if n and any(True for _ in mod.parameters(recurse=False))}
    handles = [mod.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
               for name, mod in owners.items()]
    try:
        with probe.frozen(), torch.inference_mode():
            probe.logits_t(x1)
    finally:
        for h in handles:
            h.remove()
    out: list[str] = []
    for n in order:
        if n not in out:
            out.append(n)
    return [n for n in owners if n not in out] + out  # never executed ones first: they do not matter


def _reinit_torch(module, names: list[str], seed: int) -> None:
    mods = dict(module.named_modules())
    with torch.random.fork_rng(devices=[]):
        for j, name in enumerate(names):
            torch.manual_seed(int(seed) * 1009 + j)
            mod = mods[name]
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
            else:
                with torch.no_grad():
                    for p in mod.parameters(recurse=False):
                        std = float(p.detach().std()) if p.numel() > 1 else 0.05
                        p.normal_(0.0, std if std > 0 else 0.05)


def _torch_copy(m: Model, names: list[str], seed: int) -> Model:
    module = copy.deepcopy(m.module)
    _reinit_torch(module, names, seed)
    return _torch_adapter(m, module, "randomized")


def _keras_layers(m: Model) -> list[str]:
    return [layer.name for layer in m.keras_model.layers if layer.weights]


def _keras_copy(m: Model, names: list[str], seed: int) -> Model:
    from ..models import KerasModel, import_keras

    keras = import_keras()
    src = m.keras_model
    clone = keras.models.clone_model(src)
    clone.set_weights(src.get_weights())
    rng = np.random.default_rng(seed)
    for name in names:
        layer = clone.get_layer(name)
        for v in layer.weights:
            shape = tuple(v.shape)
            kind = "bias" if "bias" in v.path.split("/")[-1] else "kernel"
            init = getattr(layer, f"{kind}_initializer", None)
            if init is not None and kind == "kernel":
                value = keras.ops.convert_to_numpy(init(shape, dtype="float32"))
                value = value if np.std(value) > 0 else rng.normal(0, 0.05, shape)
            elif kind == "bias":
                value = np.zeros(shape)
            else:
                cur = keras.ops.convert_to_numpy(v.value)
                value = rng.normal(0.0, float(cur.std()) or 0.05, shape)
            v.assign(np.asarray(value, dtype="float32"))
    return KerasModel(clone, output=m.output, max_batch=m.max_batch, name=f"{m.name} (randomized)")


def _kit(m: Model, x1: torch.Tensor):
    if m.framework == "torch":
        return _param_layers_torch(m, x1), _torch_copy
    if m.framework == "keras":
        return _keras_layers(m), _keras_copy
    raise UnsupportedError(f"{m.framework} models cannot be randomized here", parameter="model",
                           expected="a PyTorch or Keras model", got=m.framework,
                           fix="run the sanity check on the PyTorch/Keras model the file was exported from")


# ---- results ---------------------------------------------------------------------------------------
def _boot_ci(values: np.ndarray, level: float, n_boot: int, seed: int) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


@dataclass
class SanityResult:
    """Similarity of maps before and after randomization, per stage and sample.

    ``stages[0]`` is the trained model (similarity 1 by construction); for the cascading test
    ``stages[s]`` names the layers randomized so far (output side first). ``spearman`` and
    ``ssim`` are ``(S, N)``. ``flagged``: the maps did not change enough under full
    randomization (see the module docstring).

    Parameters
    ----------
    test : str
        ``'cascading'``, ``'independent'`` or ``'label'``.
    method : str
        Name of the explainer.
    stages : list of str
        Stage names, ``'trained'`` first.
    spearman, ssim : ndarray (S, N)
        Similarity of each stage's maps to the trained model's, per sample.
    threshold : float
        Flagging threshold on the final mean similarity.
    level : float, default 0.95
        Level of the bootstrap intervals of :meth:`ci`.
    n_boot : int, default 1000
        Bootstrap resamples of :meth:`ci`.
    extras : dict, optional
        Test details (layers, seed, training accuracy, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.metrics import SanityResult
    >>> r = SanityResult("cascading", "demo", ["trained", "+fc"], np.array([[1.0, 1], [0.1, 0.3]]),
    ...                  np.array([[1.0, 1], [0.2, 0.2]]), threshold=0.5)
    >>> r.final, r.flagged
    ({'spearman': 0.2, 'ssim': 0.2}, False)
    >>> r.ci().shape
    (2, 2)
    """

    test: str
    method: str
    stages: list[str]
    spearman: np.ndarray
    ssim: np.ndarray
    threshold: float
    level: float = 0.95
    n_boot: int = 1000
    extras: dict[str, Any] = field(default_factory=dict)

    def mean(self, measure: str = "spearman") -> np.ndarray:
        return np.nanmean(getattr(self, measure), axis=1)

    def ci(self, measure: str = "spearman") -> np.ndarray:
        """``(S, 2)`` bootstrap percentile intervals of the mean similarity per stage."""
        vals = getattr(self, measure)
        return np.array([_boot_ci(v, self.level, self.n_boot, 0) for v in vals])

    @property
    def final(self) -> dict[str, float]:
        """Mean similarity after full randomization (the last stage)."""
        return {k: float(self.mean(k)[-1]) for k in SIMILARITIES}

    @property
    def flagged(self) -> bool:
        return any(v >= self.threshold for v in self.final.values() if math.isfinite(v))

    def to_dict(self) -> dict[str, Any]:
        ci_s, ci_m = self.ci("spearman"), self.ci("ssim")
        rows = [{"stage": st, "spearman": float(self.mean("spearman")[i]), "spearman_ci": ci_s[i].tolist(),
                 "ssim": float(self.mean("ssim")[i]), "ssim_ci": ci_m[i].tolist()} for i, st in enumerate(self.stages)]
        return _io.to_jsonable({"test": self.test, "method": self.method, "threshold": self.threshold,
                                "flagged": self.flagged, "final": self.final, "stages": rows, "level": self.level,
                                "extras": self.extras})

    def to_markdown(self) -> str:
        d = self.to_dict()
        lines = [f"**{self.test} randomization — {self.method}**: "
                 + ("FLAGGED (maps do not depend on the model)" if self.flagged else "passes")
                 + f" (threshold {self.threshold:g} on the final mean Spearman or SSIM)", "",
                 "| stage | Spearman | 95% CI | SSIM | 95% CI |", "|---|---|---|---|---|"]
        for r in d["stages"]:
            lines.append(f"| {r['stage']} | {r['spearman']:.3f} | [{r['spearman_ci'][0]:.3f}, {r['spearman_ci'][1]:.3f}]"
                         f" | {r['ssim']:.3f} | [{r['ssim_ci'][0]:.3f}, {r['ssim_ci'][1]:.3f}] |")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        f = self.final
        return (f"SanityResult({self.test}, {self.method}: final spearman={f['spearman']:.3f}, ssim={f['ssim']:.3f}, "
                f"flagged={self.flagged})")


def _check_threshold(threshold) -> float:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not -1 <= float(threshold) <= 1:
        raise InputError("threshold must be in [-1, 1]", parameter="threshold", expected="a similarity in [-1, 1]",
                         got=threshold, fix="e.g. threshold=0.5")
    return float(threshold)


def _similarity(ref: np.ndarray, other: np.ndarray, mk: Masking) -> tuple[np.ndarray, np.ndarray]:
    a = importance(torch.from_numpy(ref), mk).numpy()
    b = importance(torch.from_numpy(other), mk).numpy()
    sp = spearman_rows(a, b)
    # a constant map has no ranks: two constant maps agree (1), a constant and a varying one do not (0)
    const_a = np.ptp(a.reshape(len(a), -1), axis=1) == 0
    const_b = np.ptp(b.reshape(len(b), -1), axis=1) == 0
    sp = np.where(const_a & const_b, 1.0, np.where(const_a | const_b, 0.0, sp))
    return sp, ssim_rows(a, b)


def _prepare(model, X, explainer, params, target, layout):
    m = load_model(model)
    t, lay = m.to_internal(X, layout)
    fn, name = _explainer_fn(explainer, params)
    if target is None and isinstance(explainer, Attribution):
        target = explainer.targets
    targets = m.resolve_targets(target, t)
    ref = _run(fn, m, X, targets, lay, t.shape)
    return m, t, lay, fn, name, targets, ref


# ---- the tests -------------------------------------------------------------------------------------
def model_randomization(model, X, explainer, *, params: dict | None = None, target=None, layout=None,
                        cascading: bool = True, normalize: str | None = None, threshold: float = 0.5,
                        seed: int = 0, level: float = 0.95) -> SanityResult:
    """Cascading (or independent) model-parameter randomization; see the module docstring.

    Returns a :class:`SanityResult` whose stages are ``'trained'`` then, cascading, ``'+layer'``
    for each layer randomized (output side first); independent: ``'layer'`` each alone.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        A PyTorch or Keras model (anything :func:`trustmap.load_model` accepts); it is never
        changed: the layers are re-initialized on copies.
    X : array
        The inputs explained, in the caller's layout.
    explainer : str, Explainer, Attribution or callable
        A registered method name (configured by ``params``), an explainer instance, an
        :class:`~trustmap.Attribution` (its method and parameters are re-run), or
        ``f(model, X, target, layout)`` returning an Attribution or an array shaped like ``X``.
    params : dict, optional
        The method's parameters; only with a method name or an Attribution.
    target : int or array of int, optional
        Class per sample, kept at every stage; default: an Attribution's targets, else the
        trained model's predicted class.
    layout : str, optional
        Layout of ``X`` when the shape is ambiguous.
    cascading : bool, default True
        Randomize the layers cumulatively, output side first (``False``: each layer alone).
    normalize : str, optional
        How the maps are turned into importances before comparing, as :class:`Masking`'s
        ``normalize`` (default: the raw maps).
    threshold : float, default 0.5
        A method is flagged when a final mean similarity is at or above it; in [-1, 1].
    seed : int, default 0
        Seed of the re-initialization.
    level : float, default 0.95
        Level of the bootstrap intervals of :meth:`SanityResult.ci`.

    Returns
    -------
    SanityResult
        ``test`` is ``'cascading'`` or ``'independent'``; ``extras['layers_top_down']`` lists
        the layers with parameters, output side first.

    Raises
    ------
    InputError
        ``threshold`` or ``normalize`` out of range, an unknown method name, ``params`` with an
        explainer object or callable, or an ``explainer`` that is none of the accepted kinds.
    UnsupportedError
        The model is neither PyTorch nor Keras, has no parameters, or ``explainer`` is an
        Attribution that cannot be re-run (``'trust'``, ``'edge_detector'``).
    ShapeError, LayoutError
        ``X`` does not fit the model, or the explainer's maps do not have ``X``'s shape.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from trustmap.metrics import model_randomization, edge_detector
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 14, 2))
    >>> X = np.random.default_rng(0).random((4, 1, 16)).astype(np.float32)
    >>> r = model_randomization(net, X, "saliency")
    >>> r.stages, r.spearman.shape
    (['trained', '+3', '+0'], (3, 4))
    >>> model_randomization(net, X, edge_detector).flagged  # the map ignores the model
    True
    """
    threshold = _check_threshold(threshold)
    mk = Masking(normalize=normalize)
    m, t, lay, fn, name, targets, ref = _prepare(model, X, explainer, params, target, layout)
    layers, make_copy = _kit(m, t[:1])
    if not layers:
        raise UnsupportedError("the model has no parameters to randomize", parameter="model",
                               expected="a network with weights", got=m.name, fix="pass a trained network")
    top_down = list(reversed(layers))
    stages, sp, ss = ["trained"], [np.ones(len(t))], [np.ones(len(t))]
    s0, m0 = _similarity(ref, ref, mk)
    sp[0], ss[0] = s0, m0
    for i, layer in enumerate(top_down):
        names = top_down[: i + 1] if cascading else [layer]
        rm = make_copy(m, names, seed)
        maps = _run(fn, rm, X, targets, lay, t.shape)
        a, b = _similarity(ref, maps, mk)
        stages.append(("+" if cascading else "") + layer)
        sp.append(a)
        ss.append(b)
    return SanityResult("cascading" if cascading else "independent", name, stages, np.vstack(sp), np.vstack(ss),
                        threshold, level, extras={"layers_top_down": top_down, "normalize": normalize, "seed": seed})


def label_randomization(model, X_train, y_train, X, explainer, *, params: dict | None = None, target=None,
                        layout=None, fit: Callable | None = None, epochs: int = 20, lr: float = 3e-3,
                        normalize: str | None = None, threshold: float = 0.5, seed: int = 0,
                        level: float = 0.95) -> SanityResult:
    """Label randomization: the maps of a copy of the model trained on permuted labels.

    The copy is re-initialized and trained on ``(X_train, permuted y_train)``: by ``fit(module,
    X_train, y_perm)`` when given (it trains the module it gets in place), else — PyTorch
    models — by :class:`trustmap.zoo.Trainer` for ``epochs`` epochs with no early stopping
    (the network memorizes the labels). ``extras['train_accuracy']`` is the copy's accuracy on
    the permuted labels it was trained on.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        The trained model (never changed); a Keras model needs ``fit``.
    X_train : array
        Training inputs for the copy, in the caller's layout.
    y_train : array of int
        One label per training input; they are permuted with ``seed``.
    X : array
        The inputs explained, in the caller's layout.
    explainer : str, Explainer, Attribution or callable
        A registered method name (configured by ``params``), an explainer instance, an
        :class:`~trustmap.Attribution` (its method and parameters are re-run), or
        ``f(model, X, target, layout)`` returning an Attribution or an array shaped like ``X``.
    params : dict, optional
        The method's parameters; only with a method name or an Attribution.
    target : int or array of int, optional
        Class per sample, kept at every stage; default: an Attribution's targets, else the
        trained model's predicted class.
    layout : str, optional
        Layout of ``X`` when the shape is ambiguous.
    fit : callable, optional
        ``fit(module, X_train, y_perm)`` training in place the re-initialized copy it gets
        (a ``torch.nn.Module`` or a cloned ``keras.Model``); default (PyTorch only):
        :class:`trustmap.zoo.Trainer`.
    epochs : int, default 20
        Epochs of the default training.
    lr : float, default 3e-3
        Learning rate of the default training.
    normalize : str, optional
        How the maps are turned into importances before comparing, as :class:`Masking`'s
        ``normalize`` (default: the raw maps).
    threshold : float, default 0.5
        A method is flagged when a final mean similarity is at or above it; in [-1, 1].
    seed : int, default 0
        Seed of the permutation, the re-initialization and the default training.
    level : float, default 0.95
        Level of the bootstrap intervals of :meth:`SanityResult.ci`.

    Returns
    -------
    SanityResult
        ``test`` is ``'label'``; stages ``['trained', 'random labels']``.

    Raises
    ------
    InputError
        ``threshold`` or ``normalize`` out of range, an unknown method name, ``params`` with an
        explainer object or callable, an ``explainer`` that is none of the accepted kinds, or a
        training setting the default :class:`~trustmap.zoo.Trainer` refuses.
    ShapeError, LayoutError
        ``X`` or ``X_train`` does not fit the model, ``y_train`` has not one label per
        ``X_train`` sample, or the explainer's maps do not have ``X``'s shape.
    UnsupportedError
        A Keras model without ``fit``, another framework, or an Attribution that cannot be
        re-run.
    TargetError
        ``target`` is not a class of the model.
    ModelLoadError
        ``model`` cannot be loaded.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from trustmap.metrics import label_randomization
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 14, 2))
    >>> X = np.random.default_rng(0).random((4, 1, 16)).astype(np.float32)
    >>> r = label_randomization(net, X, np.array([0, 1, 0, 1]), X, "saliency", epochs=2)
    >>> r.test, r.stages, r.ssim.shape
    ('label', ['trained', 'random labels'], (2, 4))
    """
    threshold = _check_threshold(threshold)
    mk = Masking(normalize=normalize)
    m, t, lay, fn, name, targets, ref = _prepare(model, X, explainer, params, target, layout)
    y = np.asarray(y_train).reshape(-1)
    if len(y) != len(X_train):
        raise ShapeError("X_train and y_train differ in length", parameter="y_train",
                         expected=f"{len(X_train)} labels", got=len(y), fix="pass one label per training sample")
    y_perm = np.random.default_rng(seed).permutation(y)
    if m.framework == "torch":
        layers, _ = _kit(m, t[:1])
        module = copy.deepcopy(m.module)
        _reinit_torch(module, layers, seed)
        if fit is not None:
            fit(module, X_train, y_perm)
        else:
            from ..zoo import Trainer

            Trainer(epochs=int(epochs), lr=float(lr), patience=None, schedule=None, val_fraction=0.0, seed=int(seed),
                    progress=False).fit(module, X_train, y_perm, layout=layout)
        rm = _torch_adapter(m, module, "random labels")
    elif fit is not None and m.framework == "keras":
        from ..models import KerasModel, import_keras

        keras = import_keras()
        clone = keras.models.clone_model(m.keras_model)  # fresh initial weights
        fit(clone, X_train, y_perm)
        rm = KerasModel(clone, output=m.output, name=f"{m.name} (random labels)")
    else:
        raise UnsupportedError("label randomization trains a copy of the model", parameter="fit",
                               expected="a PyTorch model, or fit=callable(model, X, y) for a Keras model",
                               got=m.framework, fix="pass fit= that trains the Keras clone it receives")
    train_acc = float((rm.predict(X_train, layout=layout) == y_perm).mean())
    maps = _run(fn, rm, X, targets, lay, t.shape)
    a, b = _similarity(ref, maps, mk)
    s0, m0 = _similarity(ref, ref, mk)
    return SanityResult("label", name, ["trained", "random labels"], np.vstack([s0, a]), np.vstack([m0, b]),
                        threshold, level, extras={"train_accuracy": train_acc, "normalize": normalize, "seed": seed,
                                                  "epochs": int(epochs)})

