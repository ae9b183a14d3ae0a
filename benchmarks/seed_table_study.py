"""Why the localizer misses the seed table's goals: variants scored on VALIDATION signals, never the test set.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seed_table_study.py            # all variants, ~5-10 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seed_table_study.py remove preserve_t12
    SEED_STUDY_CACHE=/tmp/study ...   # keep the fitted localizers there and reuse them on the next run

The MNIST-1D CNN of benchmarks/seed_table.py (training seed 0); every localizer is fitted on 4000 fresh
MNIST-1D signals (generator seed 1) and scored on 600 other fresh signals (generator seed 2) with the
seed table's metrics (keep the top 30 %, zero the rest: average drop / increase; deletion AUC). The
test split is not used, so nothing here tunes the seed table's numbers.

Variants:
``remove``          ``Localizer()`` (defaults: removal, 'dataset_mean' baseline, 'auto' path)
``remove_zero``     removal with the protocol's zero baseline
``preserve``        ``objective='preserve', baseline='zero', tau=geomspace(1, 40, 10)`` (the seed table's row)
``preserve99``      the same with the 'preserve' target capped at p = 0.99 instead of 0.9
                    (``training.PRESERVE_CAP`` patched for this run only)
``preserve_t12``    'preserve' trained at the protocol's budget only (``tau=12`` = 30 % of 40 entries)
``lime``, ``gradcam`` the references, on the same validation signals
``preserve_dm``     'preserve' with the localizer's default 'dataset_mean' baseline (not the protocol's zero)
``lime``, ``gradcam``, ``ablationcam`` the references, on the same validation signals
``NAME:rank``       the localizer NAME's entries ranked by their softmax share (log p, no ties; the
                    masks are tanh(tau p), so only saturated entries can tie)
``NAME+rS[@F,F..][:lrX][:tY][:epsZ]``  the localizer NAME's masks refined per sample (``locate(refine=S,
                    refine_budget=[F, ...])``; no ``@``: the default budgets), with ``refine.REFINE_LR`` = X,
                    ``refine.REFINE_TEMPERATURE`` = Y and ``refine.REFINE_EPS`` = Z patched for that run only

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seed_table_study.py preserve remove_zero lime gradcam \
        ablationcam preserve+r30@0.3 remove_zero+r30 remove_zero+r60:lr0.2
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from seed_table import fresh_mnist1d, train  # noqa: E402

VARIANTS = ("remove", "remove_zero", "preserve", "preserve99", "preserve_t12")


def log_shares(loc, X) -> np.ndarray:
    """log softmax shares of the mask network (the order in which entries enter the mask along τ)."""
    from trustmap.localizer.training import mask_logits

    t, _ = loc._internal(X)
    net = loc.net_
    z = mask_logits(net, t).double()
    flat = z.reshape(len(z), net.groups, -1)
    if net.sink is not None:
        flat = torch.cat([flat, net.sink.detach().double().reshape(1, net.groups, 1).expand(len(z), net.groups, 1)], 2)
        return torch.log_softmax(flat, 2)[..., :-1].reshape(X.shape).numpy()
    return torch.log_softmax(flat, 2).reshape(X.shape).numpy()


def parse(name: str) -> tuple[str, dict | None]:
    """'preserve+r30@0.3:lr0.2:t1' -> ('preserve', {'steps': 30, 'budget': [0.3], 'lr': 0.2, 't': 1.0})."""
    if "+r" not in name:
        return name, None
    base, spec = name.split("+r", 1)
    parts = spec.split(":")
    head, opts = parts[0], parts[1:]
    steps, _, fr = head.partition("@")
    r = {"steps": int(steps), "budget": [float(f) for f in fr.split(",")] if fr else None}
    for o in opts:
        if o.startswith("lr"):
            r["lr"] = float(o[2:])
        elif o.startswith("eps"):
            r["eps"] = float(o[3:])
        elif o.startswith("t"):
            r["t"] = float(o[1:])
    return base, r


def fit_variant(name: str, model, Xf, yf):
    import trustmap.localizer.training as T
    from trustmap import Localizer

    kw: dict = {}
    if name.startswith("preserve"):
        kw = dict(objective="preserve", baseline="zero", tau=list(np.geomspace(1.0, 40.0, 10)))
    if name == "preserve_dm":
        kw["baseline"] = "dataset_mean"
    if name == "preserve_t12":
        kw["tau"] = 12.0
    if name == "remove_zero":
        kw = dict(baseline="zero")
    cap = T.PRESERVE_CAP
    T.PRESERVE_CAP = float(np.log(99)) if name == "preserve99" else cap
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Localizer(seed=0, **kw).fit(model, Xf, yf)
    finally:
        T.PRESERVE_CAP = cap


def main(argv=None) -> int:
    import trustmap
    import trustmap.localizer.refine as R
    from trustmap.explain import explain
    from trustmap.metrics import evaluate_explanations

    names = (argv if argv is not None else sys.argv[1:]) or list(VARIANTS) + [v + ":rank" for v in VARIANTS] + [
        "lime", "gradcam"]
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()}", flush=True)
    net, _ = train(0)
    model = trustmap.load_model(net)
    Xf, yf = fresh_mnist1d(1, 4000)
    Xv, yv = fresh_mnist1d(2, 600)
    print(f"classifier accuracy: fitting signals {np.mean(model.predict(Xf) == yf):.3f}, "
          f"validation signals {np.mean(model.predict(Xv) == yv):.3f}")
    maps, fitted, cost, t0 = {}, {}, {}, time.perf_counter()
    for name in names:
        if name in ("lime", "gradcam", "ablationcam"):  # the seed table's references, same validation signals
            t1 = time.perf_counter()
            maps[name] = explain(model, Xv, method=name)
            cost[name] = f"{time.perf_counter() - t1:.1f} s"
            continue
        rank = name.endswith(":rank")
        base, r = parse(name[:-5] if rank else name)
        if base not in fitted:
            cache = os.environ.get("SEED_STUDY_CACHE")  # a folder: fitted localizers saved there and reused
            path = os.path.join(cache, base + ".safetensors") if cache else None
            if path and os.path.exists(path):
                fitted[base] = trustmap.Localizer.load(path, model)
            else:
                fitted[base] = fit_variant(base, model, Xf, yf)
                if path:
                    os.makedirs(cache, exist_ok=True)
                    fitted[base].save(path)
            loc = fitted[base]
            print(f"{base}: tau {loc.tau_:.3g}, {loc.r2_}, {time.perf_counter() - t0:.0f} s", flush=True)
        loc = fitted[base]
        if rank:
            maps[name] = log_shares(loc, Xv)
            continue
        if r is None:
            maps[name] = loc.locate(Xv)
            continue
        lr, temp, eps = R.REFINE_LR, R.REFINE_TEMPERATURE, R.REFINE_EPS
        R.REFINE_LR, R.REFINE_TEMPERATURE, R.REFINE_EPS = r.get("lr", lr), r.get("t", temp), r.get("eps", eps)
        t1 = time.perf_counter()
        try:
            att = loc.locate(Xv, refine=r["steps"], refine_budget=r["budget"])
        finally:
            R.REFINE_LR, R.REFINE_TEMPERATURE, R.REFINE_EPS = lr, temp, eps
        maps[name] = att
        e = att.extras
        cost[name] = (f"{time.perf_counter() - t1:.1f} s, {e['refine_forward_passes']} fwd + "
                      f"{e['refine_backward_passes']} bwd; objective {e['refine_objective_before'].mean():.3f} -> "
                      f"{e['refine_objective_after'].mean():.3f}, improved {e['refine_improved'].mean():.2f}")
        print(f"{name}: {cost[name]}", flush=True)
    s = evaluate_explanations(model, Xv, yv, maps, metrics=["average_drop", "increase_in_confidence", "deletion"],
                              frac=0.3, n_boot=500, n_perm=200, seed=0)
    print(f"\nload average {os.getloadavg()}\n\n| variant | drop % [95 %] | increase % | deletion AUC [95 %] | cost |"
          "\n|---|---|---|---|---|")
    for m in maps:
        lo, hi = s.interval(m, "average_drop")
        dlo, dhi = s.interval(m, "deletion")
        print(f"| {m} | {s.value(m, 'average_drop'):.2f} [{lo:.2f}, {hi:.2f}] | "
              f"{s.value(m, 'increase_in_confidence'):.1f} | {s.value(m, 'deletion'):.3f} [{dlo:.3f}, {dhi:.3f}] | "
              f"{cost.get(m, '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
