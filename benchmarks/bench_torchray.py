"""Extremal perturbations: trustmap's batched ``extremal_mask`` on 100 images against TorchRay's
``extremal_perturbation`` called once per image (its API explains one image at a time), same model,
same areas and the same number of optimisation steps.

    OMP_NUM_THREADS=1 PYTHONPATH=src:.venv-bench/site .venv/bin/python benchmarks/bench_torchray.py \\
        [--quick] [--n 100] [--steps 200] [--out benchmarks/results_torchray.md]

TorchRay 1.0.0.2 (``pip install --no-deps torchray``; its extremal-perturbation module needs numpy,
matplotlib, PIL and packaging, not torchvision). The model is the flat CNN of
``benchmarks/pointing_explain.py`` trained on ``synthetic-2d`` (32x32, 1 channel, a distractor blob in
every image); the 100 inputs are correctly classified test images, each explained for its predicted
class. Both run the preservation game with areas (0.025, 0.05, 0.1) (TorchRay optimises an image's
areas as one batch of 3 masks; trustmap all 100 × 3 masks as one batch), mask grid step 3 pixels,
TorchRay's contrastive reward beside trustmap's log-odds score (both contrast the target with the
other classes). The pointing game of the area-summed masks is reported beside the times, so that
speed is not bought with wrong masks. One thread (``torch.set_num_threads(1)``); wall time of one
run each after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from test_explain_synthetic import fit, flat_cnn, pointing  # noqa: E402
from trustmap.data import load  # noqa: E402
from trustmap.explain import explain  # noqa: E402

AREAS = (0.025, 0.05, 0.1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100, help="images (default 100)")
    p.add_argument("--steps", type=int, default=200, help="optimisation steps of both (default 200)")
    p.add_argument("--quick", action="store_true", help="40 steps")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    steps = 40 if a.quick else a.steps
    torch.set_num_threads(1)
    from torchray.attribution.extremal_perturbation import contrastive_reward, extremal_perturbation
    import torchray

    tr, te = load("synthetic-2d", "train", n_train=600), load("synthetic-2d", "test", n_test=3 * a.n)
    net = fit(flat_cnn(2, 1, (32, 32)), tr.internal(), tr.y, epochs=6)
    X = te.internal()
    with torch.no_grad():
        pred = net(torch.as_tensor(X)).argmax(1).numpy()
    ok = np.nonzero(pred == te.y)[0][:a.n]
    X, tg, region = X[ok], pred[ok], te.internal_mask()[ok]
    n = len(X)

    def ours():
        return explain(net, X, "extremal_mask", target=tg, area=list(AREAS), n_iter=steps, step=3, layout="NCHW")

    def torchray_loop():
        maps = np.empty_like(X)
        for i in range(n):
            m, _ = extremal_perturbation(net, torch.as_tensor(X[i:i + 1]), int(tg[i]), areas=list(AREAS),
                                         max_iter=steps, step=3, sigma=9, reward_func=contrastive_reward)
            maps[i] = m.sum(0).numpy()
        return maps

    explain(net, X[:2], "extremal_mask", target=tg[:2], area=list(AREAS), n_iter=5, step=3, layout="NCHW")  # warm-up
    t0 = time.perf_counter()
    a_ours = ours()
    t_ours = time.perf_counter() - t0
    extremal_perturbation(net, torch.as_tensor(X[:1]), int(tg[0]), areas=list(AREAS), max_iter=5, step=3, sigma=9,
                          reward_func=contrastive_reward)  # warm-up
    t0 = time.perf_counter()
    m_tr = torchray_loop()
    t_tr = time.perf_counter() - t0
    rows = [("trustmap extremal_mask (one batched call)", t_ours, pointing(a_ours.maps, region)),
            (f"TorchRay {torchray.__version__} extremal_perturbation (one call per image)", t_tr,
             pointing(m_tr, region))]
    lines = [f"{n} images of synthetic-2d (32x32), flat CNN, areas {list(AREAS)}, {steps} steps each; "
             f"{platform.machine()}, torch {torch.__version__}, 1 thread, shared 2-core machine "
             f"({time.strftime('%Y-%m-%d')}).", "",
             "| implementation | time (s) | per image (ms) | speed-up | pointing game |", "|---|---:|---:|---:|---:|"]
    for name, t, pg in rows:
        lines.append(f"| {name} | {t:.2f} | {1000 * t / n:.1f} | {t_tr / t:.1f}x | {pg:.2f} |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
