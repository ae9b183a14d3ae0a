"""``Localizer.locate`` throughput (mask inference) against the classifier's own forward on the same
beats, and the masks' quality on the distractor task, for each named backbone.

    OMP_NUM_THREADS=2 python benchmarks/bench_locate.py            # prints a markdown table
    OMP_NUM_THREADS=2 python benchmarks/bench_locate.py --n 20000  # beats timed per call

The task is bench_localizer.py's: 187-sample ECG-like signals, a distractor bump near t = 30 in
every sample, a class bump near t = 100 in class 1; the classifier a small CNN (Conv 8 -> Conv 16 ->
Dense). The localizer is fitted on data the classifier did not train on. Throughput: the best of
5 calls of ``loc.masks(X)`` (and ``loc.locate(X)``, which also runs the classifier for the targets)
on N beats, in beats per second, torch threads = OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_localizer import train_classifier  # noqa: E402

from trustmap import Localizer  # noqa: E402
from trustmap.localizer.tasks import distractor_task, window_mass  # noqa: E402


def best(fn, reps: int = 5) -> float:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="beats per timed call")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--backbones", nargs="+", default=["dilated", "unet"])
    a = ap.parse_args(argv)
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    tr, fit_data, te = distractor_task(3000, seed=0), distractor_task(2000, seed=1), distractor_task(1000, seed=2)
    net = train_classifier(tr, 2, seed=0)
    beats = distractor_task(a.n, seed=3).X
    x = torch.from_numpy(beats)
    with torch.inference_mode():
        t_fwd = best(lambda: net(x))
    rows = []
    ones = te.subset(np.flatnonzero(te.y_clean == 1))
    for bb in a.backbones:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            loc = Localizer(backbone=bb, epochs=a.epochs, seed=0).fit(net, fit_data.X, fit_data.y)
            t_fit = time.perf_counter() - t0
        masks = loc.locate(ones.X).internal()
        true = window_mass(masks, ones.centers, radius=10)
        dist = window_mass(masks, ones.distractor, radius=10)
        t_masks = best(lambda: loc.masks(beats))
        t_locate = best(lambda: loc.locate(beats))
        n_par = sum(p.numel() for p in loc.net_.parameters())
        rows.append((bb, n_par, t_fit, a.n / t_masks, a.n / t_locate, true["mass"].mean(), true["argmax"].mean(),
                     dist["mass"].mean(), loc.r2_))
    print(f"torch {torch.__version__}, {threads} thread(s), {a.n} beats of 187 samples per call, "
          f"best of 5; classifier forward alone: {a.n / t_fwd:,.0f} beats/s\n")
    print("| backbone | parameters | fit s | masks beats/s | locate beats/s (with the classifier's targets) | "
          "mass on class bump | argmax in bump | mass on distractor | held-out R² |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bb, n_par, t_fit, b_m, b_l, mass, arg, dm, r2 in rows:
        print(f"| {bb} | {n_par:,} | {t_fit:.1f} | {b_m:,.0f} | {b_l:,.0f} | {mass:.3f} | {arg:.3f} | {dm:.3f} | "
              f"{r2} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
