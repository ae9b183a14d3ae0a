"""Sphinx configuration of the trustmap documentation site.

Built offline by ``make docs`` into ``docs/_build/html`` (static files, no request to any other host).
``make docs DOCS_QUICK=1`` runs every tutorial with the smaller sizes of the CI build
(``TRUSTMAP_DOCS_QUICK=1``). The build runs with ``-W --keep-going`` and ``nitpicky``: a missing
reference, a docstring that does not parse or a tutorial that raises fails it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE / "_ext"))
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import trustmap  # noqa: E402
import trustmap_docs  # noqa: E402

project = "trustmap"
author = "the trustmap developers"
copyright = "2026, the trustmap developers"
release = version = trustmap.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "trustmap_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "tutorials/*.ipynb",
                    "tutorials/*.py", "tutorials/*.zip", "tutorials/*.md5", "tutorials/*.codeobj.json"]
nitpicky = True

# Pages generated from the code (API reference, methods table, CLI help, errors table).
trustmap_docs.generate(HERE)

# --- autodoc / napoleon (numpydoc-style docstrings) ---------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"          # the docstrings carry the types, in words users read
autodoc_default_options = {"exclude-members": "__init__, __weakref__, __dict__, __module__"}
autoclass_content = "class"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_param = False      # types as words, not as references
napoleon_use_ivar = False
napoleon_preprocess_types = False
add_module_names = False

# Types named in docstrings that belong to other libraries (no intersphinx: the build is offline)
# or are plain words; references to trustmap's own objects are still checked.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|torch|keras|matplotlib|mpl|pandas|pd|pyarrow|h5py|onnxruntime|ray|scipy|sklearn"
               r"|pathlib|os|typing|collections|datetime|argparse|io|json|dataclasses|contextlib|enum|abc)(\..*)?"),
    (r"py:.*", r"(ndarray|array|array-like|array_like|Tensor|tensor|Module|Figure|Axes|Path|PathLike|path"
               r"|str|int|float|bool|dict|list|tuple|set|bytes|callable|Callable|Iterable|Iterator|Sequence"
               r"|Mapping|Any|None|optional|default|or|of|shape|object|type|generator|number|numbers\.Real"
               r"|N|K|C|L|H|W|int64|int32|float32|float64|uint8|bool_)"),
    (r"py:.*", r".* .*"),   # a phrase in a napoleon type field ("bool with X's shape") is prose, not a name
]

# --- theme: furo, static, no outside requests --------------------------------------------------
html_theme = "furo"
html_title = f"trustmap {release}"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"   # served locally; without one the browser asks for /favicon.ico
html_show_sourcelink = False
html_copy_source = False
html_theme_options = {"sidebar_hide_name": False}

# --- MyST ----------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# --- sphinx-gallery: the tutorials ----------------------------------------------------------------
QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "tutorials",
    "filename_pattern": r"/plot_",          # execute every plot_*.py
    "abort_on_example_error": False,        # report every failing tutorial; -W then fails the build
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "show_memory": False,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "capture_repr": ("_repr_html_", "__repr__"),
    "image_scrapers": ("matplotlib",),
    "within_subsection_order": "FileNameSortKey",
    "reset_modules": ("matplotlib",),
}

# A quick and a full build share docs/tutorials: sphinx-gallery reruns a tutorial only when its
# source changes, so switching between the two sizes clears the executed outputs first.
_stamp = HERE / "tutorials" / ".trustmap-docs-mode"
_mode = "quick" if QUICK else "full"
if _stamp.exists() and _stamp.read_text() != _mode:
    import shutil

    shutil.rmtree(HERE / "tutorials")
(HERE / "tutorials").mkdir(exist_ok=True)
_stamp.write_text(_mode)
