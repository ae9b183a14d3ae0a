"""Speed of the gradient and CAM explainers: ratio to the physical floor, beside Captum and
pytorch-grad-cam, in one run.

Run it with .venv's python; the peers (captum, grad-cam) come from ``.venv-bench/site`` (see
benchmarks/peers.py; trustmap is taken from src/)::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_explain.py \
        --out benchmarks/results_explain.md

Issue 16's methods beside Captum and Zennit: benchmarks/bench_explain16.py.

The floor of each method is the batched work it cannot avoid (benchmarks/harness.py):
one forward+backward pass (saliency, guided backprop, Grad-CAM, Grad-CAM++), fifty
forward+backward passes (integrated gradients, 50 steps), K forward passes (Score-CAM,
Ablation-CAM; K = channels of the explained layer), all at batch 1000. Every method gets the
same explicit targets (the predicted classes) and 1000 inputs. Models have random weights
(timing does not depend on training).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness import floor_backward, floor_forward, timeit  # noqa: E402
from peers import use_peers  # noqa: E402

import trustmap  # noqa: E402
from trustmap.explain import explain  # noqa: E402
from trustmap.zoo.models import ecg_fcn, mnist1d_cnn, mnist2d_cnn  # noqa: E402

MODELS = {
    "mnist1d_cnn": (lambda: mnist1d_cnn(), (1, 40)),
    "ecg_fcn": (lambda: ecg_fcn(in_channels=12, length=250, n_classes=2), (12, 250)),
    "mnist2d_cnn": (lambda: mnist2d_cnn(), (1, 28, 28)),
}
METHODS = ("saliency", "guided_backprop", "gradcam", "gradcam_pp", "integrated_gradients", "scorecam",
           "ablationcam")
#: issue 16's methods (``--methods new``), with the parameters they are timed at; their floors are the
#: model passes the method cannot avoid at those parameters (counted from the method's own extras)
NEW_METHODS = ("input_x_gradient", "deconvolution", "deeplift", "deeplift_shap", "gradient_shap", "lrp",
               "feature_ablation", "shapley_sampling", "tsr", "extremal_mask", "dynamask")
NEW_PARAMS = {"deeplift_shap": {"n_baselines": 4}, "gradient_shap": {"n_samples": 25, "n_baselines": 4},
              "shapley_sampling": {"n_permutations": 2, "segment_size": 8},
              "feature_ablation": {"segment_size": 8}, "tsr": {"window": 10},
              "extremal_mask": {"n_iter": 20, "area": 0.1}, "dynamask": {"n_iter": 20, "area": 0.1}}


def measure(fn, cheap_below: float = 3.0) -> float:
    """Wall time of fn(): a single run when it is slow, else the best of 1 + 3 runs."""
    with _quiet():
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        if first >= cheap_below:
            return first
        return min(first, timeit(fn, repeats=3, warmup=0))


@contextlib.contextmanager
def _quiet():
    """Silence progress bars (pytorch-grad-cam's tqdm) and warnings while timing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


def _peer(name, fn):
    try:
        with _quiet():
            fn()  # it has to work before it is timed
    except Exception as exc:  # record why a peer cannot do it
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:110]
        return None, msg
    return measure(fn), ""


def peers_for(method, module, layer_module, x, y, rank):
    """{implementation: callable} of the peers that offer ``method``."""
    out = {}
    try:
        import captum.attr as ca
    except ImportError:
        ca = None
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        pgc = None
    yt = torch.as_tensor(y)
    if ca is not None:
        if method == "saliency":
            out["captum Saliency"] = lambda: ca.Saliency(module).attribute(x, target=yt, abs=True)
        elif method == "guided_backprop":
            out["captum GuidedBackprop"] = lambda: ca.GuidedBackprop(module).attribute(x, target=yt)
        elif method == "gradcam":
            def captum_gradcam():
                a = ca.LayerGradCam(module, layer_module).attribute(x, target=yt, relu_attributions=True)
                return ca.LayerAttribution.interpolate(a, tuple(x.shape[2:]),
                                                       interpolate_mode="linear" if rank == 1 else "bilinear")

            out["captum LayerGradCam"] = captum_gradcam
        elif method == "integrated_gradients":
            out["captum IntegratedGradients"] = lambda: ca.IntegratedGradients(module).attribute(
                x, baselines=0.0, target=yt, n_steps=50, internal_batch_size=1000)
        elif method == "input_x_gradient":
            out["captum InputXGradient"] = lambda: ca.InputXGradient(module).attribute(x, target=yt)
        elif method == "deconvolution":
            out["captum Deconvolution"] = lambda: ca.Deconvolution(module).attribute(x, target=yt)
        elif method == "deeplift":
            out["captum DeepLift"] = lambda: ca.DeepLift(module).attribute(x, baselines=0.0, target=yt)
        elif method == "gradient_shap":
            out["captum GradientShap"] = lambda: ca.GradientShap(module).attribute(
                x, baselines=torch.randn(4, *x.shape[1:]), target=yt, n_samples=25)
    if pgc is not None:
        cls = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "scorecam": "ScoreCAM",
               "ablationcam": "AblationCAM"}.get(method)
        if cls is not None:
            def run_pgc(cls=cls):
                targets = [ClassifierOutputTarget(int(c)) for c in y]
                with getattr(pgc, cls)(model=module, target_layers=[layer_module]) as cam:
                    return cam(input_tensor=x, targets=targets)

            out[f"pytorch-grad-cam {cls}"] = run_pgc
    return out


def new_floor(method, model, x, y, params):
    """(floor kind, label) of an issue-16 method: the passes it cannot avoid at ``params``."""
    if method in ("input_x_gradient", "deconvolution", "lrp"):
        return "fb1", "1 fwd+bwd"
    if method == "deeplift":
        if isinstance(params.get("baseline", "zero"), (int, float)) or params.get("baseline", "zero") in ("zero", "dataset_mean"):
            return "fb1", "1 fwd+bwd (a constant reference is one row, run once)"
        return "f1+fb1", "2 fwd + 1 bwd (input and its own reference)"
    if method == "deeplift_shap":
        p = params.get("n_baselines", 8)
        return f"f{p}+fb{p}", f"{2 * p} fwd + {p} bwd"
    if method in ("gradient_shap",):
        p = params.get("n_samples", 25)
        return f"fb{p}", f"{p} fwd+bwd"
    if method in ("extremal_mask", "dynamask"):
        p = params.get("n_iter", 200)
        return f"fb{p}", f"{p} fwd+bwd"
    probe = explain(model, x[:4], method, target=y[:4], **params).extras
    if method == "feature_ablation":
        p = int(round(float(np.mean(probe["n_features"])))) + 1
        return f"f{p}", f"{p} fwd (features + input)"
    if method == "shapley_sampling":
        f = float(np.mean(probe["n_features"]))
        p = int(round(params.get("n_permutations", 25) * (f - 1) + 2))
        return f"f{p}", f"{p} fwd"
    if method == "tsr":
        c = x.shape[1]
        p = int(round(1 + probe["n_windows"] + float(probe["selected"].sum(1).mean()) * (c if c > 1 else 0)))
        return f"fb{p}", f"{p} fwd+bwd (base saliency calls)"
    raise KeyError(method)


def bench_model(name, n, methods, rows):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    module = build().eval()
    model = trustmap.load_model(module)
    x = torch.randn(n, *shape)
    rank = len(shape) - 1
    with torch.no_grad():
        y = module(x).argmax(1).numpy() if module(x[:2]).shape[1] > 1 else np.zeros(n, dtype=np.int64)
    layer = model.default_layer()
    layer_module = dict(module.named_modules())[layer]
    with model.capture(layer) as cap, torch.no_grad():
        model.logits_t(x[:1])
    k = int(cap.activation.shape[1])
    floors = {}

    def floor(kind):
        if kind not in floors:
            total = 0.0
            for part in kind.split("+"):
                if part == "fK":
                    fn = floor_forward(model, x, k)
                elif part.startswith("fb"):
                    fn = floor_backward(model, x, int(part[2:]))
                else:
                    fn = floor_forward(model, x, int(part[1:]))
                total += measure(fn)
            floors[kind] = total
            print(f"  floor {kind}: {floors[kind]:.3f}s", flush=True)
        return floors[kind]

    floor_of = {"saliency": ("fb1", "1 fwd+bwd"), "guided_backprop": ("fb1", "1 fwd+bwd"),
                "gradcam": ("fb1", "1 fwd+bwd"), "gradcam_pp": ("fb1", "1 fwd+bwd"),
                "integrated_gradients": ("fb50", "50 fwd+bwd"), "scorecam": ("fK", f"{k} fwd"),
                "ablationcam": ("fK", f"{k} fwd")}
    params = {"integrated_gradients": {"n_steps": 50}, **NEW_PARAMS}
    for method in methods:
        if method not in floor_of:
            floor_of[method] = new_floor(method, model, x, y, params.get(method, {}))
        kind, label = floor_of[method]
        f = floor(kind)
        impls = {"trustmap": lambda method=method: explain(model, x, method, target=y, **params.get(method, {}))}
        impls.update(peers_for(method, module, layer_module, x, y, rank))
        for impl, fn in impls.items():
            if impl == "trustmap":
                t, note = measure(fn), ""
            else:
                t, note = _peer(impl, fn)
            rows.append(dict(model=name, method=method, impl=impl, time=t, floor=f, floor_label=label, note=note))
            shown = "fails" if t is None else f"{t:.3f}s = {t / f:.2f}x floor"
            print(f"  {method:22s} {impl:34s} {shown} {note}", flush=True)
    return layer, k


def loop_vs_batch(models, n: int = 100, n_iter: int = 50) -> str:
    """Optimised masks for ``n`` inputs: one batched call versus one call per input (the loop TorchRay's
    ``extremal_perturbation`` and tint's ``Dynamask`` need: they take one input at a time)."""
    lines = [f"Optimised masks, {n} inputs, {n_iter} iterations, one area: batched vs one input at a time "
             "(the per-input loop of TorchRay / tint, run with trustmap's own code so only the batching differs).",
             "", "| model | method | batched (s) | one at a time (s) | speed-up |", "|---|---|---:|---:|---:|"]
    for name in models:
        build, shape = MODELS[name]
        torch.manual_seed(0)
        module = build().eval()
        model = trustmap.load_model(module)
        x = torch.randn(n, *shape)
        with torch.no_grad():
            y = module(x).argmax(1).numpy()
        for method in ("extremal_mask", "dynamask"):
            kw = {"n_iter": n_iter, "area": 0.1}
            tb = measure(lambda: explain(model, x, method, target=y, **kw))
            t0 = time.perf_counter()
            with _quiet():
                for i in range(n):
                    explain(model, x[i:i + 1], method, target=y[i:i + 1], **kw)
            tl = time.perf_counter() - t0
            lines.append(f"| {name} | {method} | {tb:.2f} | {tl:.2f} | {tl / tb:.1f}× |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def markdown(rows, meta) -> str:
    lines = ["## Explainers: gradient and CAM methods (issue 3)", "",
             f"`benchmarks/bench_explain.py`, {meta['n']} inputs per model, one thread (OMP_NUM_THREADS=1), "
             f"{meta['machine']}; torch {meta['torch']}, captum {meta['captum']}, grad-cam {meta['grad_cam']}. "
             "Ratio = wall time / the method's physical floor measured in the same run (batched passes at "
             "batch 1000, benchmarks/harness.py). Same explicit targets for every implementation.", "",
             "| model | method | implementation | time (s) | floor | floor (s) | ratio to floor |",
             "|---|---|---|---:|---|---:|---:|"]
    for r in rows:
        t = "fails" if r["time"] is None else f"{r['time']:.3f}"
        ratio = "—" if r["time"] is None else f"{r['time'] / r['floor']:.2f}×"
        impl = r["impl"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {r['model']} | {r['method']} | {impl} | {t} | {r['floor_label']} | {r['floor']:.3f} | {ratio} |")
    lines += ["", "Layers: " + ", ".join(f"{m}: `{l}` (K = {k})" for m, (l, k) in meta["layers"].items()), ""]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """The markdown section for benchmarks/run.py (`make bench`)."""
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        return main(["--n", "200" if quick else "1000"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, or 'new' (issue 16's)")
    p.add_argument("--out", default=None, help="write the markdown results here")
    p.add_argument("--loop", action="store_true", help="also time optimised masks batched vs one input at a time")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    use_peers()
    rows, layers = [], {}
    methods = [m for m in args.methods.split(",") if m]
    if methods == ["new"]:
        methods = list(NEW_METHODS)
    for name in args.models.split(","):
        print(name, flush=True)
        try:
            layers[name] = bench_model(name, args.n, methods, rows)
        except Exception:
            traceback.print_exc()
            raise
    versions = {}
    for mod in ("captum", "grad-cam"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod)
        except Exception:
            versions[mod] = "not installed"
    meta = {"n": args.n, "torch": torch.__version__, "captum": versions["captum"], "grad_cam": versions["grad-cam"],
            "machine": f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores)".strip(),
            "layers": layers}
    text = markdown(rows, meta)
    if methods == list(NEW_METHODS):
        text = text.replace("## Explainers: gradient and CAM methods (issue 3)", "## Explainers: issue 16's methods")
        text += "\nTimed at: " + "; ".join(f"{k} {v}" for k, v in NEW_PARAMS.items()) + ".\n"
    if args.loop:
        text += "\n" + loop_vs_batch(args.models.split(",")) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
