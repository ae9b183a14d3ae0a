"""Ray engine (issue 18): throughput of `trustmap explain` over an .npy file of MNIST-1D-shaped samples,
single-process streamed (`stream_explain`) against `ray_explain` on a warm pool of 1 and 2 workers
(also 4 and 8 where the machine has the cores, and 1 GPU worker where torch sees a GPU), with Ray's
fixed cost measured apart.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py --n 200000 --methods occlusion,lime
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ray.py --quick      # 20,000 samples
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run.py --only ray --out /tmp/bench_ray.md

Every run explains the whole file with one method, chunks of 4096 rows, Parquet output, from the
model file (a seeded, untrained mnist1d_cnn: the throughput does not depend on the weights). Each Ray
worker is one actor with 1 CPU and 1 torch thread; the single-process run has 1 torch thread too.

* Fixed cost: a `ray_explain` of 256 rows of saliency with no Ray running (start a local Ray, start
  the actors, import torch, load the model, time the method, explain, write), then the same call
  again on the warm pool; the single-process call beside them.
* Throughput: seconds of the whole call on a warm pool (the pool started by the fixed-cost call);
  "cold" adds the measured difference between a cold and a warm call, i.e. what a first call in a
  fresh process costs.
* What `--engine auto` would pick for each job (`choose_engine`, its rule and its estimate).

One run per cell; the machine's load average (1 minute) is printed beside each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness  # noqa: E402,F401  (sets torch's thread count from OMP_NUM_THREADS)

N_FULL, N_QUICK = 200_000, 20_000
METHODS = ("occlusion", "lime")
CHUNK_ROWS = 4096


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


def _cpu(ray_engine, w: int) -> list[float]:
    """CPU seconds used so far by the first ``w`` workers of the warm pool."""
    import ray

    pool = ray_engine._STATE["pool"]
    return [i["cpu_s"] for i in ray.get([a.info.remote() for a in pool.actors[:w]])]


def run(quick: bool = False, n: int | None = None, methods=METHODS, workers=None, lime_samples: int | None = None
        ) -> str:
    head = "## Ray engine: `explain --engine ray` throughput\n\n"
    try:
        import ray  # noqa: F401
    except ImportError:
        return head + "Skipped: Ray is not installed (`pip install 'trustmap[scale]'`).\n"

    from trustmap.stream import stream_explain
    from trustmap.stream import ray_engine
    from trustmap.stream.ray_engine import (PAYS_MARGIN, RAY_START_S, choose_engine, ray_explain,
                                            shutdown_ray_pool)
    from trustmap.zoo import mnist1d_cnn, save

    n = int(n or (N_QUICK if quick else N_FULL))
    cores = os.cpu_count() or 1
    workers_list = list(workers or [w for w in (1, 2, 4, 8) if w <= max(2, cores)])
    opts = {"lime": {"n_samples": int(lime_samples)}} if lime_samples else {}

    def params_of(method):
        return {k: v for k, v in opts.items() if k == method}
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    rows = []
    try:
        torch.manual_seed(0)
        model = save(mnist1d_cnn(), tmp / "model")
        X = np.random.default_rng(0).normal(size=(n, 40)).astype(np.float32)
        np.save(tmp / "X.npy", X)
        np.save(tmp / "tiny.npy", X[:256])
        del X
        if ray.is_initialized():
            return head + "Skipped: Ray is already running in this process; the fixed cost needs a fresh start.\n"

        # what --engine auto picks for each job, with no Ray running (the CLI's case: a cold start)
        choices = {}
        for method in methods:
            t0 = time.perf_counter()
            choices[method] = (choose_engine(model, tmp / "X.npy", method, params=params_of(method),
                                             num_workers=max(workers_list)), time.perf_counter() - t0)

        # the fixed cost: a tiny job, cold (no Ray, no pool) then warm (the pool kept), then in one process
        t0 = time.perf_counter()
        ray_explain(model, tmp / "tiny.npy", "saliency", tmp / "tiny-cold", num_workers=max(workers_list),
                    progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm_res = ray_explain(model, tmp / "tiny.npy", "saliency", tmp / "tiny-warm", num_workers=max(workers_list),
                               progress=False)
        warm = time.perf_counter() - t0
        assert warm_res["model_loads"] == 0 and warm_res["pool_reused"]
        t0 = time.perf_counter()
        stream_explain(model, tmp / "tiny.npy", "saliency", tmp / "tiny-local", format="parquet", progress=False)
        local_tiny = time.perf_counter() - t0
        fixed_load = _load()

        singles = {}
        for method in methods:
            cells = []
            out = tmp / f"stream-{method}"
            t0, c0 = time.perf_counter(), time.process_time()
            stream_explain(model, tmp / "X.npy", method, out, params=params_of(method), chunk_rows=CHUNK_ROWS,
                           format="parquet", progress=False)
            base = time.perf_counter() - t0
            base_cpu = time.process_time() - c0
            singles[method] = base
            cells.append(("single process", base, _load(), "", None, base_cpu, base_cpu))
            shutil.rmtree(out)
            one = None
            for w in workers_list:
                out = tmp / f"ray{w}-{method}"
                before = _cpu(ray_engine, w)
                t0, c0 = time.perf_counter(), time.process_time()
                res = ray_explain(model, tmp / "X.npy", method, out, params=params_of(method), chunk_rows=CHUNK_ROWS,
                                  num_workers=w, progress=False)
                sec = time.perf_counter() - t0
                driver_cpu = time.process_time() - c0
                per_worker = [a - b for a, b in zip(_cpu(ray_engine, w), before)]
                assert res["model_loads"] == 0, "the pool should be warm"
                one = sec if w == 1 else one
                blocks = f"{res['blocks']} blocks of {res['block_rows']:,} rows"
                cells.append((f"Ray, {w} worker{'s' if w > 1 else ''}", sec, _load(), blocks,
                              None if one is None or w == 1 else one / sec, driver_cpu + sum(per_worker),
                              max([driver_cpu, *per_worker])))
                shutil.rmtree(out)
            choice, probe = choices[method]
            busy1 = next(c[6] for c in cells if c[0] == "Ray, 1 worker") if 1 in workers_list else None
            for name, sec, load, blocks, vs1, cpu, busiest in cells:
                cold_sec = sec + (cold - warm) if name.startswith("Ray") else sec
                rows.append(f"| {method} | {name} | {sec:.1f} | {n / sec:,.0f} | {base / sec:.2f} | "
                            f"{'' if vs1 is None else f'{vs1:.2f}'} | {base / cold_sec:.2f} | {cpu:.1f} | "
                            f"{busiest:.1f} | {base_cpu / busiest:.2f} | "
                            f"{'' if busy1 is None or not name.startswith('Ray') else f'{busy1 / busiest:.2f}'} | "
                            f"{blocks} | {load:.1f} |")
            rows.append(f"| {method} | `--engine auto` (cold) picks **{choice['engine']}** | | | | | | | | | | "
                        f"estimated {choice['work_s']:.1f} s of work; Ray saves ~{choice['ray_saving_s']:.1f} s vs "
                        f"{choice['ray_fixed_s']:.1f} s fixed (probe {probe:.1f} s) | |")
        if torch.cuda.is_available():  # one GPU worker (another pool: warmed by a tiny call first)
            ray_explain(model, tmp / "tiny.npy", "saliency", tmp / "tiny-gpu", num_workers=1, num_gpus_per_worker=1,
                        progress=False)
            for method in methods:
                out = tmp / f"gpu-{method}"
                t0 = time.perf_counter()
                ray_explain(model, tmp / "X.npy", method, out, params=params_of(method), chunk_rows=CHUNK_ROWS,
                            num_workers=1, num_gpus_per_worker=1, progress=False)
                sec = time.perf_counter() - t0
                rows.append(f"| {method} | Ray, 1 worker on the GPU | {sec:.1f} | {n / sec:,.0f} | "
                            f"{singles[method] / sec:.2f} | | | | | | | | {_load():.1f} |")
                shutil.rmtree(out)
    finally:
        shutdown_ray_pool()
        shutil.rmtree(tmp, ignore_errors=True)
    lime_note = (f"LIME with n_samples={lime_samples} (default 300)" if lime_samples else "LIME with its defaults "
                 "(300 perturbations)")
    return (head + f"{n:,} MNIST-1D-shaped samples (`(N, 40)` float32 `.npy`), chunks of {CHUNK_ROWS} rows, Parquet "
            f"output, {lime_note}; occlusion with its defaults. {cores}-core machine, load average at the end of each "
            "run beside it. Each Ray worker: 1 actor, 1 CPU, 1 torch thread; the pool is warm (started by the "
            "fixed-cost call below), so the seconds are the job's own; *cold* adds the measured start-up. "
            "Speed-up is over the single-process run; *vs 1 worker* is the scaling from 1 to W workers.\n\n"
            f"Fixed cost (256 rows of saliency, {max(workers_list)} workers; load average {fixed_load:.1f}): "
            f"**{cold:.1f} s** with no Ray running (start a local Ray, start the actors, import torch, load the "
            f"model, time the method, explain, write), **{warm:.2f} s** on the warm pool, {local_tiny:.2f} s in "
            f"one process. `--engine auto` assumes {RAY_START_S:g} s cold and picks Ray when rows x cost per row x "
            f"(1 - 1/W) > {PAYS_MARGIN:g} x the fixed cost.\n\n"
            "CPU columns: CPU seconds of the driver and the workers together, of the busiest process (driver or a "
            "worker), and the speed-ups they imply on an idle machine (the single run's CPU seconds, or the 1-worker "
            "run's busiest, over this run's busiest): on a shared machine the wall times measure the other jobs too "
            "(the kernel's autogroup scheduler gives this session one share of the CPUs however many workers it "
            "runs), the CPU seconds do not.\n\n"
            "| method | engine | seconds | samples/s | speed-up | vs 1 worker | speed-up, cold | CPU s | busiest CPU s "
            "| idle speed-up (CPU) | idle vs 1 worker (CPU) | blocks | load avg |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n"
            + "\n".join(rows) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, help=f"samples (default {N_FULL:,}; --quick: {N_QUICK:,})")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default occlusion,lime)")
    p.add_argument("--workers", help="comma-separated worker counts (default 1,2 and 4,8 where the cores are)")
    p.add_argument("--lime-samples", type=int, help="LIME's n_samples (default: LIME's own, 300)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    print(run(quick=a.quick, n=a.n, methods=[m for m in a.methods.split(",") if m],
              workers=[int(w) for w in a.workers.split(",")] if a.workers else None, lime_samples=a.lime_samples)
          + f"\n_(bench_ray took {time.perf_counter() - t0:.0f} s)_\n")


if __name__ == "__main__":  # pragma: no cover
    main()
