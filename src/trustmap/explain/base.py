"""The explainer base class and the plumbing every method shares.

An explainer is configuration plus one method: ``__init__`` stores its parameters (no
``**kwargs``, no work) and :meth:`Explainer.explain` computes. The shared steps live here:
wrapping the model (:func:`trustmap.load_model`), converting the caller's array to the
internal ``(N, C, *spatial)`` layout, resolving targets, freezing the model, batching under
the model's memory budget, recording provenance, and converting the maps back to the
caller's layout.

Gradient-based methods differentiate the **pre-softmax score** ``Model.logits_t`` of the
target class. A final softmax/sigmoid that the adapter can reach (the last layer of an
``nn.Sequential``, a Keras layer's fused activation or a trailing ``Softmax`` layer) is stripped,
so the score is the true logit. Where it cannot be stripped (a model that only returns
probabilities) the adapter's logit is ``log p`` (``log(p / (1 - p))`` for one sigmoid unit), and
gradient methods then explain the log-probability of the target class.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import weakref
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from .. import _io
from .. import baselines as _baselines
from ..attribution import Attribution
from ..errors import InputError, NonFiniteError, UnsupportedError
from .registry import methods_where
from ..models import Model, load_model
from ..models.base import row_slices, preserved_rng

__all__ = ["Explainer", "pick_scores", "input_gradient", "sample_seeds", "per_sample_normal", "row_chunks",
           "chunk_rows", "check_choice", "check_number", "CPU_ROWS"]

#: rows per model call on the CPU. Per-sample throughput of CNNs is best at moderate batches: on the
#: benchmark models (MNIST-1D CNN, 12-lead FCN, MNIST CNN) 64-256 rows ran 1.2-1.8x faster per sample
#: than 1000 rows (benchmarks/bench_explain.py). The memory budget (Model.batch_size) still applies.
CPU_ROWS = 256


class Explainer:
    """Base class. Subclasses set ``name`` and implement :meth:`_compute`.

    ``_compute(model, t, targets)`` gets the frozen :class:`~trustmap.models.Model`, the input
    as an internal tensor ``(N, C, *spatial)`` and the targets (an int64 tensor ``(N,)``, or
    ``None`` to mean "the predicted class", which the method resolves from its own forward
    pass), and returns ``(maps (N, C, *spatial) tensor, targets (N,) array, extras dict)``.

    Examples
    --------
    No subclassing is needed to use one: :func:`~trustmap.explain.get_explainer` builds a registered
    explainer, reusable on any batch.

    >>> import numpy as np, torch, trustmap
    >>> from trustmap.explain import Explainer, get_explainer
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2)),
    ...                             input_shape=(1, 6))
    >>> ex = get_explainer("saliency")
    >>> isinstance(ex, Explainer), ex.name, ex.needs_gradients
    (True, 'saliency', True)
    >>> ex.explain(model, np.ones((2, 1, 6), np.float32)).maps.shape
    (2, 1, 6)
    """

    name: ClassVar[str] = "?"
    #: facts about the method, from which other layers derive their lists
    #: (:func:`trustmap.explain.registry.methods_where`): ``needs_gradients`` (False: forward passes
    #: only, so it runs on ONNX models), ``synthesizes_inputs`` (returns a made-up input rather than a
    #: map of the given one), ``stochastic`` (the result depends on ``seed``)
    needs_gradients: ClassVar[bool] = True
    synthesizes_inputs: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    #: whether _compute resolves ``target=None`` itself from its own forward pass (saves one pass)
    resolves_own_targets: ClassVar[bool] = False

    # ---- configuration ---------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """The parameters ``__init__`` took, as a JSON-ready dict."""
        return {k: _io.to_jsonable(getattr(self, k)) for k in _init_names(type(self))}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ---- the one public method -----------------------------------------------------------
    def explain(self, model, x, target=None, layout=None) -> Attribution:
        """Explain ``x`` for ``target`` and return an :class:`~trustmap.Attribution`.

        Parameters
        ----------
        model : Model, torch.nn.Module, keras.Model or path
            Anything :func:`trustmap.load_model` takes.
        x : array or tensor
            A batch in any layout the model accepts (``(N, L)``, ``(N, L, C)``, ``(N, C, L)``,
            ``(N, H, W)``, ``(N, H, W, C)``, ``(N, C, H, W)``).
        target : None, int, or one int per sample
            ``None`` explains each sample's predicted class.
        layout : str, optional
            The layout name of ``x`` when its shape is ambiguous.

        Returns
        -------
        Attribution
            ``maps`` with the shape and layout of ``x``.
        """
        self._validate()
        with preserved_rng():  # no method moves the caller's global random streams
            return self._explain(model, x, target, layout)

    def _explain(self, model, x, target, layout) -> Attribution:
        m = load_model(model)
        if self.needs_gradients and not m.differentiable:
            raise UnsupportedError(f"{self.name} needs gradients or layer access, which {m.framework} models "
                                   "do not give", parameter="method",
                                   expected="a forward-only method: " + ", ".join(methods_where(needs_gradients=False)),
                                   got=self.name,
                                   fix="use one of those methods, or load the PyTorch/Keras model instead")
        t, lay = m.to_internal(x, layout)
        with m.frozen():
            try:
                tg = self._targets(m, target, t)
                maps, targets, extras = self._compute(m, t, tg)
            except NonFiniteError as exc:
                raise self._nonfinite(m, t) from exc
        maps_np = maps.detach().cpu().numpy()
        if not np.isfinite(maps_np).all():
            raise NonFiniteError(f"{self.name} computed NaN or Inf map values", parameter="x",
                                 expected="finite maps", got=f"{int((~np.isfinite(maps_np)).sum())} non-finite entries",
                                 fix="bring the inputs to the scale the model was trained on (gradients overflowed)")
        if maps_np.shape != tuple(t.shape):  # pragma: no cover - an internal contract
            raise RuntimeError(f"{self.name} returned maps of shape {maps_np.shape} for input {tuple(t.shape)}")
        x_np = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        provenance = {
            "model": {"name": m.name, "framework": m.framework, "fingerprint": m.fingerprint()},
            "data_sha256": _io.fingerprint_array(x_np),
            "n": int(len(t)),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        params = self.params
        if "seed" in params:
            provenance["seed"] = params["seed"]
        return Attribution(np.ascontiguousarray(lay.from_internal(maps_np)), np.asarray(targets, dtype=np.int64),
                           self.name, params, lay.name, extras, provenance)

    def _validate(self) -> None:
        """Check the stored parameters (called on entry to :meth:`explain`)."""

    def _nonfinite(self, m: Model, t: torch.Tensor) -> NonFiniteError:
        """The error for NaN/Inf scores met during :meth:`_compute`, naming the first input sample whose
        scores are not finite (or saying that only the inputs the method built had such scores)."""
        bad = m.nonfinite_rows(t)
        if len(bad) or m._weights_finite() is False:
            return m.nonfinite_error(t, bad)
        return NonFiniteError(f"{self.name}: the model's scores are NaN or Inf on the inputs the method builds "
                              "(perturbed, noisy or path inputs), though finite on x", parameter="x",
                              expected="finite scores", got="NaN/Inf scores",
                              fix="use a smaller perturbation or baseline, or standardize the inputs")

    def _targets(self, model: Model, target, t: torch.Tensor) -> torch.Tensor | None:
        """Resolved targets as a tensor, or ``None`` when the method picks the predicted class itself."""
        if target is None and self.resolves_own_targets:
            return None
        return torch.as_tensor(model.resolve_targets(target, t), device=t.device)

    def _compute(self, model: Model, t: torch.Tensor, targets: torch.Tensor | None
                 ) -> tuple[torch.Tensor, np.ndarray, dict]:
        raise NotImplementedError


# ---- helpers ---------------------------------------------------------------------------
_INIT_NAMES: "weakref.WeakKeyDictionary[type, tuple]" = weakref.WeakKeyDictionary()  # class -> (__init__, names)


def _init_names(cls: type) -> tuple[str, ...]:
    """The parameter names of ``cls.__init__`` (but ``self``), read once per class (``inspect.signature``
    took ~40 µs, three times per ``explain()`` call). Keyed on the ``__init__`` function too, so a class
    whose ``__init__`` is replaced is read again."""
    init = cls.__init__
    hit = _INIT_NAMES.get(cls)
    if hit is None or hit[0] is not init:
        hit = _INIT_NAMES[cls] = (init, tuple(k for k in inspect.signature(init).parameters if k != "self"))
    return hit[1]


def pick_scores(logits: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The target class's score per row, and the targets (the argmax where ``targets`` is None)."""
    if targets is None:
        targets = logits.detach().argmax(1)
    return logits.gather(1, targets.view(-1, 1).to(logits.device)).view(-1), targets


def input_gradient(model: Model, x: torch.Tensor, targets: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """d logit[target] / d x for a batch of internal rows, and the targets used."""
    xi = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores, tg = pick_scores(model.logits_t(xi), targets)
        (grad,) = torch.autograd.grad(scores.sum(), xi)
    return grad, tg


def chunk_rows(model: Model, t: torch.Tensor) -> int:
    """Rows per model call for inputs like ``t``: the model's memory budget (or its ``max_batch``),
    capped at :data:`CPU_ROWS` on the CPU where smaller batches run faster."""
    rows = model.batch_size(t[0].numel())
    if model.max_batch is None and t.device.type == "cpu":
        rows = min(rows, CPU_ROWS)
    return max(1, rows)


def row_chunks(n_rows: int, batch: int) -> Iterator[slice]:
    """Slices of ``n_rows`` rows, ``batch`` at a time (the one chunker, :func:`trustmap.models.base.row_slices`)."""
    return iter(row_slices(n_rows, batch))


#: per-sample draws and the blur live in :mod:`trustmap.baselines` (one home); kept here by name
sample_seeds = _baselines.sample_seeds
per_sample_normal = _baselines.sample_normal
spatial_blur = _baselines.gaussian_blur


def check_choice(value, choices, parameter: str, fix: str | None = None):
    if value not in choices:
        raise InputError("unknown option", parameter=parameter, expected="one of " + ", ".join(map(repr, choices)),
                         got=value, fix=fix or f"pass {parameter}={choices[0]!r}")
    return value


def check_number(value, parameter: str, *, minimum=None, maximum=None, integer: bool = False,
                 open_min: bool = False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and not (isinstance(value, (float, np.floating)) and not np.isfinite(value))  # NaN/Inf never valid
    if ok and integer:
        ok = float(value) == int(value)
    if ok and minimum is not None:
        ok = value > minimum if open_min else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        rng = []
        if minimum is not None:
            rng.append(("> " if open_min else ">= ") + str(minimum))
        if maximum is not None:
            rng.append("<= " + str(maximum))
        kind = "an integer" if integer else "a number"
        raise InputError("invalid value", parameter=parameter, expected=f"{kind} {' and '.join(rng)}".strip(),
                         got=value, fix=f"pass a valid {parameter}")
    return int(value) if integer else float(value)
