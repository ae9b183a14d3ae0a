"""Issue 16's gradient-family and ablation methods side by side with Captum and Zennit, in one run:
the time of each implementation, its ratio to the method's floor, and (where the method is
deterministic) the largest absolute difference from trustmap's map on the same model and inputs.

One command (trustmap from src/, the peers from the folder they were installed into with
``pip install --no-deps --target``: benchmarks/requirements-peers.txt, benchmarks/peers.py)::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_explain16.py \
        --peers .venv-bench/site --out benchmarks/results_explain16.md      # --quick: 64 inputs, 1D only

Zennit imports ``torchvision`` at package import (for its ResNet canonizers); where torchvision is
missing benchmarks/peers.py registers a stub before Zennit is imported (the package never sees it).
A peer that cannot run a case is listed as "fails" with its error.

Floors (benchmarks/harness.py, batched passes over the same inputs): 1 fwd+bwd for
input_x_gradient, deconvolution and LRP-ε; 1 fwd+bwd for DeepLIFT at a constant baseline (the
reference is one row, run once; a per-sample reference would add 1 forward without gradient); M fwd+bwd for DeepLIFT-SHAP over M references shared by the inputs (the references run once); n_samples fwd+bwd
for GradientSHAP; F + 1 fwd for feature ablation over F features; P·F + 1 fwd for Shapley
sampling with P permutations. LRP composites other than ε cost more than a gradient by their
definition: the γ and αβ rules need a layer's positive and negative parts (on the non-negative
inputs after a ReLU: two products forward and two transposed products backward besides the layer's
own forward; floor 3 fwd + 2 bwd), z⁺ and the flat first layer one product and one transposed
product (floor 2 fwd + 1 bwd).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench_explain import MODELS, _peer, _quiet, measure  # noqa: E402
from harness import floor_backward, floor_forward  # noqa: E402
from peers import use_peers  # noqa: E402

import trustmap  # noqa: E402
from trustmap.explain import explain  # noqa: E402

EPS = 1e-6
COMPOSITES = ("epsilon", "gamma", "alpha_beta", "epsilon_plus_flat")
LRP_FLOOR = {"epsilon": ("fb1", "1 fwd+bwd"), "gamma": ("f1+fb2", "3 fwd + 2 bwd"),
             "alpha_beta": ("f1+fb2", "3 fwd + 2 bwd"), "epsilon_plus_flat": ("f1+fb1", "2 fwd + 1 bwd")}


def zennit_composite(name: str, eps: float = EPS):
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlusFlat, LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, Gamma
    from zennit.types import Convolution

    can = [SequentialMergeBatchNorm()]
    if name == "alpha_beta":
        return EpsilonAlpha2Beta1(epsilon=eps, canonizers=can)
    if name == "epsilon_plus_flat":
        return EpsilonPlusFlat(epsilon=eps, canonizers=can)
    conv_rule = Epsilon(epsilon=eps) if name == "epsilon" else Gamma(gamma=0.25)
    return LayerMapComposite(layer_map=layer_map_base() + [(Convolution, conv_rule),
                                                           (nn.Linear, Epsilon(epsilon=eps))], canonizers=can)


def zennit_lrp(module, x, y, composite, eps=EPS):
    from zennit.attribution import Gradient

    onehot = torch.nn.functional.one_hot(torch.as_tensor(y), module(x[:1]).shape[1]).to(x.dtype)
    with Gradient(model=module, composite=zennit_composite(composite, eps)) as attributor:
        _, rel = attributor(x, lambda out: out * onehot)
    return rel


def rules_net(seed: int = 0) -> nn.Module:
    """Every rule in one small net: conv + BatchNorm (folded), ReLU, max pooling, tanh, average pooling,
    flatten, dense (the model of tests/test_explain_lrp.py)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(2),
                        nn.Conv1d(4, 4, 3, padding=1), nn.Tanh(), nn.AvgPool1d(2), nn.Flatten(),
                        nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 1.5)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
    return net.eval()


def pool_first_net(seed: int = 5) -> nn.Module:
    """Max pooling straight after a convolution and nonlinearities straight after pooling: where Captum's
    hook order drops the rule of the upper of two chained hooked modules (DeepLift's ``maxpool``)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.MaxPool1d(2), nn.ReLU(), nn.Conv1d(4, 4, 3, padding=1),
                         nn.ELU(), nn.MaxPool1d(2), nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 3)).eval()


def agreement(found: dict) -> list[str]:
    """Max |trustmap − peer| of the deterministic methods on rules_net (every LRP rule) and a 2D CNN."""
    lines = ["| model | method | peer | max abs difference | max abs map |", "|---|---|---|---:|---:|"]
    from trustmap.zoo.models import mnist2d_cnn

    torch.manual_seed(1)
    from trustmap.zoo.models import mnist1d_cnn

    cases = [("rules_net (1D: conv+BN, ReLU, max/avg pool, tanh, dense)", rules_net(), (2, 16)),
             ("mnist1d_cnn (no max pooling)", mnist1d_cnn().eval(), (1, 40)),
             ("mnist2d_cnn 16×16", mnist2d_cnn(size=(16, 16)).eval(), (1, 16, 16)),
             ("pool_first (1D: conv, max pool, ReLU, conv, ELU, max pool, sigmoid, dense)", pool_first_net(), (2, 16))]
    for label, module, shape in cases:
        x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = module(x).argmax(1).numpy()
        yt = torch.as_tensor(y)

        def row(method, peer, ours, theirs):
            d = float(np.abs(np.asarray(ours) - np.asarray(theirs)).max())
            lines.append(f"| {label} | {method} | {peer} | {d:.1e} | {float(np.abs(ours).max()):.2g} |")
            print(lines[-1], flush=True)

        if not found["zennit"].startswith("not"):
            for comp in COMPOSITES:
                ours = explain(module, x.numpy(), "lrp", target=y, composite=comp, epsilon=EPS).maps
                try:
                    row(f"lrp {comp}", f"zennit {found['zennit']}", ours, zennit_lrp(module, x, y, comp).numpy())
                except Exception as exc:
                    lines.append(f"| {label} | lrp {comp} | zennit | fails: {type(exc).__name__}: {exc} | |")
        if found["captum"].startswith("not"):
            continue
        import captum.attr as ca

        ref = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
        pairs = [("input_x_gradient", {}, lambda: ca.InputXGradient(module).attribute(x, target=yt)),
                 ("deconvolution", {}, lambda: ca.Deconvolution(module).attribute(x, target=yt)),
                 ("deeplift", {"baseline": 0.0}, lambda: ca.DeepLift(module).attribute(x, baselines=0.0, target=yt)),
                 ("deeplift_shap", {"baselines": ref.numpy()},
                  lambda: ca.DeepLiftShap(module).attribute(x, baselines=ref, target=yt))]
        for method, params, peer in pairs:
            ours = explain(module, x.numpy(), method, target=y, **params).maps
            with _quiet():
                row(method, f"captum {found['captum']}", ours, peer().detach().numpy())
        if any(isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) for m in module.modules()):
            # the other max-pooling rule (exact summation-to-delta for any reference) is not Captum's
            ours = explain(module, x.numpy(), "deeplift_shap", target=y, baselines=ref.numpy(),
                           maxpool="cross_max").maps
            with _quiet():
                theirs = ca.DeepLiftShap(module).attribute(x, baselines=ref, target=yt).detach().numpy()
            row("deeplift_shap maxpool='cross_max'", f"captum {found['captum']} (not its rule)", ours, theirs)
        a = explain(module, x.numpy(), "feature_ablation", target=y, segmentation="fixed", segment_size=4)
        mask = torch.as_tensor(a.extras["segments"]).long()[:, None]
        with _quiet():
            theirs = ca.FeatureAblation(module).attribute(x, baselines=0.0, target=yt, feature_mask=mask,
                                                         perturbations_per_eval=8)
        row("feature_ablation", f"captum {found['captum']}", a.maps, theirs.numpy())
    return lines


def peer_impls(method, params, module, x, y, refs, seg):
    """{implementation: callable} for the peers that offer ``method`` at the same parameters."""
    out = {}
    yt = torch.as_tensor(y)
    try:
        import captum.attr as ca
    except ImportError:
        ca = None
    if method.startswith("lrp"):
        comp = params["composite"]
        if "zennit" in sys.modules or _importable("zennit"):
            out["zennit"] = lambda: zennit_lrp(module, x, y, comp)
        if ca is not None and comp == "epsilon":
            out["captum LRP (ε rule)"] = lambda: ca.LRP(module).attribute(x, target=yt)
        return out
    if ca is None:
        return out
    fm = None if seg is None else torch.as_tensor(seg).long()[:, None]
    table = {
        "input_x_gradient": lambda: ca.InputXGradient(module).attribute(x, target=yt),
        "deconvolution": lambda: ca.Deconvolution(module).attribute(x, target=yt),
        "deeplift": lambda: ca.DeepLift(module).attribute(x, baselines=0.0, target=yt),
        "deeplift_shap": lambda: ca.DeepLiftShap(module).attribute(x, baselines=refs, target=yt),
        "gradient_shap": lambda: ca.GradientShap(module).attribute(x, baselines=refs, target=yt,
                                                                   n_samples=params.get("n_samples", 25)),
        "feature_ablation": lambda: ca.FeatureAblation(module).attribute(
            x, baselines=0.0, target=yt, feature_mask=fm, perturbations_per_eval=8),
        "shapley_sampling": lambda: ca.ShapleyValueSampling(module).attribute(
            x, baselines=0.0, target=yt, feature_mask=fm, n_samples=params.get("n_permutations", 2),
            perturbations_per_eval=8),
    }
    if method in table:
        out[f"captum {_captum_name(method)}"] = table[method]
    return out


def _captum_name(method):
    return {"input_x_gradient": "InputXGradient", "deconvolution": "Deconvolution", "deeplift": "DeepLift",
            "deeplift_shap": "DeepLiftShap", "gradient_shap": "GradientShap", "feature_ablation": "FeatureAblation",
            "shapley_sampling": "ShapleyValueSampling"}[method]


def _importable(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False


def bench_model(name, n, rows, methods):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    module = build().eval()
    model = trustmap.load_model(module)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = module(x).argmax(1).numpy()
    refs = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    seg = explain(model, x.numpy()[:n], "feature_ablation", target=y, segmentation="fixed",
                  segment_size=8).extras
    n_feat = int(round(float(np.mean(seg["n_features"]))))
    seg = seg.get("segments")
    floors = {}

    def floor(kind):
        if kind not in floors:
            parts = [floor_backward(model, x, int(k[2:])) if k.startswith("fb") else floor_forward(model, x, int(k[1:]))
                     for k in kind.split("+")]
            floors[kind] = sum(measure(fn) for fn in parts)
            print(f"  floor {kind}: {floors[kind]:.3f}s", flush=True)
        return floors[kind]

    m = len(refs)
    spec = {
        "input_x_gradient": ({}, "fb1", "1 fwd+bwd"),
        "deconvolution": ({}, "fb1", "1 fwd+bwd"),
        "deeplift": ({"baseline": 0.0}, "fb1", "1 fwd+bwd (the constant reference runs once)"),
        "deeplift_shap": ({"baselines": refs.numpy()}, f"fb{m}", f"{m} fwd+bwd ({m} shared references, run once)"),
        "gradient_shap": ({"baselines": refs.numpy(), "n_samples": 25}, "fb25", "25 fwd+bwd"),
        "feature_ablation": ({"segmentation": "fixed", "segment_size": 8}, f"f{n_feat + 1}",
                             f"{n_feat + 1} fwd ({n_feat} features + input)"),
        "shapley_sampling": ({"segmentation": "fixed", "segment_size": 8, "n_permutations": 2},
                             f"f{2 * n_feat + 1}", f"{2 * n_feat + 1} fwd"),
    }
    for comp in COMPOSITES:
        spec[f"lrp {comp}"] = ({"composite": comp, "epsilon": EPS}, *LRP_FLOOR[comp])
    for method in methods:
        if method not in spec:
            continue
        params, kind, label = spec[method]
        f = floor(kind)
        base = method.split()[0]
        impls = {"trustmap": lambda base=base, params=params: explain(model, x.numpy(), base, target=y, **params)}
        impls.update(peer_impls(method, params, module, x, y, refs, seg))
        for impl, fn in impls.items():
            if impl == "trustmap":
                t, note = measure(fn), ""
            else:
                t, note = _peer(impl, fn)
            rows.append(dict(model=name, method=method, impl=impl, time=t, floor=f, floor_label=label, note=note))
            shown = "fails" if t is None else f"{t:.3f}s = {t / f:.2f}x floor"
            print(f"  {method:24s} {impl:28s} {shown} {note}", flush=True)


ALL = ("input_x_gradient", "deconvolution", "deeplift", "deeplift_shap", "gradient_shap",
       *(f"lrp {c}" for c in COMPOSITES), "feature_ablation", "shapley_sampling")


def run(quick: bool = False) -> str:
    """The markdown section for benchmarks/run.py (`make bench`)."""
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        return main(["--quick"] if quick else [])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="inputs per model (default 200)")
    p.add_argument("--quick", action="store_true", help="64 inputs, the 1D model only")
    p.add_argument("--models", default="mnist1d_cnn,mnist2d_cnn")
    p.add_argument("--methods", default=",".join(ALL))
    p.add_argument("--peers", default=None, help="folder holding captum and zennit (pip install --no-deps "
                   "--target; default $TRUSTMAP_PEERS or .venv-bench/site)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    found = use_peers(args.peers)
    n = 64 if args.quick else args.n
    models = ["mnist1d_cnn"] if args.quick else args.models.split(",")
    print("agreement on the same model and inputs", flush=True)
    agree = agreement(found)
    rows = []
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in models:
        print(name, flush=True)
        bench_model(name, n, rows, methods)
    machine = f"{platform.machine()} ({os.cpu_count()} cores)"
    out = ["## Explainers: issue 16's methods beside Captum and Zennit", "",
           f"`benchmarks/bench_explain16.py`, {n} inputs per model (random weights, predicted classes as targets), "
           f"one thread, {machine}; torch {torch.__version__}, captum {found['captum']}, zennit {found['zennit']}. "
           "Ratio = wall time / the method's floor measured in the same run.", "",
           "| model | method | implementation | time (s) | floor | floor (s) | ratio to floor |",
           "|---|---|---|---:|---|---:|---:|"]
    for r in rows:
        t = "fails" if r["time"] is None else f"{r['time']:.3f}"
        ratio = "—" if r["time"] is None else f"{r['time'] / r['floor']:.2f}×"
        impl = r["impl"] + (f" ({r['note']})" if r["note"] else "")
        out.append(f"| {r['model']} | {r['method']} | {impl} | {t} | {r['floor_label']} | {r['floor']:.3f} | {ratio} |")
    out += ["", "Agreement with the peers (16 inputs, same model, same targets; ε = 1e-6; DeepLIFT-SHAP over the "
            "same 4 references; feature ablation over the same blocks of 4):", ""] + agree + [""]
    text = "\n".join(out)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
