"""Optimised time-series masks beside tint (time_interpret 0.3.0): trustmap's ``dynamask`` and
``extremal_mask`` against tint's ``DynaMask`` and ``ExtremalMask`` on the same models and inputs, with
the time, the ratio to the floor and the pointing game (the known class region of the distractor task).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_tint.py --peers .venv-bench/site \\
        [--quick] [--n 50] [--steps 200] [--out benchmarks/results_tint.md]

tint is installed without dependencies next to the other peers (``benchmarks/requirements-peers.txt``:
``time_interpret``, with ``pytorch-lightning``, ``lightning-utilities`` and ``torchmetrics``, which its
mask methods import; no second torch). Its methods take ``(N, T, F)`` inputs, so the model is called
on the transposed batch. Models: the flat CNN of ``benchmarks/pointing_explain.py`` trained on
``synthetic-1d`` (one channel, a distractor bump shared by all classes) and on ``synthetic-1d-12ch``
(the class on channel 4 only). Inputs: correctly classified test samples, their predicted class as the
target.

Settings, matched where the methods allow: the preservation game, areas (keep ratios) 0.025, 0.05,
0.1, ``steps`` optimisation steps, the whole batch in one optimisation (tint: one Lightning batch of
all inputs per epoch, ``max_epochs = steps``). trustmap ``dynamask`` runs its defaults (the paper's
code: SGD with momentum, lr 0.1, fade to the moving average, area penalty 0.5 → ×100, total variation
1.0, log-probability) and with ``optimizer='adam'``; tint ``DynaMask``: the same fade, keep ratios, size
regulariser 0.5 → ×100, time regulariser 1.0, cross-entropy against the unperturbed prediction (the
log-probability of the predicted class), tint's Adam at lr 0.1. tint's ``ExtremalMask`` (Enguehard 2023:
a mask and, optionally, a learnt perturbation; here no perturbation network, baseline zero, the
preservation and deletion terms, cross-entropy, Adam at lr 0.01 as in tint's example) is a different
method from trustmap's ``extremal_mask`` (Fong et al.'s smooth masks of fixed areas); both are listed
with their pointing. Floor: ``steps`` fwd+bwd of the rows a step evaluates (masks × inputs).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from harness import floor_backward, timeit  # noqa: E402
from peers import DEFAULT_SITE  # noqa: E402
from test_explain_synthetic import fit, flat_cnn, pointing  # noqa: E402

import trustmap  # noqa: E402
from trustmap.data import load  # noqa: E402
from trustmap.explain import explain  # noqa: E402

AREAS = [0.025, 0.05, 0.1]


class TimeMajor(torch.nn.Module):
    """The model on tint's ``(N, T, F)`` inputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return self.net(z.transpose(1, 2))


def trainer(steps):
    from pytorch_lightning import Trainer

    return Trainer(max_epochs=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, deterministic=False)


def tint_dynamask(net, X, steps):
    from tint.attr import DynaMask
    from tint.attr.models import MaskNet

    f = TimeMajor(net)
    mask = MaskNet(forward_func=f, perturbation="fade_moving_average", keep_ratio=list(AREAS),
                   size_reg_factor_init=0.5, size_reg_factor_dilation=100.0, time_reg_factor=1.0,
                   loss="cross_entropy", optim="adam", lr=0.1)
    xt = torch.as_tensor(X).transpose(1, 2).contiguous()
    attr = DynaMask(f).attribute(xt, trainer=trainer(steps), mask_net=mask, batch_size=len(xt))
    return attr.transpose(1, 2).detach().numpy()


def tint_extremal(net, X, y, steps):
    from tint.attr import ExtremalMask
    from tint.attr.models import ExtremalMaskNet

    f = TimeMajor(net)
    mask = ExtremalMaskNet(forward_func=f, loss="cross_entropy", optim="adam", lr=0.01)
    xt = torch.as_tensor(X).transpose(1, 2).contiguous()
    attr = ExtremalMask(f).attribute(xt, baselines=torch.zeros_like(xt), target=torch.as_tensor(y),
                                     trainer=trainer(steps), mask_net=mask, batch_size=len(xt))
    return attr.transpose(1, 2).detach().numpy()


def energy(maps, region):
    """(mean share of the map's positive mass inside the region, fraction of maps whose maximum is tied: a
    saturated mask's argmax is its first entry at 1, so the pointing game alone misjudges it)."""
    m = np.clip(maps, 0, None).reshape(len(maps), -1)
    r = region.reshape(len(maps), -1).astype(bool)
    share = (m * r).sum(1) / np.maximum(m.sum(1), 1e-12)
    ties = (m >= m.max(1, keepdims=True) - 1e-6).sum(1) > 1
    return float(share.mean()), float(ties.mean())


def run_task(name, n, steps, rows, found):
    tr, te = load(name, "train", n_train=600), load(name, "test", n_test=3 * n)
    Xtr = tr.internal()
    net = fit(flat_cnn(1, Xtr.shape[1], Xtr.shape[2:]), Xtr, tr.y, epochs=6)
    X = te.internal()
    with torch.no_grad():
        pred = net(torch.as_tensor(X)).argmax(1).numpy()
    ok = np.nonzero(pred == te.y)[0][:n]
    X, y, region = np.ascontiguousarray(X[ok]), pred[ok], te.internal_mask()[ok]
    model = trustmap.load_model(net)
    xt = torch.as_tensor(X)
    floors = {}

    def floor(masks, passes=1):
        key = (masks, passes)
        if key not in floors:
            xs = xt.repeat(masks, *([1] * (xt.ndim - 1)))
            one = timeit(floor_backward(model, xs, 1), repeats=3)  # one step's rows, fwd+bwd
            floors[key] = one * steps * passes
        return floors[key]

    impls = [
        ("dynamask", "trustmap", lambda: explain(model, X, "dynamask", target=y, area=AREAS, n_iter=steps).maps,
         len(AREAS), 1),
        ("dynamask (optimizer=adam)", "trustmap",
         lambda: explain(model, X, "dynamask", target=y, area=AREAS, n_iter=steps, optimizer="adam").maps,
         len(AREAS), 1),
        ("dynamask", f"tint {found}", lambda: tint_dynamask(net, X, steps), len(AREAS), 1),
        ("extremal_mask", "trustmap",
         lambda: explain(model, X, "extremal_mask", target=y, area=AREAS, n_iter=steps).maps, len(AREAS), 1),
        ("ExtremalMask (Enguehard 2023; not the same method)", f"tint {found}",
         lambda: tint_extremal(net, X, y, steps), 1, 2),
    ]
    for method, impl, fn, masks, passes in impls:
        if impl.startswith("tint") and found.startswith("not"):
            rows.append(dict(task=name, method=method, impl="tint", time=None, floor=None, point=None,
                             note=found))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                maps = fn()
                t = time.perf_counter() - t0
            p = pointing(np.asarray(maps), region)
            ps = pointing(np.asarray(maps), region, spatial_only=True) if X.shape[1] > 1 else None
            mass, ties = energy(np.asarray(maps), region)
            note = ""
        except Exception as exc:  # a peer that cannot run this case is listed with its error
            t, p, ps, note = None, None, None, f"{type(exc).__name__}: {str(exc)[:160]}"
            mass, ties = None, None
        f = floor(masks, passes)
        rows.append(dict(task=name, method=method, impl=impl, time=t, floor=f, point=p, spatial=ps, note=note,
                         mass=mass, ties=ties,
                         floor_label=f"{steps} × fwd+bwd of {masks * passes}×{len(X)} rows"))
        r = rows[-1]
        print(f"  {name} {method:40s} {impl:12s} "
              + ("fails " + note if t is None else f"{t:.2f}s = {t / f:.2f}x floor, pointing {p:.2f}"), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50, help="inputs per task (default 50)")
    p.add_argument("--steps", type=int, default=200, help="optimisation steps (default 200)")
    p.add_argument("--quick", action="store_true", help="20 inputs, 50 steps, synthetic-1d only")
    p.add_argument("--tasks", default="synthetic-1d,synthetic-1d-12ch")
    p.add_argument("--peers", default=None, help="folder holding time_interpret (pip install --no-deps --target)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    # the peers' folder only: no torchvision stub here (torchmetrics, imported by Lightning, looks
    # torchvision up with importlib.util.find_spec, which a stub without a spec breaks; tint does not need it)
    site = str(Path(a.peers or os.environ.get("TRUSTMAP_PEERS") or DEFAULT_SITE).resolve())
    if site not in sys.path:
        sys.path.append(site)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    try:
        import tint
        from tint.attr import DynaMask, ExtremalMask  # noqa: F401

        found = tint.__version__
    except Exception as exc:
        found = f"not importable ({type(exc).__name__}: {exc})"
    print("tint:", found, flush=True)
    n, steps = (20, 50) if a.quick else (a.n, a.steps)
    tasks = ["synthetic-1d"] if a.quick else a.tasks.split(",")
    rows = []
    for task in tasks:
        run_task(task, n, steps, rows, found)
    load_avg = os.getloadavg()
    out = ["## Optimised masks beside tint (time_interpret)", "",
           f"`benchmarks/bench_tint.py`{' --quick' if a.quick else ''}: {n} correctly classified test inputs per task, "
           f"{steps} steps, areas {AREAS}, one thread, {platform.machine()} ({os.cpu_count()} cores), load average "
           f"{load_avg[0]:.2f} at the end (a shared machine); torch {torch.__version__}, tint {found}. Pointing: "
           "fraction of inputs whose map maximum lies in the class region (spatial: of the channel-summed map); "
           "mass in region: the mean share of the map's positive mass inside the region; tied maxima: the fraction "
           "of maps whose maximum is shared by several entries (the argmax then takes the first).", "",
           "| task | method | implementation | time (s) | floor | floor (s) | ratio to floor | pointing | mass in region "
           "| tied maxima |", "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["time"] is None:
            out.append(f"| {r['task']} | {r['method']} | {r['impl']} (fails: {r['note']}) | — | | | — | — | — | — |")
            continue
        pt = f"{r['point']:.2f}" + (f" (spatial {r['spatial']:.2f})" if r.get("spatial") is not None else "")
        out.append(f"| {r['task']} | {r['method']} | {r['impl']} | {r['time']:.2f} | {r['floor_label']} | "
                   f"{r['floor']:.2f} | {r['time'] / r['floor']:.2f}× | {pt} | {r['mass']:.2f} | {r['ties']:.2f} |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
