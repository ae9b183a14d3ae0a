"""KernelSHAP accuracy per model evaluation (issue 18): error against exact Shapley values as a function of
model evaluations for trustmap's KernelSHAP, Captum's ``KernelShap`` and the ``shap`` package's
``KernelExplainer``, in one run; and the ``tol=`` stopping rule against its tolerance.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_shapley.py [--quick] [--out FILE]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_shapley.py --issue4-rows

Problem: the MNIST-1D CNN of the seed report (``trustmap.zoo.models.mnist1d_cnn``, trained here for a
few epochs on ``mnist1d`` train), test inputs, 10 features = segments of 4 positions, baseline zero,
explained score = the predicted class's probability. Exact Shapley values are enumerated (all 1,024
coalitions, the Shapley formula in this file; independent of trustmap's code). Error of a sample:
``‖φ̂ − φ‖₂ / ‖φ‖₂``; evaluations: model rows counted by a wrapper around the model, per sample
(the input and the baseline included for every implementation). Peers from
``.venv-bench/site`` (or ``$TRUSTMAP_PEERS``) (captum 0.9.0, shap 0.51.0): put on ``sys.path`` here.

trustmap runs with its default control variate (``control='auto'``) and without it (``control='none'``);
the surrogate uses only the logits of rows already counted. A second table repeats the comparison
(trustmap with and without the control variate, shap's KernelExplainer) on an untrained 10-segment
mnist1d_cnn and on the flat CNNs of ``bench_perturbation.py`` trained on the 12-lead and 2D synthetic
tasks (12 features each).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(1, str(HERE))
BENCH_SITE = os.environ.get("TRUSTMAP_PEERS") or str(HERE.parent / ".venv-bench" / "site")  # as benchmarks/peers.py
if os.path.isdir(BENCH_SITE):
    sys.path.append(BENCH_SITE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import trustmap  # noqa: E402

from trustmap.data.builtin import load  # noqa: E402
from trustmap.explain import explain  # noqa: E402
from trustmap.explain.shapley import shapley_matrix, tol_z  # noqa: E402
from trustmap.zoo.models import mnist1d_cnn  # noqa: E402

F, SEG, L = 10, 4, 40
BUDGETS = (12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256, 384, 512)
TOLS = (0.03, 0.01, 0.003)


class Counted(torch.nn.Module):
    """The model as probabilities, counting the rows it is given."""

    def __init__(self, net, probs=True):
        super().__init__()
        self.net, self.rows, self.probs = net, 0, probs

    def forward(self, x):
        self.rows += len(x)
        out = self.net(x)
        return torch.softmax(out, 1) if self.probs else out


def train(quick: bool):
    torch.manual_seed(0)
    d = load("mnist1d", "train")
    X = torch.as_tensor(d.X, dtype=torch.float32)[:, None]
    y = torch.as_tensor(d.y, dtype=torch.long)
    net = mnist1d_cnn()
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(3 if quick else 8):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 100):
            b = perm[i:i + 100]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(X[b]), y[b]).backward()
            opt.step()
    net.eval()
    t = load("mnist1d", "test")
    Xt = torch.as_tensor(t.X, dtype=torch.float32)[:, None]
    acc = float((net(Xt).argmax(1) == torch.as_tensor(t.y)).float().mean())
    return net, t.X.astype(np.float32), acc


def masks_to_inputs(x: np.ndarray, z: np.ndarray) -> torch.Tensor:
    """Coalitions ``z (m, F)`` of sample ``x (L,)`` as inputs ``(m, 1, L)`` (off = 0)."""
    return torch.as_tensor(np.repeat(z, SEG, axis=1) * x[None], dtype=torch.float32)[:, None]


def exact_shapley(net, x: np.ndarray, target: int) -> np.ndarray:
    codes = np.arange(2 ** F)
    z = ((codes[:, None] >> np.arange(F)) & 1).astype(np.float32)
    with torch.no_grad():
        v = torch.softmax(net(masks_to_inputs(x, z)), 1)[:, target].double().numpy()
    k = z.sum(1).astype(int)
    phi = np.zeros(F)
    for j in range(F):
        without = (codes >> j) & 1 == 0
        s = k[without]
        wgt = np.array([math.factorial(a) * math.factorial(F - a - 1) / math.factorial(F) for a in s])
        phi[j] = (wgt * (v[codes[without] | (1 << j)] - v[codes[without]])).sum()
    return phi


def rel_err(est, ref):
    return float(np.linalg.norm(est - ref) / max(np.linalg.norm(ref), 1e-12))


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            yield


def ours(net, X, targets, budget, seed, control="auto"):
    cm = Counted(net, probs=False)
    labels = np.arange(L) // SEG
    model = trustmap.load_model(cm, input_shape=(1, L), output="logits")
    _ = model.n_classes  # the loader's probes (shape, class count) are not part of the explanation
    cm.rows = 0
    a = explain(model, X[:, None], "kernelshap", target=targets, segmentation=labels, n_samples=budget, seed=seed,
                score="prob", control=control)
    # every row the model saw is counted in n_evals (the input and the baseline included)
    assert cm.rows == a.extras["n_evals"].sum(), (cm.rows, a.extras["n_evals"].sum())
    return a.extras["coefficients"], a.extras["n_evals"].astype(float)


def captum_ks(net, X, targets, budget, seed):
    import captum.attr as ca
    cm = Counted(net)
    fm = torch.as_tensor(np.arange(L) // SEG)[None, None]
    out, ev = np.zeros((len(X), F)), np.zeros(len(X))
    for i in range(len(X)):
        torch.manual_seed(seed * 100003 + i)
        cm.rows = 0
        with quiet():
            a = ca.KernelShap(cm).attribute(torch.as_tensor(X[i:i + 1])[:, None], target=int(targets[i]),
                                            feature_mask=fm, n_samples=budget, perturbations_per_eval=budget,
                                            baselines=0.0)
        out[i] = a[0, 0].numpy()[::SEG]
        ev[i] = cm.rows
    return out, ev


def shap_ks(net, X, targets, budget, seed, l1_reg="auto"):
    import shap
    cm = Counted(net)
    out, ev = np.zeros((len(X), F)), np.zeros(len(X))
    for i in range(len(X)):
        np.random.seed(seed * 100003 + i)
        x, tg = X[i], int(targets[i])

        def f(z, x=x, tg=tg):
            with torch.no_grad():
                return cm(masks_to_inputs(x, z.astype(np.float32)))[:, tg].double().numpy()

        cm.rows = 0
        with quiet():
            ex = shap.KernelExplainer(f, np.zeros((1, F)))
            out[i] = np.asarray(ex.shap_values(np.ones((1, F)), nsamples=budget, silent=True, l1_reg=l1_reg))[0]
        ev[i] = cm.rows
    return out, ev


def curve_table(net, X, targets, ref, budgets, seeds):
    impls = {"trustmap KernelShap": lambda b, s: ours(net, X, targets, b, s)[:2],
             "trustmap KernelShap (control='none')": lambda b, s: ours(net, X, targets, b, s, "none")[:2],
             "captum KernelShap": lambda b, s: captum_ks(net, X, targets, b, s),
             "shap KernelExplainer": lambda b, s: shap_ks(net, X, targets, b, s),
             "shap KernelExplainer (l1_reg=False)": lambda b, s: shap_ks(net, X, targets, b, s, l1_reg=False)}
    res = {}
    for name, fn in impls.items():
        for b in budgets:
            errs, evs = [], []
            t0 = time.perf_counter()
            for s in seeds:
                try:
                    est, ev = fn(b, s)
                except Exception as exc:  # a peer that fails at a budget is reported, not fatal
                    print(f"{name} n={b}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    est, ev = None, None
                    break
                errs += [rel_err(est[i], ref[i]) for i in range(len(X))]
                evs += list(ev)
            if est is None:
                continue
            res[name, b] = (float(np.mean(errs)), float(np.median(errs)), float(np.mean(evs)),
                            time.perf_counter() - t0)
            print(f"{name:40s} n_samples={b:4d} evals={np.mean(evs):7.1f} err={np.mean(errs):.4f}", file=sys.stderr)
    return res


def evals_for(res, name, err):
    """Evaluations ``name`` needs for a mean error ``err`` (log-log interpolation on its curve)."""
    pts = sorted((v[2], v[0]) for (n, _), v in res.items() if n == name)
    for (e0, r0), (e1, r1) in zip(pts, pts[1:]):
        if r0 >= err >= r1:
            if r0 == r1:
                return e0
            t = (math.log(r0) - math.log(err)) / (math.log(r0) - math.log(r1))
            return math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0)))
    if pts and pts[0][1] <= err:
        return pts[0][0]  # reached at our smallest budget already: an upper bound
    return None


def tol_table(net, X, targets, ref, seeds, cap):
    rows = []
    for tol in TOLS:
        ev, conv, exact, within, within_rms, cover = [], [], [], [], [], []
        for s in seeds:
            labels = np.arange(L) // SEG
            a = explain(torch.nn.Sequential(net), X[:, None], "kernelshap", target=targets, segmentation=labels,
                        n_samples=cap, seed=s, tol=tol, score="prob")
            coef, se = a.extras["coefficients"], a.extras["coefficient_stderr"]
            err = np.abs(coef - ref)
            ev += list(a.extras["n_evals"])
            conv += list(a.extras["converged"])
            exact += list(a.extras["exact"])
            within += list(err.max(1) <= tol)
            within_rms += list(np.sqrt((err ** 2).mean(1)) <= tol / 2)
            cover += list((err[~a.extras["exact"]] <= 2 * se[~a.extras["exact"]]).ravel())
        rows.append((tol, np.mean(ev), np.max(ev), np.mean(conv), np.mean(exact), np.mean(within),
                     np.mean(within_rms), np.mean(cover) if cover else float("nan")))
        print(f"tol={tol} evals={np.mean(ev):.0f} conv={np.mean(conv):.3f} exact={np.mean(exact):.3f} "
              f"max|err|<=tol {np.mean(within):.3f} cover {rows[-1][-1]:.3f}", file=sys.stderr)
    return rows


OTHER_BUDGETS = (32, 64, 128, 256)


def other_problems(quick: bool):
    """More models, each with 10-12 features: the issue's 10-segment Conv1d (mnist1d_cnn, untrained,
    seed 0), and the flat CNN of ``bench_perturbation.py`` trained on the 12-lead and the 2D synthetic
    tasks (12 time segments over all leads; 3x4 patches)."""
    from bench_perturbation import fit, flat_cnn

    torch.manual_seed(0)
    n = 10 if quick else 25
    net = mnist1d_cnn().eval()
    t = load("mnist1d", "test")
    yield ("mnist1d_cnn untrained (seed 0), 10 segments of 4", net, t.X[:n, None].astype(np.float32),
           np.arange(L)[None] // SEG, "NCL")
    for name, lay in (("synthetic-1d-12ch", "NCL"), ("synthetic-2d", "NCHW")):
        tr, te = load(name, "train", n_train=600), load(name, "test", n_test=n)
        Xtr, Xte = tr.internal().astype(np.float32), te.internal().astype(np.float32)
        net = fit(flat_cnn(Xtr.ndim - 2, Xtr.shape[1], Xtr.shape[2:]), Xtr, tr.y, epochs=6)
        if lay == "NCL":
            lab = np.broadcast_to(np.arange(Xtr.shape[2]) * 12 // Xtr.shape[2], Xtr.shape[1:])
            desc = f"flat CNN on {name} (6 epochs), 12 segments of the {Xtr.shape[2]} steps, all 12 leads together"
        else:
            h, w = Xtr.shape[2:]
            lab = (np.arange(h)[:, None] * 3 // h) * 4 + np.arange(w)[None] * 4 // w
            lab = np.broadcast_to(lab, Xtr.shape[1:])
            desc = f"flat CNN on {name} (6 epochs), 3x4 patches"
        yield desc, net, Xte, np.ascontiguousarray(lab), lay


def other_table(quick: bool, seeds):
    """Error per evaluation of trustmap's KernelSHAP with and without the control variate, and shap's
    KernelExplainer, on :func:`other_problems`."""
    import shap

    lines = ["| model | features | implementation | evaluations / sample | mean error |", "|---|---:|---|---:|---:|"]
    for desc, net, X, lab, lay in other_problems(quick):
        f = int(lab.max()) + 1
        with torch.no_grad():
            tg = net(torch.as_tensor(X)).argmax(1).numpy()
        codes = np.arange(2 ** f)
        zall = ((codes[:, None] >> np.arange(f)) & 1).astype(np.float32)
        M = shapley_matrix(f)
        ref = []
        for i in range(len(X)):
            with torch.no_grad():
                v = torch.softmax(net(torch.as_tensor(zall[:, lab] * X[i][None])), 1)[:, tg[i]].double().numpy()
            ref.append(M @ v)
        ref = np.stack(ref)
        for b in OTHER_BUDGETS:
            for control in ("auto", "none"):
                errs = []
                for s in seeds:
                    a = explain(torch.nn.Sequential(net), X, "kernelshap", target=tg, layout=lay, segmentation=lab,
                                n_samples=b, seed=s, score="prob", control=control)
                    errs += [rel_err(a.extras["coefficients"][i], ref[i]) for i in range(len(X))]
                lines.append(f"| {desc} | {f} | trustmap KernelShap (control='{control}') | {b} | {np.mean(errs):.4f} |")
                print(lines[-1], file=sys.stderr)
            errs, evs = [], []
            for s in seeds:
                for i in range(len(X)):
                    np.random.seed(s * 100003 + i)
                    cm = Counted(net)

                    def fz(z, x=X[i], tg_=int(tg[i]), cm=cm):
                        with torch.no_grad():
                            return cm(torch.as_tensor(z.astype(np.float32)[:, lab] * x[None]))[:, tg_].double().numpy()

                    with quiet():
                        est = np.asarray(shap.KernelExplainer(fz, np.zeros((1, f))).shap_values(
                            np.ones((1, f)), nsamples=b, silent=True))[0]
                    errs.append(rel_err(est, ref[i]))
                    evs.append(cm.rows)
            lines.append(f"| {desc} | {f} | shap KernelExplainer | {np.mean(evs):.0f} | {np.mean(errs):.4f} |")
            print(lines[-1], file=sys.stderr)
    return lines


def issue4_rows(quick: bool) -> str:
    """The KernelSHAP rows of RESULTS.md's issue-4 tables (speed against the floor, pointing game),
    re-measured with this estimator by ``bench_perturbation.py``'s protocol and functions (its models,
    inputs, floor and pointing score; trustmap only: the peers' rows there do not change)."""
    import bench_perturbation as bp

    lines = ["| model | method | implementation | inputs timed | time for N (s) | floor rows | floor (s) | ratio |",
             "|---|---|---|---:|---:|---|---:|---:|"]
    for name, (build, shape, n, _k, S, seg, _w) in bp.CASES.items():
        if quick:
            n = bp.QUICK[name][0]
        _, model, x, y = bp.case_inputs(build, shape, n)
        fl = min(bp.measure(bp.floor_forward(model, torch.randn(n * S, *shape), 1, batch=b)) for b in bp.FLOOR_BATCHES)
        t = bp.measure(lambda: explain(model, x, "kernelshap", target=y, segmentation="fixed", segment_size=seg,
                                       n_samples=S))
        lines.append(f"| {name} | kernelshap | trustmap | {n} | {t:.2f} | {n} x {S} | {fl:.2f} | {t / fl:.2f}× |")
        print(lines[-1], file=sys.stderr, flush=True)
    variants = [{}, {"per_channel": True, "segment_size": 16, "n_samples": 400},
                {"segment_size": 2, "n_samples": 600}, {"segmentation": "slic"}]
    tasks = ("synthetic-1d", "synthetic-1d-12ch", "synthetic-2d")
    res = {}
    from trustmap.data import load as load_task
    for task in tasks:
        tr, te = load_task(task, "train", n_train=600), load_task(task, "test", n_test=60 if quick else 150)
        Xtr, Xte = tr.internal(), te.internal()
        rank = Xtr.ndim - 2
        net = bp.fit(bp.flat_cnn(rank, Xtr.shape[1], Xtr.shape[2:]), Xtr, tr.y, epochs=6)
        with torch.no_grad():
            ok = net(torch.as_tensor(Xte)).argmax(1).numpy() == te.y
        mask = te.internal_mask()[ok]
        for i, params in enumerate(variants):
            if (params.get("segmentation") == "slic" and rank == 1) or (params.get("per_channel") and Xtr.shape[1] == 1):
                continue
            kw = {"segmentation": "fixed", "segment_size": 4, "n_samples": 300} if "segmentation" not in params \
                else {"n_samples": 300}
            a = explain(net, Xte[ok], "kernelshap", layout="NCL" if rank == 1 else "NCHW", **{**kw, **params})
            res[i, task] = (bp.pointing(a.maps, mask), bp.pointing(a.maps, mask, spatial_only=True),
                            bp.pointing_tied(a.maps, mask))
    lines += ["", "| method | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for i, params in enumerate(variants):
        lab = "kernelshap" + ("" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")
        cells = []
        for t in tasks:
            r = res.get((i, t))
            cells.append("—" if r is None else f"{r[0]:.2f}" + (f" (spatial {r[1]:.2f})" if t.endswith("12ch") else "")
                         + (f" [tied max {r[2]:.2f}]" if r[2] != r[0] and not t.endswith("12ch") else ""))
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, seeds and epochs (about a minute)")
    ap.add_argument("--out", help="write the markdown here as well")
    ap.add_argument("--issue4-rows", action="store_true",
                    help="only re-measure KernelSHAP's rows of the issue-4 speed and pointing tables")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.issue4_rows:
        t0 = time.perf_counter()
        print(issue4_rows(a.quick) + f"\n\n_({time.perf_counter() - t0:.0f} s; load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end)_")
        return
    n, seeds = (20, (0, 1)) if a.quick else (50, (0, 1, 2))
    budgets = (16, 32, 64, 128, 192, 384) if a.quick else BUDGETS
    t0 = time.perf_counter()
    net, Xt, acc = train(a.quick)
    X = Xt[:n]
    with torch.no_grad():
        targets = net(torch.as_tensor(X)[:, None]).argmax(1).numpy()
    ref = np.stack([exact_shapley(net, X[i], int(targets[i])) for i in range(n)])
    res = curve_table(net, X, targets, ref, budgets, seeds)
    tols = tol_table(net, X, targets, ref, seeds, cap=2048)
    other = other_table(a.quick, seeds[:1] if a.quick else seeds)
    names = sorted({k[0] for k in res}, key=["trustmap KernelShap", "trustmap KernelShap (control='none')",
                                             "captum KernelShap", "shap KernelExplainer",
                                             "shap KernelExplainer (l1_reg=False)"].index)
    lines = [f"MNIST-1D CNN (test accuracy {acc:.3f} after {3 if a.quick else 8} epochs), {n} test inputs x "
             f"{len(seeds)} seeds, {F} features (segments of {SEG}), baseline zero, score = probability of the "
             "predicted class. Error = mean over samples of ‖φ̂ − φ‖₂ / ‖φ‖₂ against the enumerated Shapley "
             "values; evaluations = model rows per sample, counted (input and baseline included).", "",
             "| implementation | n_samples | evaluations / sample | mean error | median error |",
             "|---|---:|---:|---:|---:|"]
    for name in names:
        for b in budgets:
            if (name, b) in res:
                m, md, ev, _ = res[name, b]
                lines.append(f"| {name} | {b} | {ev:.0f} | {m:.4f} | {md:.4f} |")
    lines += ["", "Evaluations trustmap needs for the error a peer reaches (log-log interpolation on trustmap's "
              "curve above; '≤' where trustmap's smallest budget already reaches it, '>' where its largest does not), "
              "with the control variate (the default) and without it (control='none'). '6× means ≤': the evaluations at "
              f"which trustmap has to reach the peer's error for the goal (peer evaluations / 6); KernelSHAP takes at "
              f"least F + 1 = {F + 1} (the input, the baseline and F − 1 coalitions, as many as free Shapley values "
              "under efficiency), so below that the goal cannot hold by construction:", "",
              "| peer | peer evaluations | peer error | 6× means ≤ (evaluations) | trustmap evaluations | fewer evaluations "
              "| trustmap control='none' evaluations | fewer evaluations |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cells(ours_name, err, ev):
        pts = [v[2] for (nm, _), v in res.items() if nm == ours_name]
        if not pts:
            return "— | —"
        need = evals_for(res, ours_name, err)
        if need is None:
            return f"> {max(pts):.0f} | < {ev / max(pts):.1f}×"
        le = "≤ " if need == min(pts) else ""
        return f"{le}{need:.0f} | {'≥ ' if le else ''}{ev / need:.1f}×"

    for name in names:
        if name.startswith("trustmap"):
            continue
        for b in budgets:
            if (name, b) not in res:
                continue
            err, _, ev, _ = res[name, b]
            six = f"{ev / 6:.1f}" + (f" (< {F + 1}: impossible)" if ev / 6 < F + 1 else "")
            lines.append(f"| {name} | {ev:.0f} | {err:.4f} | {six} | {cells('trustmap KernelShap', err, ev)} "
                         "| " + cells("trustmap KernelShap (control='none')", err, ev) + " |")
    lines += ["", f"`tol=` stopping rule, n_samples=2048 as the cap (2^{F} = 1024: a sample for which sampling on is "
              "predicted (SE ∝ 1/√draws) to cost more rows than the coalitions left, enumerates them instead: "
              "'exact'). The rule: stop when "
              f"z_F·SE ≤ tol for every attribution, z_F = {tol_z(F):.2f} for {F} features (Bonferroni, 95 % for "
              "the sample as a whole). 'max |err| ≤ tol': every attribution of the sample within tol of the exact "
              "Shapley value (the claim, goal ≥ 95 % of samples); 'RMS err ≤ tol/2': the sample's root-mean-square "
              "error; '±2 SE coverage': sampled (not exact) attributions whose exact value lies within 2 reported "
              "SE:", "",
              "| tol | mean evaluations | max evaluations | converged | exact | max \\|err\\| ≤ tol | RMS err ≤ tol/2 | ±2 SE coverage |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tol, ev, mx, conv, exact, within, within_rms, cover in tols:
        lines.append(f"| {tol:g} | {ev:.0f} | {mx:.0f} | {conv:.1%} | {exact:.1%} | {within:.1%} | {within_rms:.1%} "
                     f"| {cover:.1%} |")
    lines += ["", "Other models (exact Shapley values enumerated the same way; trustmap with and without the control "
              f"variate, shap's KernelExplainer at the same n_samples; {len(seeds[:1] if a.quick else seeds)} seed(s)):",
              ""] + other
    lines += ["", f"Total run time {time.perf_counter() - t0:.0f} s, load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end (shared 2-core machine; accuracy figures "
              "do not depend on load)."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
