"""``Localizer.locate`` throughput (mask inference) against the classifier's own forward on the same
beats, and the masks' quality on the distractor task (removal objective, 187 samples) and on the
96-sample distractor task with ``objective='preserve'``, for each named backbone.

    OMP_NUM_THREADS=2 python benchmarks/bench_locate.py            # prints a markdown table
    OMP_NUM_THREADS=2 python benchmarks/bench_locate.py --quick    # 4000 beats per call, best of 3
    OMP_NUM_THREADS=2 python benchmarks/bench_locate.py --n 20000  # beats timed per call

The task is bench_localizer.py's: 187-sample ECG-like signals, a distractor bump near t = 30 in
every sample, a class bump near t = 100 in class 1; the classifier a small CNN (Conv 8 -> Conv 16 ->
Dense). The localizer is fitted on data the classifier did not train on. Throughput: the best of
5 calls of ``loc.masks(X)`` (and ``loc.locate(X)``, which also runs the classifier for the targets)
on N beats, in beats per second, torch threads = OMP_NUM_THREADS; ``loc.locate(X, y)`` with the
targets given skips the classifier. The preserve columns: the test's 96-sample task (class bump near
t = 60, distractor near t = 20), a classifier trained on 1200 signals, the localizer fitted with
``objective='preserve'`` (8 epochs) on 1500 others, mask mass within 10 samples of the class bump /
the distractor on fresh class-1 signals.
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

REPS = [5]  # timed calls per figure (3 with --quick)


def preserve_quality(backbone: str) -> tuple[float, float]:
    """Mass of the preserve masks on the class bump and on the distractor (96-sample task)."""
    kw = dict(length=96, bump_at=60, distractor_at=20)
    tr, fit_data, te = distractor_task(1200, seed=11, **kw), distractor_task(1500, seed=12, **kw), \
        distractor_task(600, seed=111, **kw)
    net = train_classifier(tr, 2, seed=11, epochs=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loc = Localizer(objective="preserve", backbone=backbone, epochs=8, seed=0).fit(net, fit_data.X, fit_data.y)
    ones = te.subset(np.flatnonzero(te.y_clean == 1))
    m = loc.masks(ones.X)
    return (window_mass(m, ones.centers, radius=10)["mass"].mean(),
            window_mass(m, ones.distractor, radius=10)["mass"].mean())


def best(fn) -> float:
    """The fastest of REPS[0] timed calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(REPS[0]):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="beats per timed call")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--backbones", nargs="+", default=["strided", "dilated", "unet"])
    ap.add_argument("--quick", action="store_true", help="4000 beats per timed call, best of 3")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, REPS[0] = min(a.n, 4000), 3
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
    with torch.inference_mode():
        targets = net(x).argmax(1).numpy()
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
        t_locate_y = best(lambda: loc.locate(beats, y=targets))
        n_par = sum(p.numel() for p in loc.net_.parameters())
        p_mass, p_dist = preserve_quality(bb)
        rows.append((bb, n_par, t_fit, a.n / t_masks, a.n / t_locate, a.n / t_locate_y, true["mass"].mean(),
                     true["argmax"].mean(), dist["mass"].mean(), p_mass, p_dist, loc.r2_))
    print(f"torch {torch.__version__}, {threads} thread(s), {a.n} beats of 187 samples per call, "
          f"best of {REPS[0]}; classifier forward alone: {a.n / t_fwd:,.0f} beats/s\n")
    print("| backbone | parameters | fit s | masks beats/s | locate beats/s (classifier's targets) | "
          "locate beats/s (targets given) | mass on class bump | argmax in bump | mass on distractor | "
          "preserve-96: mass on class bump | preserve-96: on distractor | held-out R² |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for bb, n_par, t_fit, b_m, b_l, b_y, mass, arg, dm, pm, pd, r2 in rows:
        print(f"| {bb} | {n_par:,} | {t_fit:.1f} | {b_m:,.0f} | {b_l:,.0f} | {b_y:,.0f} | {mass:.3f} | {arg:.3f} | "
              f"{dm:.3f} | {pm:.3f} | {pd:.3f} | {r2} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
