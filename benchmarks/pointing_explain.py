"""Pointing game of every explainer on the synthetic known-region tasks (the figures of issue 3's note).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pointing_explain.py --out benchmarks/pointing_explain.md

For each preset task (``synthetic-1d``: 1 channel; ``synthetic-1d-12ch``: 12 channels, the class on
channel 4 only; ``synthetic-2d``) a small CNN with a Flatten + Linear head (the shape of the seeds'
MNIST-1D and Keras MNIST CNNs) is trained (600 samples, 6 epochs); on its correctly classified test
samples (150 drawn) the score is the fraction whose map maximum (over channels and positions) lies
in the true region. "spatial" takes the maximum of the channel-summed map against the region's
positions. A second table uses a global-average-pooling FCN on presence tasks (class 0: noise only;
classes 1, 2: a shape at their place; no distractor), the architecture the CAM methods assume.
The same models and seeds as tests/test_explain_synthetic.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


import torch  # noqa: E402

from test_explain_synthetic import fit, flat_cnn, gap_fcn, pointing  # noqa: E402  (the tested models)
from trustmap.data import load, make_synthetic  # noqa: E402
from trustmap.explain import explain  # noqa: E402

VARIANTS = [
    ("saliency", {}), ("saliency", {"times_input": True, "absolute": False}),
    ("smoothgrad", {}), ("smoothgrad", {"times_input": True, "absolute": False}),
    ("integrated_gradients", {}), ("guided_backprop", {}),
    ("gradcam", {}), ("gradcam", {"per_channel": True}), ("hirescam", {}), ("hirescam", {"per_channel": True}),
    ("gradcam_pp", {}), ("gradcam_pp", {"per_channel": True}), ("scorecam", {}), ("scorecam", {"per_channel": True}),
    ("ablationcam", {}), ("ablationcam", {"per_channel": True}), ("guided_gradcam", {}),
    # issue 16
    ("input_x_gradient", {}), ("deconvolution", {}), ("deeplift", {}), ("deeplift_shap", {}), ("gradient_shap", {}),
    ("lrp", {}), ("lrp", {"composite": "epsilon"}), ("lrp", {"composite": "epsilon_plus_flat"}),
    ("feature_ablation", {}), ("feature_ablation", {"per_channel": True}), ("shapley_sampling", {}),
    ("tsr", {}), ("tsr", {"base": "integrated_gradients", "base_params": {"n_steps": 8}}),
    ("feature_ablation", {"segmentation": "fixed", "segment_size": 4}),
    ("extremal_mask", {}), ("extremal_mask", {"per_channel": False}), ("extremal_mask", {"score": "log_prob"}),
    ("dynamask", {}), ("dynamask", {"optimizer": "adam"}), ("dynamask", {"area": [0.05, 0.1, 0.2]}),
]


def label(method, params):
    return method + ("" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")


def wanted(method, params):
    return ONLY is None or any(o in label(method, params) for o in ONLY)


ONLY = None
TASKS = ("synthetic-1d", "synthetic-1d-12ch", "synthetic-2d")
SKIP: list = []


def preset_table():
    cols, acc, res = [], {}, {}
    for name in TASKS:
        tr, te = load(name, "train", n_train=600), load(name, "test", n_test=150)
        Xtr, Xte = tr.internal(), te.internal()
        rank = Xtr.ndim - 2
        net = fit(flat_cnn(rank, Xtr.shape[1], Xtr.shape[2:]), Xtr, tr.y, epochs=6)
        with torch.no_grad():
            ok = net(torch.as_tensor(Xte)).argmax(1).numpy() == te.y
        cols.append(name)
        acc[name] = (ok.mean(), ok.sum())
        mask = te.internal_mask()[ok]
        for method, params in VARIANTS:
            if (Xtr.shape[1] == 1 and params.get("per_channel")) or not wanted(method, params) \
                    or f"{name}:{label(method, params)}" in SKIP:
                continue
            a = explain(net, Xte[ok], method, layout="NCL" if rank == 1 else "NCHW", **params)
            res[(label(method, params), name)] = (pointing(a.maps, mask), pointing(a.maps, mask, spatial_only=True))
            print(name, label(method, params), res[(label(method, params), name)], flush=True)
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for method, params in VARIANTS:
        lab = label(method, params)
        if not wanted(method, params):
            continue
        cells = []
        for c in cols:
            if (lab, c) not in res:
                cells.append("(1 channel)" if params.get("per_channel") and not c.endswith("12ch") else "not run")
                continue
            full, sp = res[(lab, c)]
            cells.append(f"{full:.2f}" + (f" (spatial {sp:.2f})" if c.endswith("12ch") else ""))
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    head = "Test accuracy: " + ", ".join(f"{c} {acc[c][0]:.3f} ({acc[c][1]} samples scored)" for c in cols)
    return head, "\n".join(lines)


def presence_table():
    lines = ["| method | 1D (96) | 2D (24x24) |", "|---|---:|---:|"]
    res, accs = {}, []
    for rank in (1, 2):
        size = 96 if rank == 1 else (24, 24)
        kw = dict(rank=rank, size=size, channels=1, n_classes=3, null_class=True, distractor=False)
        tr, te = make_synthetic(600, seed=1, **kw), make_synthetic(150, seed=2, **kw)
        net = fit(gap_fcn(rank, 1), tr.internal(), tr.y, epochs=10, lr=1e-2)
        Xte = te.internal()
        with torch.no_grad():
            correct = net(torch.as_tensor(Xte)).argmax(1).numpy() == te.y
        accs.append(f"{rank}D {correct.mean():.3f}")
        ok = correct & (te.y > 0)
        for method, params in VARIANTS:
            if params.get("per_channel") or not wanted(method, params):
                continue
            a = explain(net, Xte[ok], method, layout="NCL" if rank == 1 else "NCHW", **params)
            res[(label(method, params), rank)] = pointing(a.maps, te.internal_mask()[ok])
    for method, params in VARIANTS:
        if params.get("per_channel") or not wanted(method, params):
            continue
        lab = label(method, params)
        lines.append(f"| {lab} | {res[(lab, 1)]:.2f} | {res[(lab, 2)]:.2f} |")
    return "GAP FCN test accuracy: " + ", ".join(accs), "\n".join(lines)


def main(argv=None):
    global ONLY, TASKS, SKIP
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--preset-only", action="store_true", help="skip the GAP-FCN presence table")
    p.add_argument("--only", default=None, help="comma-separated substrings of the method labels to run")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated preset tasks (default all three)")
    p.add_argument("--skip", default="", help="';'-separated TASK:LABEL cells not to run (e.g. a slow variant)")
    args = p.parse_args(argv)
    TASKS = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    SKIP = [c.strip() for c in args.skip.split(";") if c.strip()]
    ONLY = None if args.only is None else [o.strip() for o in args.only.split(",") if o.strip()]
    torch.set_num_threads(1)
    h1, t1 = preset_table()
    h2, t2 = presence_table() if not args.preset_only else ("(not run: --preset-only)", "")
    text = "\n".join(["### Pointing game on the synthetic tasks (issue 3)", "",
                      "`benchmarks/pointing_explain.py`: fraction of correctly classified test samples whose "
                      "map maximum lies in the true class region.", "",
                      "Preset tasks, CNN with a Flatten + Linear head. " + h1 + ".", "", t1, "",
                      "Presence tasks, GAP FCN. " + h2 + ".", "", t2, ""])
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
