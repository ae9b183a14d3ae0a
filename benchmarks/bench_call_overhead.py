"""The fixed cost of one ``trustmap.explain()`` call: a small call's wall time beside its floor.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_call_overhead.py   # --profile: cProfile top 25

Saliency on 8 MNIST-1D-shaped inputs with the zoo's ``mnist1d_cnn`` (random weights) and on 8 inputs of the 2D
``mnist2d_cnn``: the median wall time of ``trustmap.explain(module, x, "saliency", target=y)`` over many
calls, given the ``nn.Module`` (what a user passes: the model is wrapped on every call) and given a loaded
``Model``, beside the floor (the median of one forward + backward of the same inputs through the module,
gradient w.r.t. the input). Overhead = call − floor: input checks, model wrapping and freezing, RNG
preservation, finiteness checks, the provenance (model and data fingerprints).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import trustmap  # noqa: E402
from trustmap.zoo.models import mnist1d_cnn, mnist2d_cnn  # noqa: E402


def median_time(fn, calls: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def case(label, module, shape, n, calls, profile=False):
    torch.manual_seed(0)
    module = module.eval()
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
    xn = x.numpy()
    with torch.no_grad():
        y = module(x).argmax(1).numpy()
    yt = torch.as_tensor(y)

    def floor():
        xi = x.detach().requires_grad_(True)
        out = module(xi)
        torch.autograd.grad(out.gather(1, yt[:, None]).sum(), xi)

    model = trustmap.load_model(module)
    f = median_time(floor, calls)
    a = median_time(lambda: trustmap.explain(module, xn, "saliency", target=y), calls)
    b = median_time(lambda: trustmap.explain(model, xn, "saliency", target=y), calls)
    rows = [(label, "floor: 1 fwd+bwd (module)", f, None),
            (label, "explain(nn.Module, ...)", a, a - f),
            (label, "explain(loaded Model, ...)", b, b - f)]
    if profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for _ in range(50):
            trustmap.explain(module, xn, "saliency", target=y)
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="inputs per call (default 8)")
    p.add_argument("--calls", type=int, default=200, help="timed calls per row (default 200)")
    p.add_argument("--profile", action="store_true", help="print cProfile's top 25 (1D model, 50 calls)")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = case("mnist1d_cnn", mnist1d_cnn(), (1, 40), args.n, args.calls, args.profile)
    rows += case("mnist2d_cnn", mnist2d_cnn(), (1, 28, 28), args.n, max(20, args.calls // 4))
    load = os.getloadavg()
    print(f"saliency, {args.n} inputs per call, median of {args.calls} calls; {platform.machine()} "
          f"({os.cpu_count()} cores), one thread, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| model | call | median (ms) | overhead over the floor (ms) |")
    print("|---|---|---:|---:|")
    for label, what, t, over in rows:
        print(f"| {label} | {what} | {1e3 * t:.2f} | {'—' if over is None else f'{1e3 * over:.2f}'} |")


if __name__ == "__main__":
    sys.exit(main())
