"""Issue 16's gradient family against its floor, timed alternately in one process: for each method the
floor (the batched passes it needs, benchmarks/harness.py, as in bench_explain16.py) and the method run
one after the other ``--reps`` times, so load changes on a shared machine hit both alike; min and median
of each, their ratios, and the load average.

One command::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_gradient_interleaved.py \
        --models mnist1d_cnn --n 200,2000 --reps 9            # --floor-batch 256: floor in trustmap's CPU chunks
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_explain import MODELS  # noqa: E402
from harness import floor_backward, floor_forward  # noqa: E402

import trustmap  # noqa: E402
from trustmap.explain import explain  # noqa: E402

EPS = 1e-6
#: method label: (explain method, parameters, floor kind); fbK = K fwd+bwd, fK = K forward passes
SPEC = {
    "input_x_gradient": ("input_x_gradient", {}, "fb1"),
    "deconvolution": ("deconvolution", {}, "fb1"),
    "deeplift": ("deeplift", {"baseline": 0.0}, "fb1"),
    "deeplift_shap": ("deeplift_shap", {"baselines": "refs"}, "fb4"),
    "lrp epsilon": ("lrp", {"composite": "epsilon", "epsilon": EPS}, "fb1"),
    "lrp gamma": ("lrp", {"composite": "gamma", "epsilon": EPS}, "f1+fb2"),
    "lrp alpha_beta": ("lrp", {"composite": "alpha_beta", "epsilon": EPS}, "f1+fb2"),
    "lrp epsilon_plus_flat": ("lrp", {"composite": "epsilon_plus_flat", "epsilon": EPS}, "f1+fb1"),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mnist1d_cnn")
    p.add_argument("--n", default="200", help="batch sizes, comma-separated")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--methods", default="input_x_gradient,deeplift,deeplift_shap,lrp epsilon")
    p.add_argument("--floor-batch", type=int, default=1000, help="rows per floor pass (harness default 1000; "
                   "trustmap's CPU chunks are 256 rows, trustmap.explain.base.CPU_ROWS)")
    p.add_argument("--module", action="store_true", help="pass the nn.Module (wrapped on every call), not a loaded Model")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"floor batches of {args.floor_batch} rows; {args.reps} alternations; load average at start "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| model | n | method | floor | floor min (ms) | method min (ms) | ratio of mins | ratio of medians | load |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        build, shape = MODELS[name]
        torch.manual_seed(0)
        module = build().eval()
        model = trustmap.load_model(module)
        target = module if args.module else model
        refs = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1)).numpy()
        for n in (int(v) for v in args.n.split(",")):
            x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
            xn = x.numpy()
            with torch.no_grad():
                y = module(x).argmax(1).numpy()
            for label in (m.strip() for m in args.methods.split(",")):
                meth, params, kind = SPEC[label]
                params = {k: (refs if v == "refs" else v) for k, v in params.items()}
                fb = args.floor_batch
                parts = [floor_backward(model, x, int(k[2:]), batch=fb) if k.startswith("fb")
                         else floor_forward(model, x, int(k[1:]), batch=fb) for k in kind.split("+")]

                def floor(parts=parts):
                    for f in parts:
                        f()

                def method(meth=meth, params=params):
                    explain(target, xn, meth, target=y, **params)

                floor()
                method()
                ft, mt = [], []
                for _ in range(args.reps):
                    gc.collect()
                    t0 = time.perf_counter()
                    floor()
                    ft.append(time.perf_counter() - t0)
                    gc.collect()
                    t0 = time.perf_counter()
                    method()
                    mt.append(time.perf_counter() - t0)
                f, t = min(ft), min(mt)
                fm, tm = float(np.median(ft)), float(np.median(mt))
                print(f"| {name} | {n} | {label} | {kind} | {1e3 * f:.1f} | {1e3 * t:.1f} | {t / f:.2f}× | "
                      f"{tm / fm:.2f}× | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
