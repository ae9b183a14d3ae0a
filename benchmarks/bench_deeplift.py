"""DeepLIFT-SHAP against its floor, measured interleaved: on a shared machine the floor and the method
are timed alternately ``--reps`` times (min and median of each), so load changes hit both alike; also
the CPU chunk size (``trustmap.explain.backprop.DEEPLIFT_CHUNK_BYTES``) at a few values.

One command::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_deeplift.py --reps 5 --chunks 2,8,32

Floor: 4 forward+backward passes of the 200 inputs (benchmarks/harness.py), as in bench_explain16.py;
DeepLIFT-SHAP over the same 4 shared references, default ``maxpool='captum'`` (``--maxpool`` for the
others).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_explain import MODELS  # noqa: E402
from harness import floor_backward  # noqa: E402

import trustmap  # noqa: E402
import trustmap.explain.backprop as backprop  # noqa: E402
from trustmap.explain import explain  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mnist1d_cnn,mnist2d_cnn")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--chunks", default="8", help="chunk sizes in MiB, comma-separated (default 8, the library's)")
    p.add_argument("--maxpool", default="captum")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sizes = [int(v) for v in args.chunks.split(",")]
    default = backprop.DEEPLIFT_CHUNK_BYTES
    print("| model | chunk (MiB) | floor min (s) | deeplift_shap min (s) | ratio of mins | ratio of medians | load |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        build, shape = MODELS[name]
        torch.manual_seed(0)
        module = build().eval()
        model = trustmap.load_model(module)
        x = torch.randn(args.n, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = module(x).argmax(1).numpy()
        refs = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1)).numpy()
        floor = floor_backward(model, x, 4)

        def method():
            explain(model, x.numpy(), "deeplift_shap", target=y, baselines=refs, maxpool=args.maxpool)

        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        floor()
        method()  # warm up
        times = {"floor": []}
        try:
            for _ in range(args.reps):
                times["floor"].append(timed(floor))
                for s in sizes:
                    backprop.DEEPLIFT_CHUNK_BYTES = s << 20
                    times.setdefault(s, []).append(timed(method))
        finally:
            backprop.DEEPLIFT_CHUNK_BYTES = default
        f, fm = min(times["floor"]), float(np.median(times["floor"]))
        for s in sizes:
            t, tm = min(times[s]), float(np.median(times[s]))
            print(f"| {name} | {s} | {f:.3f} | {t:.3f} | {t / f:.2f}× | {tm / fm:.2f}× | {os.getloadavg()[0]:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
