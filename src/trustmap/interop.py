"""trustmap inside Quantus and Captum workflows.

* :func:`quantus_explain_func` — a Quantus ``explain_func``: ``f(model, inputs, targets, **kwargs)``
  returning numpy attributions with the shape of ``inputs``. Quantus hands ``inputs`` over
  channels-first (its convention, after ``make_channel_first``) whatever the model takes; the
  function reads them as channels-first (``'NCL'`` / ``'NCHW'``) when that fits the model and lets
  trustmap adapt the layout, so a channels-last Keras model works (Quantus' own explainers fail
  there with "operands could not be broadcast (8,200,1) (8,1,200)").
* :meth:`trustmap.Model.as_torch` — a channels-first ``nn.Module`` view of any loaded model
  (Keras and ONNX included), to give Quantus or Captum a model they can call:
  ``quantus.MaxSensitivity()(model=load_model(keras_model).as_torch(), x_batch=..., ...)``.
* :func:`trustmap.evaluate` takes Captum's output tensors (and any array shaped like ``X``) as
  attributions: ``trustmap.evaluate(model, X, y, {"ig": ig.attribute(x, target=y)})``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import InputError
from .layout import LAYOUTS

__all__ = ["quantus_explain_func", "QUANTUS_IGNORED_KWARGS"]

#: keyword arguments Quantus may pass to an explain_func that are not explainer parameters
QUANTUS_IGNORED_KWARGS = ("device", "channel_first", "softmax", "method", "model_predict_kwargs", "xai_lib",
                          "reduce_axes", "abs", "normalise")


def _unwrap(model):
    # Quantus passes the user's model; a Quantus ModelInterface or our TorchView also come through
    if hasattr(model, "trustmap_model"):
        return model.trustmap_model
    if hasattr(model, "get_model") and callable(model.get_model):
        return model.get_model()
    return model


def _layout_for(m, shape: tuple[int, ...], layout: str | None) -> str | None:
    if layout is not None:
        return layout
    first = "NCL" if m.rank == 1 else "NCHW"
    if len(shape) == LAYOUTS[first][0] + 2 and shape[1] == m.channels:
        sp = m.spatial
        if sp is None or all(s is None or s == d for s, d in zip(sp, shape[2:])):
            return first
    return None  # let trustmap resolve (e.g. channels-last inputs given directly)


def quantus_explain_func(method: str, layout: str | None = None, **params) -> Callable[..., np.ndarray]:
    """A Quantus ``explain_func`` running trustmap's ``method`` with ``params``.

    The returned ``explain_func(model, inputs, targets, **kwargs)`` loads ``model`` (torch,
    Keras, ONNX, a path, or a :class:`~trustmap.Model` / its :meth:`~trustmap.Model.as_torch`
    view; loaded models are cached by identity), explains ``inputs`` (numpy or tensor;
    channels-first when that fits the model, else ``layout`` or trustmap's resolution) for
    ``targets`` (an int or one per sample) and returns ``float32`` numpy maps with the shape
    of ``inputs``. ``kwargs`` that are parameters of the method override ``params``; Quantus'
    bookkeeping keywords (:data:`QUANTUS_IGNORED_KWARGS`) are ignored; anything else is an error.

    Parameters
    ----------
    method : str
        A registered method name (:func:`trustmap.explain.list_methods`).
    layout : str, optional
        Layout of the inputs when channels-first does not fit the model.
    **params
        The method's parameters.

    Returns
    -------
    callable
        ``explain_func(model, inputs, targets, **kwargs) -> ndarray``.

    Raises
    ------
    InputError
        An unknown method or parameter (when building it, or from ``kwargs`` when called).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from trustmap.interop import quantus_explain_func
    >>> explain_func = quantus_explain_func("saliency")
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> a = explain_func(net, np.zeros((2, 1, 16), np.float32), np.array([0, 1]))
    >>> a.shape, a.dtype
    ((2, 1, 16), dtype('float32'))
    """
    from .explain import get_explainer
    from .models import load_model

    get_explainer(method, **params)  # validate now, not inside Quantus' loop
    cache: dict[int, Any] = {}

    def explain_func(model, inputs, targets=None, **kwargs) -> np.ndarray:
        extra = {k: v for k, v in kwargs.items() if k not in QUANTUS_IGNORED_KWARGS}
        if kwargs.get("method") not in (None, method):
            raise InputError("this explain_func runs another method", parameter="method", expected=method,
                             got=kwargs["method"], fix=f"make another with quantus_explain_func({kwargs['method']!r})")
        ex = get_explainer(method, **{**params, **extra})  # unknown parameters: InputError naming them
        raw = _unwrap(model)
        m = cache.get(id(raw))
        if m is None:
            m = cache[id(raw)] = load_model(raw)
        x = inputs.detach().cpu().numpy() if hasattr(inputs, "detach") else np.asarray(inputs)
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        t = targets
        if t is not None:
            t = np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t).astype(np.int64).reshape(-1)
            t = int(t[0]) if t.size == 1 and len(x) != 1 else t
        attr = ex.explain(m, x, target=t, layout=_layout_for(m, tuple(x.shape), layout))
        out = np.asarray(attr.maps, dtype=np.float32)
        if out.shape != x.shape:  # never happens with trustmap's explainers; guard the contract
            out = out.reshape(x.shape)
        return out

    explain_func.__name__ = f"trustmap_{method}"
    explain_func.__qualname__ = explain_func.__name__
    return explain_func
