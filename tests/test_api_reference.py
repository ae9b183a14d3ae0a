"""The API reference covers every public name: each name in ``trustmap.__all__`` and in the
``__all__`` of every public module gets an entry (documented there, or linked to the one entry of the
same object), and a new public module without a page fails. Uses the site's own page generator
(docs/_ext/trustmap_docs.py); Sphinx is needed only to read ``#:`` comments of constants."""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import os  # noqa: E402

if os.environ.get("TRUSTMAP_REQUIRE_DOCS_SITE") == "1":  # .ci/run: the docs extra must be there
    import sphinx  # noqa: F401
else:
    pytest.importorskip("sphinx")
import trustmap  # noqa: E402
import trustmap_docs  # noqa: E402


def _public_modules():
    out = ["trustmap"]
    for info in pkgutil.iter_modules(trustmap.__path__):
        if not info.name.startswith("_"):
            mod = importlib.import_module(f"trustmap.{info.name}")
            if hasattr(mod, "__all__"):
                out.append(mod.__name__)
    return out


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    trustmap_docs.api_pages(out)
    return {p.stem: p.read_text(encoding="utf-8") for p in out.glob("*.rst")}


def test_every_public_module_has_a_page(pages):
    mods = _public_modules()
    assert len(mods) >= 15
    for m in mods:
        assert m in pages, f"no API page for {m}"
    index = pages["index"]
    for m in mods:
        assert re.search(rf"^   {re.escape(m)}$", index, re.M), f"{m} missing from the API index"


def test_every_name_in_every_all_has_an_entry(pages):
    n = 0
    for m in _public_modules():
        mod = importlib.import_module(m)
        text = pages[m]
        for name in mod.__all__:
            n += 1
            documented = re.search(rf"^\.\. (autoclass|autoexception|autofunction|py:data):: {re.escape(name)}$",
                                   text, re.M)
            linked = re.search(rf"^   \* - ``{re.escape(name)}``$", text, re.M)
            assert documented or linked, f"{m}.{name} has no entry on api/{m}.rst"
            if linked and not documented:
                # the link names the entry that documents the same object (or the submodule's page)
                line = text[linked.end():].splitlines()[1]
                home = re.search(r":py:obj:`([\w.]+)`|:doc:`([\w.]+)`", line)
                assert home, line
                if home.group(1):
                    mod_name, attr = home.group(1).rsplit(".", 1)
                    assert getattr(importlib.import_module(mod_name), attr) is getattr(mod, name)
                    assert re.search(rf"^\.\. (autoclass|autoexception|autofunction):: {attr}$",
                                     pages[mod_name], re.M)
    assert n > 200


def test_every_registered_explainer_is_documented(pages):
    from trustmap.explain import registry

    for name in registry.list_methods():
        cls = registry.REGISTRY[name]
        assert f".. currentmodule:: {cls.__module__}\n\n.. autoclass:: {cls.__name__}\n" in pages["trustmap.explain"]


def test_a_missing_module_fails_the_build(monkeypatch):
    monkeypatch.setattr(trustmap_docs, "MODULES", [m for m in trustmap_docs.MODULES if m != "trustmap.metrics"])
    with pytest.raises(RuntimeError, match="trustmap.metrics"):
        trustmap_docs.public_modules()


def test_methods_table_lists_every_method_and_fails_without_a_cost(tmp_path, monkeypatch):
    from trustmap.explain import registry

    trustmap_docs.methods_table(tmp_path / "t.rst")
    text = (tmp_path / "t.rst").read_text(encoding="utf-8")
    assert sorted(re.findall(r"^   \* - :py:class:`(\w+) <trustmap\.explain\.\w+\.\w+>`$", text, re.M)) == registry.list_methods()
    assert "``n_steps=" in text  # the defaults that set the cost come from the signatures
    monkeypatch.delitem(trustmap_docs.COST, "gradcam")
    with pytest.raises(RuntimeError, match="gradcam"):
        trustmap_docs.methods_table(tmp_path / "t2.rst")


def test_cli_page_has_every_subcommand(tmp_path):
    from trustmap.cli import build_parser

    trustmap_docs.cli_page(tmp_path / "cli.rst")
    text = (tmp_path / "cli.rst").read_text(encoding="utf-8")
    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 6
    for name in sub.choices:
        assert f"usage: trustmap {name}" in text
