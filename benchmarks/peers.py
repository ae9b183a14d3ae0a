"""The peer packages of the benchmarks (Captum, Zennit, Quantus, lime, pytorch-grad-cam, shap), installed
without their dependencies into ``.venv-bench/site`` and imported by ``.venv``'s python (one torch, the CPU
wheel; the peers' other dependencies come from trustmap's ``[all]`` extras)::

    .venv/bin/python -m pip install --no-deps --target .venv-bench/site -r benchmarks/requirements-peers.txt

(``make bench`` does this). Two peers import ``torchvision`` at package import without needing it for what
the benchmarks run: Zennit (its ResNet canonizers name ``torchvision.models.resnet.Bottleneck`` /
``BasicBlock``) and pytorch-grad-cam (``torchvision.transforms`` for image preprocessing and SESS, ``torchvision.ops``
for detection targets). Where torchvision is missing, :func:`use_peers` registers a stub module holding
those names as placeholders; calling one raises. The stub lives here, never in the package.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

DEFAULT_SITE = Path(__file__).resolve().parents[1] / ".venv-bench" / "site"


def _placeholder(name: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"torchvision.{name} is a benchmark stub (torchvision is not installed)")

    return type(name.rsplit(".", 1)[-1], (), {"__init__": fail, "__call__": fail})


def stub_torchvision() -> bool:
    """Register the torchvision stub when torchvision cannot be imported; True when it did."""
    try:
        import torchvision  # noqa: F401

        return False
    except Exception:
        pass
    import torch.nn as nn

    mods = {n: types.ModuleType(n) for n in ("torchvision", "torchvision.models", "torchvision.models.resnet",
                                             "torchvision.transforms", "torchvision.transforms.functional",
                                             "torchvision.ops")}
    mods["torchvision.transforms"].__path__ = []  # a package: pytorch-grad-cam imports its submodule
    mods["torchvision.transforms.functional"].resize = _placeholder("transforms.functional.resize")
    mods["torchvision.transforms"].functional = mods["torchvision.transforms.functional"]
    mods["torchvision.models.resnet"].Bottleneck = type("Bottleneck", (nn.Module,), {})
    mods["torchvision.models.resnet"].BasicBlock = type("BasicBlock", (nn.Module,), {})
    for name in ("Compose", "Normalize", "ToTensor", "Resize"):
        setattr(mods["torchvision.transforms"], name, _placeholder(f"transforms.{name}"))
    mods["torchvision.ops"].box_iou = _placeholder("ops.box_iou")
    tv = mods["torchvision"]
    tv.models, tv.transforms, tv.ops = mods["torchvision.models"], mods["torchvision.transforms"], mods["torchvision.ops"]
    mods["torchvision.models"].resnet = mods["torchvision.models.resnet"]
    tv.__version__ = "0.0+benchmark-stub"
    sys.modules.update(mods)
    return True


def use_peers(site: str | os.PathLike | None = None) -> dict[str, str]:
    """Append the peers' folder (``site``, else ``$TRUSTMAP_PEERS``, else ``.venv-bench/site``) to sys.path
    after trustmap's own, stub torchvision where missing; {peer: version, or why it cannot be imported}."""
    site = Path(site or os.environ.get("TRUSTMAP_PEERS") or DEFAULT_SITE).resolve()
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))
    stub_torchvision()
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for mod, dist in (("captum", "captum"), ("zennit", "zennit"), ("pytorch_grad_cam", "grad-cam")):
        try:
            __import__(mod)
            try:
                found[dist] = version(dist)
            except PackageNotFoundError:
                found[dist] = "?"
        except Exception as exc:
            found[dist] = f"not importable ({type(exc).__name__}: {exc})"
    return found
