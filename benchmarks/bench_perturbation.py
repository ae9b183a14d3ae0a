"""Perturbation explainers (issue 4): LIME, KernelSHAP and occlusion, ratio to the physical floor beside
Captum, the lime package and the seed's one-predict-per-perturbation LIME loop; memory of 10,000
MNIST-1D inputs x 1000 LIME samples; pointing game on the synthetic known-region tasks.

    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/run.py --only perturbation --out /tmp/bench_perturbation.md

The floor of LIME and KernelSHAP is ``n_samples`` forward rows per input (N x n_samples rows) run as
plain batched forward passes (benchmarks/harness.py), the fastest of batch 100, 256 and 1000; of
occlusion, (windows + 1) rows per input. Every implementation gets the same model, inputs, targets, feature segmentation (1D
segments of 4 positions across channels, 2D 4x4 patches) and number of perturbations. Peers that loop
over inputs one at a time are timed on the first ``k`` inputs and scaled to N (marked "scaled"); our
methods and Captum occlusion (which batches across inputs) are timed on all N.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness import floor_forward, timeit  # noqa: E402

import trustmap  # noqa: E402
from trustmap.explain import explain  # noqa: E402
from trustmap.explain.perturbation import window_plan  # noqa: E402
from trustmap.zoo.models import ecg_fcn, mnist1d_cnn, mnist2d_cnn  # noqa: E402

# name: builder, input shape, N inputs, k inputs for looping peers, n_samples, segment size, occlusion window
CASES = {
    "mnist1d_cnn": (lambda: mnist1d_cnn(), (1, 40), 1000, 40, 300, 4, 4),  # occlusion: window 4, stride 2
    "ecg_fcn (12-lead)": (lambda: ecg_fcn(in_channels=12, length=250, n_classes=2), (12, 250), 10, 2, 100, 4, 25),
    "mnist2d_cnn": (lambda: mnist2d_cnn(), (1, 28, 28), 20, 3, 100, 4, 4),
}
FLOOR_BATCHES = (100, 256, 1000)
QUICK = {"mnist1d_cnn": (200, 10), "ecg_fcn (12-lead)": (3, 1), "mnist2d_cnn": (5, 2)}


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


def measure(fn, cheap_below: float = 3.0) -> float:
    with _quiet():
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        if first >= cheap_below:
            return first
        return min(first, timeit(fn, repeats=2, warmup=0))


def labels_for(shape, seg):
    """Feature labels of one sample (C, *spatial): segments/patches of ``seg`` across channels."""
    sp = shape[1:]
    if len(sp) == 1:
        lab = np.arange(sp[0]) // seg
    else:
        nw = -(-sp[1] // seg)
        lab = (np.arange(sp[0])[:, None] // seg) * nw + np.arange(sp[1])[None] // seg
    return np.broadcast_to(lab, shape).copy()


# ---- the seed's LIME (reference row): one model.predict per perturbation -------------------------
def seed_lime_loop(module, x: np.ndarray, targets: np.ndarray, labels: np.ndarray, n_samples: int,
                   kernel_width: float = 0.25, seed: int = 0) -> np.ndarray:
    """REFERENCE, not trustmap: the seed report's LIME. For each input, ``n_samples`` random on/off
    vectors over the segments; each perturbed input (off segments set to zero) goes through the model
    on its own (one predict call per perturbation); cosine distance to the all-on vector, kernel
    sqrt(exp(-d^2 / width^2)), weighted ridge (scikit-learn); coefficients spread over the segments."""
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(seed)
    F = int(labels.max()) + 1
    out = np.zeros_like(x)
    for i in range(len(x)):
        Z = rng.integers(0, 2, size=(n_samples, F))
        Z[0] = 1
        ys = np.empty(n_samples)
        for s in range(n_samples):
            xp = x[i] * Z[s][labels]
            with torch.no_grad():
                p = torch.softmax(module(torch.as_tensor(xp[None], dtype=torch.float32)), 1)[0].numpy()
            ys[s] = p[targets[i]]
        k = Z.sum(1)
        d = np.where(k > 0, 1 - np.sqrt(k / F), 1.0)
        w = np.sqrt(np.exp(-(d ** 2) / kernel_width ** 2))
        coef = Ridge(alpha=1.0).fit(Z, ys, sample_weight=w).coef_
        out[i] = coef[labels]
    return out


def peers(method, module, x, y, labels, S, window, rank, n_win):
    """{name: (callable over the first k inputs or all inputs, per_input_loop)}."""
    out = {}
    xt = torch.as_tensor(x)
    prob = torch.nn.Sequential(module, torch.nn.Softmax(1))
    fm = torch.as_tensor(labels)[None]
    try:
        import captum.attr as ca
    except ImportError:
        ca = None
    if ca is not None and method in ("lime", "kernelshap"):
        cls = ca.Lime if method == "lime" else ca.KernelShap
        for ppe in (1, S):
            def run(k, cls=cls, ppe=ppe):
                expl = cls(prob)
                for i in range(k):
                    expl.attribute(xt[i:i + 1], target=int(y[i]), feature_mask=fm, n_samples=S,
                                   perturbations_per_eval=ppe, baselines=0.0)
            out[f"captum {cls.__name__}" + ("" if ppe == 1 else f" (perturbations_per_eval={ppe})")] = (run, True)
    if ca is not None and method == "occlusion":
        c = x.shape[1]
        win = (c, *window)
        strides = (c, *(max(1, w // 2) for w in window))
        for ppe in (1, n_win):
            def run(k, ppe=ppe):
                ca.Occlusion(module).attribute(xt[:k], sliding_window_shapes=win, strides=strides, baselines=0.0,
                                               target=torch.as_tensor(y[:k]), perturbations_per_eval=ppe)
            out["captum Occlusion" + ("" if ppe == 1 else f" (perturbations_per_eval={ppe})")] = (run, False)
    if method == "lime":
        try:
            import lime.lime_image
            import lime.lime_tabular
        except ImportError:
            return out
        if rank == 1:
            flat = x.reshape(len(x), -1)

            def predict(rows):
                with torch.no_grad():
                    return prob(torch.as_tensor(rows.reshape(-1, *x.shape[1:]), dtype=torch.float32)).numpy()

            def run_tab(k):
                ex = lime.lime_tabular.LimeTabularExplainer(flat, discretize_continuous=False, random_state=0)
                for i in range(k):
                    ex.explain_instance(flat[i], predict, labels=(int(y[i]),), num_features=flat.shape[1],
                                        num_samples=S)

            out["lime LimeTabularExplainer"] = (run_tab, True)
        else:
            def classify(imgs):
                with torch.no_grad():
                    return prob(torch.as_tensor(imgs[..., :1].transpose(0, 3, 1, 2), dtype=torch.float32)).numpy()

            def run_img(k):
                ex = lime.lime_image.LimeImageExplainer(random_state=0)
                for i in range(k):
                    ex.explain_instance(x[i, 0].astype("float64"), classify, labels=(int(y[i]),), top_labels=None,
                                        hide_color=0, num_samples=S, batch_size=S,
                                        segmentation_fn=lambda img: labels[0])

            out["lime LimeImageExplainer (batch_size=n)"] = (run_img, True)
    if method == "lime":
        out["seed loop, one predict per perturbation (reference)"] = (
            lambda k: seed_lime_loop(module, x[:k], y[:k], labels, S), True)
    return out


def case_inputs(build, shape, n):
    """A case's model (seeded weights, eval mode), its trustmap wrapper, ``n`` seeded normal inputs and
    the predicted classes."""
    torch.manual_seed(0)
    module = build().eval()
    model = trustmap.load_model(module)
    x = np.random.default_rng(0).normal(size=(n, *shape)).astype("float32")
    with torch.no_grad():
        y = module(torch.as_tensor(x)).argmax(1).numpy()
    return module, model, x, y


def speed_table(quick: bool) -> str:
    lines = ["| model | method | implementation | inputs timed | time for N (s) | floor rows | floor (s) | ratio |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for name, (build, shape, n, k, S, seg, window) in CASES.items():
        if quick:
            n, k = QUICK[name]
        module, model, x, y = case_inputs(build, shape, n)
        rank = len(shape) - 1
        labels = labels_for(shape, seg)
        win = (window,) * rank
        n_win = len(window_plan(tuple(shape[1:]), win, tuple(max(1, w // 2) for w in win)))
        floors = {}
        for method in ("lime", "kernelshap", "occlusion"):
            rows_per = S if method != "occlusion" else n_win + 1
            if rows_per not in floors:
                xr = torch.randn(n * rows_per, *shape)
                # the physical floor: the fastest plain batched forward of those rows (batch 100, 256 or 1000;
                # big inputs run faster per row at moderate batches on a CPU)
                floors[rows_per] = min(measure(floor_forward(model, xr, 1, batch=b)) for b in FLOOR_BATCHES)
            fl = floors[rows_per]
            ours = {"lime": dict(segmentation="fixed", segment_size=seg, n_samples=S),
                    "kernelshap": dict(segmentation="fixed", segment_size=seg, n_samples=S),
                    "occlusion": dict(window=window, stride=max(1, window // 2))}[method]
            impls = {"trustmap": ((lambda kk, m=method, kw=ours: explain(model, x, m, target=y, **kw)), False)}
            impls.update(peers(method, module, x, y, labels, S, win, rank, n_win))
            for impl, (fn, loop) in impls.items():
                kk = k if loop else n
                try:
                    t = measure(lambda: fn(kk)) * (n / kk)
                    cell = f"{t:.2f}", f"{t / fl:.2f}×"
                except Exception as exc:  # a peer that cannot do it
                    cell = "fails", f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
                lines.append(f"| {name} | {method} | {impl} | {kk}{' (scaled)' if kk < n else ''} | {cell[0]} | "
                             f"{n} x {rows_per} | {fl:.2f} | {cell[1]} |")
                print(lines[-1], file=sys.stderr, flush=True)
    return "\n".join(lines)


MEMORY_SCRIPT = textwrap.dedent("""
    import os, resource, sys, time
    import numpy as np, torch
    import trustmap
    from trustmap.datasets import load
    from trustmap.explain import explain
    from trustmap.zoo.models import mnist1d_cnn
    n = int(sys.argv[1])
    tr = load("mnist1d", "train")
    reps = -(-n // len(tr.X))
    X = np.concatenate([tr.X] * reps)[:n]
    X = X + np.random.default_rng(0).normal(scale=1e-3, size=X.shape).astype(X.dtype)  # distinct samples
    torch.manual_seed(0)
    net = mnist1d_cnn().eval()
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    t0 = time.perf_counter()
    a = explain(net, X, "lime", n_samples=1000)
    dt = time.perf_counter() - t0
    peak = max(status("VmHWM:"), before)
    print(f"{X.shape} {before:.0f} {peak:.0f} {dt:.1f} {bool(np.isfinite(a.maps).all())}")
""")


def memory_section(quick: bool) -> str:
    n = 2000 if quick else 10000
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(n)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return f"Memory run failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}"
    shape, before, peak, dt, finite = out.stdout.split(" ", 1)[0], *out.stdout.split()[-4:]
    return (f"LIME on {n:,} MNIST-1D inputs (the training split tiled, jittered by 1e-3) x 1000 perturbations "
            f"each = {n * 1000:,} perturbed inputs through the MNIST-1D CNN, one process: peak RSS **{peak} MiB** "
            f"during the call (RSS before it: {before} MiB, the peak reset there through /proc/self/clear_refs; "
            f"{1000 * n * 40 * 4 / 2**20:,.0f} MiB if the perturbed inputs "
            f"were built at once), {dt} s, maps finite: {finite}. Limit: 2 GiB.")


# ---- the models and score of tests/test_explain_synthetic.py (copied: that module imports pytest) ------
def pointing(maps, mask, spatial_only=False):
    """Fraction of samples whose map maximum (over channels and positions) lies in the region."""
    n = len(maps)
    if spatial_only:
        maps, mask = maps.sum(1), mask.any(1)
    idx = maps.reshape(n, -1).argmax(1)
    return float(mask.reshape(n, -1)[np.arange(n), idx].mean())


def pointing_tied(maps, mask):
    """Fraction of samples where some entry tied at the map's maximum lies in the region (a feature-constant
    map -- LIME/KernelSHAP 'copy' -- has all entries of its top feature tied; plain argmax takes the first)."""
    n = len(maps)
    m, g = maps.reshape(n, -1), mask.reshape(n, -1)
    return float(((m == m.max(1, keepdims=True)) & g).any(1).mean())


def fit(net, X, y, epochs, lr=3e-3, seed=0):
    from torch import nn

    torch.manual_seed(seed)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def flat_cnn(rank, c, spatial, k=3, width=8):
    from torch import nn

    conv, pool = (nn.Conv1d, nn.MaxPool1d) if rank == 1 else (nn.Conv2d, nn.MaxPool2d)
    n_flat = width * int(np.prod([s // 4 for s in spatial]))
    return nn.Sequential(conv(c, width, 5, padding=2), nn.ReLU(), pool(2), conv(width, width, 3, padding=1),
                         nn.ReLU(), pool(2), conv(width, width, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(n_flat, k))


def pointing_section(quick: bool) -> str:
    from trustmap.data import load

    variants = [("occlusion", {}), ("occlusion", {"per_channel": True}), ("lime", {}),
                ("lime", {"per_channel": True, "segment_size": 16, "n_samples": 400}),
                ("kernelshap", {}), ("kernelshap", {"per_channel": True, "segment_size": 16, "n_samples": 400}),
                ("lime", {"segment_size": 2, "n_samples": 600}), ("kernelshap", {"segment_size": 2, "n_samples": 600}),
                ("lime", {"segmentation": "quickshift"}), ("lime", {"segmentation": "slic"}),
                ("kernelshap", {"segmentation": "slic"})]
    tasks = ("synthetic-1d", "synthetic-1d-12ch", "synthetic-2d")
    res, acc = {}, {}
    for name in tasks:
        tr, te = load(name, "train", n_train=600), load(name, "test", n_test=60 if quick else 150)
        Xtr, Xte = tr.internal(), te.internal()
        rank = Xtr.ndim - 2
        net = fit(flat_cnn(rank, Xtr.shape[1], Xtr.shape[2:]), Xtr, tr.y, epochs=6)
        with torch.no_grad():
            ok = net(torch.as_tensor(Xte)).argmax(1).numpy() == te.y
        acc[name] = (ok.mean(), ok.sum())
        mask = te.internal_mask()[ok]
        for method, params in variants:
            if params.get("segmentation") in ("quickshift", "slic") and rank == 1:
                continue
            if params.get("per_channel") and Xtr.shape[1] == 1:
                continue
            lay = "NCL" if rank == 1 else "NCHW"
            if method == "occlusion":
                a = explain(net, Xte[ok], method, layout=lay, window=4 if rank == 1 else (4, 4), stride=2, **params)
            else:
                kw = {"segmentation": "fixed", "segment_size": 4, "n_samples": 300} if "segmentation" not in params \
                    else {"n_samples": 300}
                a = explain(net, Xte[ok], method, layout=lay, **{**kw, **params})
            res[(method, str(params), name)] = (pointing(a.maps, mask), pointing(a.maps, mask, spatial_only=True),
                                                pointing_tied(a.maps, mask))
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for method, params in variants:
        lab = method + ("" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")
        cells = []
        for t in tasks:
            r = res.get((method, str(params), t))
            if r is None:
                cells.append("—")
            else:
                cells.append(f"{r[0]:.2f}" + (f" (spatial {r[1]:.2f})" if t.endswith("12ch") else "")
                             + (f" [tied max {r[2]:.2f}]" if r[2] != r[0] and not t.endswith("12ch") else ""))
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    head = ("Pointing game (fraction of correctly classified test samples whose map maximum, over channels and "
            "positions, lies in the true region; 'spatial' uses the channel-summed map; [tied max] counts a hit when any "
            "entry tied at the maximum lies in the region: maps constant over a patch tie all its entries and the "
            "plain argmax takes the patch's first entry, which misses the 5x5 region when the patch straddles it). Same models and protocol "
            "as benchmarks/pointing_explain.py (flat CNN, 600 training samples, 6 epochs). LIME/KernelSHAP: "
            "fixed segments of 4 (1D) / 4x4 patches (2D) unless a superpixel method is named, 300 samples "
            "(per-channel variants: segments of 16, 400 samples, so KernelSHAP has more samples than features), "
            "probability score; occlusion: window 4 (4x4), stride 2, logit score, zero baseline.\n\nTest accuracy: "
            + ", ".join(f"{t} {acc[t][0]:.3f} ({acc[t][1]} scored)" for t in tasks) + "\n")
    return head + "\n" + "\n".join(lines)


def run(quick: bool = False) -> str:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        from importlib.metadata import version

        versions = f"captum {version('captum')}, lime {version('lime')}"
    except Exception:
        versions = "captum/lime not installed"
    parts = ["## Perturbation explainers: LIME, KernelSHAP, occlusion (issue 4)\n",
             __doc__.split("\n\n", 2)[2].strip() + f" Peers: {versions}. Ratio = time for N inputs / floor.\n",
             speed_table(quick), "\n### Memory\n", memory_section(quick), "\n### Pointing game on the synthetic tasks\n",
             pointing_section(quick)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
