"""Method names -> explainer classes. Feeds ``trustmap.explain``, the CLI's choices and the
conformance tests."""

from __future__ import annotations

import difflib
import inspect
from typing import Callable, TypeVar

from ..errors import InputError

__all__ = ["REGISTRY", "register", "get_explainer", "list_methods", "methods_where", "METHOD_FACTS"]

REGISTRY: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make an :class:`~trustmap.explain.base.Explainer` available as ``name``.

    Parameters
    ----------
    name : str
        The method name the class is registered under (``get_explainer(name)``, the CLI's ``--method``).
        Registering a second, different class under a taken name is a programming error (``ValueError``).

    Returns
    -------
    callable
        The decorator: it records the class in :data:`REGISTRY`, sets its ``name`` attribute and returns
        the class unchanged.

    Examples
    --------
    >>> from trustmap.explain import REGISTRY, register
    >>> from trustmap.explain.gradients import Saliency
    >>> @register("my_saliency")
    ... class MySaliency(Saliency):
    ...     pass
    >>> REGISTRY["my_saliency"] is MySaliency, MySaliency.name
    (True, 'my_saliency')
    >>> del REGISTRY["my_saliency"]
    """

    def deco(cls: T) -> T:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"explainer name {name!r} is already registered")  # programming error
        REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def list_methods() -> list[str]:
    """The registered method names, sorted.

    Returns
    -------
    list of str
        Every name :func:`get_explainer` accepts, in alphabetical order (importing the method modules first).

    Examples
    --------
    >>> from trustmap.explain import list_methods
    >>> "gradcam" in list_methods()
    True
    """
    _load_all()
    return sorted(REGISTRY)


_MODULES = ("gradients", "cam", "actmax", "perturbation", "lime", "backprop", "lrp", "ablation", "tsr", "masks")

#: facts every explainer class declares (class attributes of :class:`~trustmap.explain.base.Explainer`)
METHOD_FACTS = ("needs_gradients", "synthesizes_inputs", "stochastic")


def methods_where(**facts: bool) -> list[str]:
    """The registered method names (sorted) whose classes have every given fact, e.g.
    ``methods_where(needs_gradients=False)`` (the forward-only methods, which run on ONNX models),
    ``methods_where(synthesizes_inputs=True)`` (methods that return a made-up input, not a map of the
    given one), ``methods_where(stochastic=True)`` (results depend on ``seed``).

    The one source of these lists: other layers derive theirs from here.

    Parameters
    ----------
    **facts : bool
        Keywords from :data:`METHOD_FACTS` (``needs_gradients``, ``synthesizes_inputs``, ``stochastic``);
        a method is kept when its class attribute has the same truth value for each. No keywords: all methods.

    Returns
    -------
    list of str
        The matching method names, sorted.

    Raises
    ------
    InputError
        A fact that is not one of :data:`METHOD_FACTS`.

    Examples
    --------
    >>> from trustmap.explain import methods_where
    >>> "occlusion" in methods_where(needs_gradients=False)
    True
    """
    for k in facts:
        if k not in METHOD_FACTS:
            raise InputError("unknown method fact", parameter=k, expected="one of " + ", ".join(METHOD_FACTS),
                             got=k, fix="pass one of those as a keyword")
    _load_all()
    return sorted(name for name, cls in REGISTRY.items()
                  if all(bool(getattr(cls, k)) == bool(v) for k, v in facts.items()))


def _load_all() -> None:
    """Import the method modules (registration happens on import); modules not written yet are skipped."""
    import importlib

    for mod in _MODULES:
        full = f"{__package__}.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise


def get_explainer(method: str, **params):
    """An explainer instance for ``method`` with ``params``; errors name what is accepted.

    Parameters
    ----------
    method : str
        A registered name (:func:`list_methods`).
    **params
        The explainer class's parameters (its ``__init__``; see :doc:`/methods`).

    Returns
    -------
    Explainer
        Configured, not yet run: call ``.explain(model, x, target=None, layout=None)``.

    Raises
    ------
    InputError
        An unknown method (with the closest names) or a parameter the method does not take.

    Examples
    --------
    >>> from trustmap.explain import get_explainer
    >>> ig = get_explainer("integrated_gradients", n_steps=32)
    >>> att = ig.explain(model, X)                       # reuse ig on other batches
    """
    _load_all()
    if not isinstance(method, str) or method not in REGISTRY:
        close = difflib.get_close_matches(str(method), list(REGISTRY), n=3)
        raise InputError("unknown explanation method", parameter="method",
                         expected="one of " + ", ".join(sorted(REGISTRY)), got=method,
                         fix=("did you mean " + " or ".join(map(repr, close)) + "?") if close
                         else "call trustmap.explain.list_methods() to see the names")
    cls = REGISTRY[method]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = [k for k in params if k not in accepted]
    if unknown:
        raise InputError(f"{method} does not take the parameter(s) {', '.join(unknown)}", parameter=unknown[0],
                         expected=("one of " + ", ".join(accepted)) if accepted else "no parameters",
                         got=unknown[0], fix=f"see help(trustmap.explain.REGISTRY[{method!r}])")
    return cls(**params)
