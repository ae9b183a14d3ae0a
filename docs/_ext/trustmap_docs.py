"""Build-time page generators for the trustmap site (a local Sphinx extension).

Everything a user could see go stale is generated from the code when the site is built:

* ``api/*.rst``: one page per public module, one entry per name in its ``__all__``
  (:func:`api_pages`; ``tests/test_api_reference.py`` checks that no public name is missing);
* ``_generated/methods_table.rst``: the registered explainers with their facts and cost
  (:func:`methods_table`; a method without a cost entry fails the build);
* ``_generated/cli.rst``: ``trustmap --help`` and every subcommand's ``--help``;
* ``_generated/errors_table.rst``: the typed error classes and their builtin bases.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

#: the public modules, in the order their pages are generated: a class or function already documented
#: on an earlier page is listed on a later one as a link to that entry, so each object has one home.
#: Every public (no leading underscore) module directly under ``trustmap`` with an ``__all__`` must be
#: here (``public_modules`` checks).
MODULES = [
    "trustmap", "trustmap.attribution", "trustmap.errors", "trustmap.models", "trustmap.explain", "trustmap.localizer",
    "trustmap.metrics", "trustmap.datasets", "trustmap.data", "trustmap.baselines", "trustmap.layout",
    "trustmap.labels", "trustmap.plot", "trustmap.report", "trustmap.stream", "trustmap.jobs",
    "trustmap.zoo", "trustmap.workflows", "trustmap.records", "trustmap.interop", "trustmap.cli",
]

TITLES = {
    "trustmap": "trustmap: the top-level names",
    "trustmap.attribution": "trustmap.attribution: the result type",
    "trustmap.errors": "trustmap.errors: typed errors",
    "trustmap.models": "trustmap.models: model adapters",
    "trustmap.explain": "trustmap.explain: explainers",
    "trustmap.localizer": "trustmap.localizer: the TRUST localizer",
    "trustmap.metrics": "trustmap.metrics: scoring explanations and models",
    "trustmap.datasets": "trustmap.datasets: built-in data and readers",
    "trustmap.data": "trustmap.data: the package behind trustmap.datasets",
    "trustmap.baselines": "trustmap.baselines: one baseline specification",
    "trustmap.layout": "trustmap.layout: array layouts",
    "trustmap.labels": "trustmap.labels: label validation",
    "trustmap.plot": "trustmap.plot: matplotlib figures",
    "trustmap.report": "trustmap.report: the HTML report",
    "trustmap.stream": "trustmap.stream: data larger than memory",
    "trustmap.jobs": "trustmap.jobs: the job pipeline behind the CLI",
    "trustmap.zoo": "trustmap.zoo: reference models",
    "trustmap.workflows": "trustmap.workflows: train, evaluate, demo",
    "trustmap.records": "trustmap.records: weights + JSON records",
    "trustmap.interop": "trustmap.interop: other libraries",
    "trustmap.cli": "trustmap.cli: the command line entry point",
}


def public_modules() -> list[str]:
    """``MODULES``, after checking that it names every public module with an ``__all__``."""
    import pkgutil

    import trustmap

    found = {"trustmap"}
    for info in pkgutil.iter_modules(trustmap.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"trustmap.{info.name}")
        if hasattr(mod, "__all__"):
            found.add(mod.__name__)
    missing = sorted(found - set(MODULES))
    if missing:
        raise RuntimeError(f"public modules without an API page: {missing}; add them to MODULES in {__file__}")
    return list(MODULES)


def _kind(obj) -> str:
    if inspect.ismodule(obj):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or callable(obj) and hasattr(obj, "__wrapped__"):
        return "function"
    if callable(obj) and inspect.isroutine(getattr(obj, "__call__", None)) and not isinstance(obj, type):
        # a callable module stand-in or instance: document as data
        return "data"
    return "data"


def api_entries() -> dict[str, list[tuple[str, str, str | None]]]:
    """module -> [(name, kind, home)] for every name in the module's ``__all__``; ``home`` is the
    fully qualified name of the entry that documents the same object (``None``: documented here)."""
    homes: dict[int, str] = {}
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for modname in public_modules():
        mod = importlib.import_module(modname)
        rows = []
        for name in mod.__all__:
            obj = getattr(mod, name)
            kind = _kind(obj)
            home = None
            if kind == "module":
                home = obj.__name__
            elif kind in ("class", "exception", "function"):
                home = homes.get(id(obj))
                if home is None:
                    homes[id(obj)] = f"{modname}.{name}"
            rows.append((name, kind, home))
        out[modname] = rows
    return out


def _underline(text: str, ch: str = "=") -> str:
    return f"{text}\n{ch * len(text)}\n"


def api_pages(outdir: Path) -> list[str]:
    """Write ``outdir/<module>.rst`` for every public module and ``outdir/index.rst``; returns the
    module names."""
    outdir.mkdir(parents=True, exist_ok=True)
    entries = api_entries()
    for modname, rows in entries.items():
        lines = [".. This page is generated by docs/_ext/trustmap_docs.py at build time; do not edit.", "",
                 _underline(TITLES.get(modname, modname)),
                 f".. automodule:: {modname}", "   :no-members:", "",
                 f".. currentmodule:: {modname}", ""]
        # a summary first, as scikit-learn's API pages do
        lines += [".. list-table::", "   :widths: 30 70", ""]
        for name, kind, home in rows:
            if kind == "module":
                target = f":doc:`{home}`" if home in entries else f"``{home}``"
                lines += [f"   * - ``{name}``", f"     - submodule, see {target}"]
            elif home is not None:
                lines += [f"   * - ``{name}``", f"     - the same object as :py:obj:`{home}`"]
            else:
                role = {"class": "class", "exception": "exc", "function": "func", "data": "data"}[kind]
                lines += [f"   * - :py:{role}:`{name}`", f"     - {_summary(modname, name, kind)}"]
        lines.append("")
        subs = submodules(modname)
        if subs:
            # the submodules' docstrings (formats, conventions), so that :mod: references to them resolve;
            # their public names are documented above, under the package
            lines += [_underline("Submodules", "-"), ""]
            names = {name for name, _, _ in rows}
            for sub in subs:
                if sub.rsplit(".", 1)[1] not in names:  # trustmap.metrics.road is also a function's name
                    lines += [f".. py:module:: {sub}", "   :no-index-entry:", ""]
                lines += [f"``{sub}``", "", _docstring_block(sub), ""]
            lines += [f".. currentmodule:: {modname}", "", _underline("Reference", "-"), ""]
        for name, kind, home in rows:
            if kind == "module" or home is not None:
                continue
            if kind == "class":
                bases = getattr(importlib.import_module(modname), name).__bases__
                lines += [f".. autoclass:: {name}", "   :members:"]
                lines += ["   :show-inheritance:", ""] if bases != (object,) else [""]
            elif kind == "exception":
                lines += [f".. autoexception:: {name}", "   :show-inheritance:", ""]
            elif kind == "function":
                lines += [f".. autofunction:: {name}", ""]
            else:
                lines += _data_entry(modname, name)
        if modname == "trustmap.explain":
            lines += _explainer_entries()
        _write(outdir / f"{modname}.rst", "\n".join(lines))
    index = [".. This page is generated by docs/_ext/trustmap_docs.py at build time; do not edit.", "",
             _underline("API reference"),
             "Every name in ``trustmap.__all__`` and in the ``__all__`` of each public module, from the docstrings. "
             "A class or function exported by several modules is documented once, where it is listed first "
             "below, and linked from the others.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {m}" for m in entries]
    _write(outdir / "index.rst", "\n".join(index) + "\n")
    return list(entries)


def _summary(modname: str, name: str, kind: str) -> str:
    """The first sentence of an entry's documentation, for the summary table (as autosummary does)."""
    obj = getattr(importlib.import_module(modname), name)
    doc = _attr_doc(modname, name) if kind == "data" else inspect.getdoc(obj)
    if not doc:
        return kind
    import re

    para = doc.strip().split("\n\n")[0].replace("\n", " ")
    # cross-references lose their context in a table: keep the name, as code
    para = re.sub(r":\w+:`~?([^`<]*?)(?: <[^`]*>)?`", r"``\1``", para)
    for m in list(re.finditer(r"\. ", para)) + [None]:
        first = para if m is None else para[:m.start() + 1]
        if first.count("``") % 2 == 0 and first.count("*") % 2 == 0 and first.count("(") == first.count(")"):
            break  # a sentence end outside markup and brackets
    if len(first) > 200 or first.replace("``", "").count("`") % 2:
        return kind
    return first


def submodules(modname: str) -> list[str]:
    """The non-private submodules of a public package (none for a plain module)."""
    import pkgutil

    mod = importlib.import_module(modname)
    if not hasattr(mod, "__path__") or modname == "trustmap":
        return []
    return [f"{modname}.{i.name}" for i in pkgutil.iter_modules(mod.__path__) if not i.name.startswith("_")]


def _docstring_block(modname: str) -> str:
    """A module's docstring as RST, with napoleon's numpy sections left to the reader."""
    mod = importlib.import_module(modname)
    return inspect.cleandoc(mod.__doc__ or "(no module docstring)")


def homes() -> dict[int, str]:
    """id(object) -> the fully qualified name of its entry, for the classes and functions documented
    on the API pages."""
    out: dict[int, str] = {}
    for modname, rows in api_entries().items():
        mod = importlib.import_module(modname)
        for name, kind, home in rows:
            if home is None and kind in ("class", "exception", "function"):
                out[id(getattr(mod, name))] = f"{modname}.{name}"
    for key, home in explainer_homes().items():
        out.setdefault(key, home)
    return out


def lookup(dotted: str):
    """The object named ``dotted`` (``trustmap....``), or ``None``."""
    if not dotted.startswith("trustmap"):
        return None
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except Exception:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_alias(app, env, node, contnode):
    """A ``py`` reference to an object by another of its public names (``trustmap.metrics.evaluate_explanations``
    for :func:`trustmap.evaluate`, a class by its defining module) resolves to the entry documenting it."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    modname, clsname = node.get("py:module"), node.get("py:class")
    cands = [target]
    if modname:
        parts = modname.split(".")
        cands += [".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)]
        if clsname:
            cands.insert(1, f"{modname}.{clsname}.{target}")
    table = app.env.trustmap_homes if hasattr(app.env, "trustmap_homes") else None
    if table is None:
        table = app.env.trustmap_homes = homes()
    if modname:
        pkg = ".".join(modname.split(".")[:2])
        cands += [f"{sub}.{target}" for sub in submodules(pkg)]
    # last: the name in any public module (a docstring written in trustmap.jobs naming ``Dataset``)
    cands += [f"{m}.{target}" for m in MODULES if not target.startswith("trustmap")]
    found = False
    py = env.get_domain("py")
    for cand in cands:
        home = None
        obj = lookup(cand)
        if obj is None:
            continue
        found = True
        if cand != target:
            ref = py.resolve_xref(env, node["refdoc"], app.builder, "obj", cand, node, contnode)
            if ref is not None:
                return ref
        if obj is not None and id(obj) in table:
            home = table[id(obj)]
        elif "." in cand:
            parent, last = cand.rsplit(".", 1)
            pobj = lookup(parent)
            if pobj is not None and id(pobj) in table and hasattr(pobj, last):
                home = f"{table[id(pobj)]}.{last}"
        if home and home != target:
            ref = py.resolve_xref(env, node["refdoc"], app.builder, "obj", home, node, contnode)
            if ref is not None:
                return ref
    if found:
        # a real trustmap object that has no entry of its own (an internal helper): plain text, no link
        return contnode
    return None


def _explainer_entries() -> list[str]:
    """Every registered explainer class, documented under its module (their parameters are what
    ``trustmap.explain(..., **params)`` takes)."""
    from trustmap.explain import registry

    lines = [_underline("Explainers", "-"),
             "The class behind each method name; ``trustmap.explain(model, x, method=name, **params)`` "
             "passes ``params`` to it. See :doc:`/methods` for what each assumes and costs.", ""]
    for name in registry.list_methods():
        cls = registry.REGISTRY[name]
        lines += [f".. currentmodule:: {cls.__module__}", "",
                  f".. autoclass:: {cls.__name__}", "   :members: explain", "   :show-inheritance:", "",
                  f"   Method name: ``{name}``.", ""]
    return lines


def explainer_homes() -> dict[int, str]:
    from trustmap.explain import registry

    registry.list_methods()
    return {id(cls): f"{cls.__module__}.{cls.__name__}" for cls in registry.REGISTRY.values()}


def _attr_doc(modname: str, name: str) -> str | None:
    """The ``#:`` comment (or string) documenting ``name`` in ``modname`` or one of its submodules."""
    from sphinx.pycode import ModuleAnalyzer

    for mn in [modname] + submodules(modname):
        try:
            docs = ModuleAnalyzer.for_module(mn).find_attr_docs()
        except Exception:
            continue
        if ("", name) in docs:
            return "\n".join(docs[("", name)]).strip()
    return None


def _data_entry(modname: str, name: str) -> list[str]:
    """A constant: its documenting comment where there is one, else its value (never the docstring
    of its type, which is what autodoc shows for an undocumented dict)."""
    obj = getattr(importlib.import_module(modname), name)
    doc = _attr_doc(modname, name)
    value = repr(obj)
    if isinstance(obj, dict):
        value = "{" + ", ".join(repr(k) for k in obj) + "}" if all(isinstance(k, str) for k in obj) else value
        kind = "dict with the keys"
    else:
        kind = "value"
    if len(value) > 300:
        value = value[:297] + "..."
    lines = [f".. py:data:: {name}", ""]
    if doc:
        lines += ["   " + ln for ln in doc.splitlines()] + [""]
    lines += [f"   {kind.capitalize()}: ``{value}``" if "``" not in value else f"   ({type(obj).__name__})", ""]
    return lines


def _write(path: Path, text: str) -> None:
    """Write only when the text changed (keeps Sphinx's incremental build incremental)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.write_text(text, encoding="utf-8")


# --- which method when --------------------------------------------------------------------------

#: cost of one call per batch of inputs, in model passes, in terms of the method's parameters
#: (their defaults are printed beside). F = forward pass, B = backward pass.
COST = {
    "saliency": "1 F + 1 B",
    "smoothgrad": "``n_samples`` × (1 F + 1 B)",
    "integrated_gradients": "``n_steps`` × (1 F + 1 B)",
    "guided_backprop": "1 F + 1 B (modified ReLU backward)",
    "deconvolution": "1 F + 1 B (modified ReLU backward)",
    "input_x_gradient": "1 F + 1 B",
    "deeplift": "1 F + 1 B with the rescale rule at a reference shared by all inputs ('zero', 'dataset_mean', "
                "a number: one row, run once); "
                "2 F + 1 B when each input has its own reference ('mean', 'blur', 'noise', an array with one row per input)",
    "deeplift_shap": "per reference sample: 2 F + 1 B (references given as one set shared by all inputs run once: 1 F + 1 B)",
    "gradient_shap": "``n_samples`` × (1 F + 1 B) at random points between baseline and input",
    "gradcam": "1 F + 1 B (to the layer)",
    "hirescam": "1 F + 1 B (to the layer)",
    "gradcam_pp": "1 F + 1 B (to the layer)",
    "guided_gradcam": "2 F + 2 B (Grad-CAM and guided backprop)",
    "scorecam": "1 F + one F per activation channel of the layer",
    "ablationcam": "1 F + one F per activation channel of the layer",
    "lrp": "1 F + 1 relevance backward",
    "occlusion": "1 F + one F per window position",
    "feature_ablation": "1 F + one F per feature (segment)",
    "shapley_sampling": "``n_samples`` permutations × one F per feature",
    "lime": "``n_samples`` F + a weighted least-squares fit",
    "kernelshap": "``n_samples`` F + a weighted least-squares fit",
    "tsr": "the base method once per time window and once per (channel, window)",
    "extremal_mask": "``n_iter`` × (1 F + 1 B) per area",
    "dynamask": "``n_iter`` × (1 F + 1 B)",
    "activation_max": "``n_steps`` × (1 F + 1 B) per start; synthesizes inputs",
}

#: parameters whose defaults drive the cost
COST_PARAMS = ("n_samples", "n_steps", "n_iter", "n_starts", "window", "stride", "area", "n_references")


def methods_table(path: Path) -> None:
    """The registered explainers, from :mod:`trustmap.explain.registry`, as an RST table."""
    from trustmap.explain import registry

    names = registry.list_methods()
    missing = [n for n in names if n not in COST]
    if missing:
        raise RuntimeError(f"registered explainers without a cost entry in {__file__}: {missing}")
    lines = [".. generated from trustmap.explain.registry at build time", "",
             ".. list-table::", "   :header-rows: 1", "   :widths: 20 9 9 9 33 20", "",
             "   * - method (its class)", "     - gradients", "     - stochastic", "     - synthesizes",
             "     - cost per batch", "     - defaults that set the cost"]
    for n in names:
        cls = registry.REGISTRY[n]
        sig = inspect.signature(cls.__init__)
        defaults = ", ".join(f"``{p}={sig.parameters[p].default!r}``" for p in COST_PARAMS if p in sig.parameters
                             and sig.parameters[p].default is not inspect.Parameter.empty)
        yes = lambda v: "yes" if v else "no"  # noqa: E731
        home = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__module__.rsplit('.', 1)[1]}.{cls.__name__}"
        lines += [f"   * - :py:class:`{n} <{_class_home(cls) or home}>`",
                  f"     - {yes(cls.needs_gradients)}", f"     - {yes(cls.stochastic)}",
                  f"     - {yes(cls.synthesizes_inputs)}", f"     - {COST[n]}", f"     - {defaults or '—'}"]
    _write(path, "\n".join(lines) + "\n")


def _class_home(cls) -> str | None:
    for modname, rows in api_entries().items():
        mod = importlib.import_module(modname)
        for name, kind, home in rows:
            if home is None and getattr(mod, name) is cls:
                return f"{modname}.{name}"
    return None


# --- the command line -----------------------------------------------------------------------------

def cli_page(path: Path) -> None:
    """``trustmap --help`` and each subcommand's ``--help``, as printed by this version."""
    import argparse

    from trustmap.cli import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    parser.prog = "trustmap"
    lines = [".. generated from trustmap.cli.build_parser at build time", "",
             "``trustmap --help``", "", ".. code-block:: text", ""]
    lines += ["   " + ln for ln in parser.format_help().splitlines()] + [""]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for name, sub in action.choices.items():
            sub.prog = f"trustmap {name}"
            title = f"trustmap {name}"
            lines += [_underline(title, "-"), ".. code-block:: text", ""]
            lines += ["   " + ln for ln in sub.format_help().splitlines()] + [""]
    _write(path, "\n".join(lines) + "\n")


def errors_table(path: Path) -> None:
    from trustmap import errors

    lines = [".. generated from trustmap.errors at build time", "", ".. list-table::", "   :header-rows: 1",
             "   :widths: 25 25 50", "", "   * - class", "     - also a", "     - raised when"]
    for name in errors.__all__:
        cls = getattr(errors, name)
        builtins = ", ".join(f"``{b.__name__}``" for b in cls.__mro__[1:]
                             if b.__module__ == "builtins" and b not in (Exception, BaseException, object))
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"   * - :py:exc:`~trustmap.errors.{name}`", f"     - {builtins or '—'}", f"     - {doc}"]
    _write(path, "\n".join(lines) + "\n")


def generate(srcdir: Path) -> None:
    api_pages(srcdir / "api")
    gen = srcdir / "_generated"
    gen.mkdir(exist_ok=True)
    methods_table(gen / "methods_table.rst")
    cli_page(gen / "cli.rst")
    errors_table(gen / "errors_table.rst")


def setup(app):
    """A Sphinx extension only so that the build records it; ``conf.py`` calls :func:`generate`
    before Sphinx collects the source files. It resolves references to an object by any of its
    public names (:func:`_resolve_alias`)."""
    app.connect("missing-reference", _resolve_alias)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
