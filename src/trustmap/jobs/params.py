"""Method options: ``METHOD.KEY=VALUE`` strings (the CLI's ``--param``) and JSON files (``--params``),
checked against each method's declared parameters before any work."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import InputError, MissingFileError

__all__ = ["parse_params", "method_names", "make_explainers", "parse_value"]


def method_names(methods) -> list[str]:
    """Method names from a list or one comma-separated string (each checked to be registered).

    Parameters
    ----------
    methods : str or sequence of str

    Returns
    -------
    list of str

    Raises
    ------
    InputError
        No method, or a name that is not registered.

    Examples
    --------
    >>> from trustmap.jobs import method_names
    >>> method_names("saliency, gradcam")
    ['saliency', 'gradcam']
    """
    from ..explain.registry import list_methods

    if isinstance(methods, str):
        names = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        names = [str(m).strip() for m in (methods or [])]
    if not names:
        raise InputError("no method given", parameter="methods", expected="one or more of " + ", ".join(list_methods()),
                         got=methods, fix="pass e.g. methods='gradcam,saliency'")
    if len(set(names)) != len(names):
        raise InputError("a method is named twice", parameter="methods", expected="distinct names", got=names,
                         fix="name each method once")
    return names


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (true, 3, 0.5, [1, 2], null), else the string itself."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    try:
        return json.loads(t)
    except ValueError:
        return t


def _accepted(name: str) -> list[str]:
    from ..explain.registry import REGISTRY, get_explainer

    if name not in REGISTRY:
        get_explainer(name)  # raises the unknown-method error with suggestions
    cls = REGISTRY[name]
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def parse_params(items: Iterable[str] | None = None, file: str | os.PathLike | None = None,
                 params: dict[str, dict[str, Any]] | None = None, methods: Sequence[str] | None = None,
                 extra: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """``{method: {key: value}}`` from ``--params FILE.json`` (``{"lime": {"n_samples": 500}}``), then
    ``--param METHOD.KEY=VALUE`` items (later ones win), merged over ``params``.

    Every method must be registered (or one of ``extra``, e.g. ``'trust'``), and every key one of its
    ``__init__`` parameters; ``methods`` (when given) must include every method that gets options.

    Parameters
    ----------
    items : iterable of str, optional
        ``METHOD.KEY=VALUE`` strings (values parsed as JSON when they can be).
    file : str or Path, optional
        A JSON file ``{method: {key: value}}``.
    params : dict, optional
        Options to start from.
    methods : sequence of str, optional
    extra : sequence of str
        Names accepted besides the registered methods.

    Returns
    -------
    dict of str to dict

    Raises
    ------
    InputError
        A malformed item, an unknown method or option, a method not in ``methods``, or a file
        that is not a JSON object of objects.
    MissingFileError
        ``file`` does not exist.

    Examples
    --------
    >>> from trustmap.jobs import parse_params
    >>> parse_params(["lime.n_samples=500", "smoothgrad.n_samples=8"])
    {'lime': {'n_samples': 500}, 'smoothgrad': {'n_samples': 8}}
    """
    from ..explain.registry import list_methods

    out: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (params or {}).items()}
    if file is not None:
        p = Path(file)
        if not p.is_file():
            raise MissingFileError("params file not found", parameter="params", expected="a JSON file",
                                   got=str(p), fix="check the path")
        try:
            loaded = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError("the params file is not JSON", parameter="params",
                             expected='{"METHOD": {"KEY": VALUE}}', got=str(exc), fix="fix the JSON") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise InputError("the params file must map method names to their options", parameter="params",
                             expected='{"lime": {"n_samples": 1000}}', got=type(loaded).__name__,
                             fix="write one object per method")
        for k, v in loaded.items():
            out.setdefault(k, {}).update(v)
    for item in items or ():
        head, eq, value = str(item).partition("=")
        method, dot, key = head.strip().partition(".")
        if not eq or not dot or not method or not key.strip():
            raise InputError("a method option is METHOD.KEY=VALUE", parameter="param",
                             expected="e.g. gradcam.per_channel=true", got=item,
                             fix="write --param METHOD.KEY=VALUE (one per option)")
        out.setdefault(method, {})[key.strip()] = parse_value(value)
    known = set(list_methods())
    for method, opts in out.items():
        if method in extra:
            continue
        if method not in known:
            _accepted(method)  # the unknown-method error
        accepted = _accepted(method)
        for key in opts:
            if key not in accepted:
                raise InputError(f"{method} has no parameter {key!r}", parameter=f"{method}.{key}",
                                 expected=("one of " + ", ".join(accepted)) if accepted else "no parameters",
                                 got=key, fix=f"see help(trustmap.explain.REGISTRY[{method!r}])")
        if methods is not None and method not in methods:
            raise InputError("options given for a method that is not run", parameter="params",
                             expected="methods among " + ", ".join(methods), got=method,
                             fix="add the method to the methods run, or drop its options")
    return out


def make_explainers(methods, params: dict[str, dict[str, Any]] | None = None) -> dict:
    """``{name: explainer}`` for method names and their options ``{name: {...}}``; every name and
    option is checked (and every explainer built, which checks the values) before any work.

    Parameters
    ----------
    methods : str or sequence of str
    params : dict, optional
        ``{method: {option: value}}``.

    Returns
    -------
    dict of str to Explainer

    Raises
    ------
    InputError
        An unknown method or option, or an option value the explainer refuses.

    Examples
    --------
    >>> from trustmap.jobs import make_explainers
    >>> make_explainers(["saliency"], {"saliency": {"absolute": False}})
    {'saliency': Saliency(absolute=False, times_input=False)}
    """
    from ..explain.registry import get_explainer

    names = method_names(methods)
    params = parse_params(params=params, methods=names)
    return {name: get_explainer(name, **params.get(name, {})) for name in names}
