"""Ray engine (issue 8): throughput of `trustmap explain` over an .npy file of MNIST-1D-shaped samples,
single-process streamed (`stream_explain`) against Ray Data on 1 and 2 actor workers (`ray_explain`;
also 4 and 8 where the machine has the cores, and 1 GPU worker where torch sees a GPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run.py --only ray --out /tmp/bench_ray.md

Every run explains the whole file with one method, chunks of 4096 rows, Parquet output (the format
Ray writes), from the model file (a seeded, untrained mnist1d_cnn: the throughput does not depend on
the weights). Each Ray worker is one actor with 1 CPU and 1 torch thread; the single-process run has
1 torch thread too. Samples/s is N over the wall time of the whole call (model loads, actor start-up
and writing included); starting Ray itself is timed apart. One run per cell: these take tens of
seconds each, and the machine's other load is shown beside them.
"""

from __future__ import annotations

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
METHODS = ("saliency", "occlusion")
CHUNK_ROWS = 4096


def _load() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover
        return "load average ?"


def run(quick: bool = False) -> str:
    head = "## Ray engine: `explain --engine ray` throughput\n\n"
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        return head + "Skipped: Ray is not installed (`pip install 'trustmap[scale]'`).\n"

    from trustmap.stream import stream_explain
    from trustmap.stream.ray_engine import ray_explain
    from trustmap.zoo import mnist1d_cnn, save

    n = N_QUICK if quick else N_FULL
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    rows = []
    try:
        torch.manual_seed(0)
        model = save(mnist1d_cnn(), tmp / "model")
        X = np.random.default_rng(0).normal(size=(n, 40)).astype(np.float32)
        np.save(tmp / "X.npy", X)
        del X
        cores = os.cpu_count() or 1
        workers_list = [w for w in (1, 2, 4, 8) if w <= max(2, cores)]  # 1 and 2 always; more where the cores are
        gpu = torch.cuda.is_available()
        was_up = ray.is_initialized()
        t0 = time.perf_counter()
        if not was_up:
            ray.init(num_cpus=max(workers_list), num_gpus=1 if gpu else 0, include_dashboard=False,
                     log_to_driver=False)
        ray_start = time.perf_counter() - t0
        try:
            # the fixed cost of a Ray run (actor processes start, import torch, load the model; one chunk of work)
            np.save(tmp / "one.npy", np.load(tmp / "X.npy", mmap_mode="r")[:CHUNK_ROWS])
            fixed = {}
            for workers in (1, 2):
                t0 = time.perf_counter()
                ray_explain(model, tmp / "one.npy", "saliency", tmp / f"one{workers}", num_workers=workers,
                            chunk_rows=CHUNK_ROWS // workers, progress=False)
                fixed[workers] = time.perf_counter() - t0
            for method in METHODS:
                cells = {}
                out = tmp / f"stream-{method}"
                t0 = time.perf_counter()
                stream_explain(model, tmp / "X.npy", method, out, chunk_rows=CHUNK_ROWS, format="parquet",
                               progress=False)
                cells["single process"] = (time.perf_counter() - t0, _load())
                shutil.rmtree(out)
                for workers, gpus in [(w, 0) for w in workers_list] + ([(1, 1)] if gpu else []):
                    out = tmp / f"ray{workers}-{gpus}-{method}"
                    t0 = time.perf_counter()
                    res = ray_explain(model, tmp / "X.npy", method, out, chunk_rows=CHUNK_ROWS, num_workers=workers,
                                      num_gpus_per_worker=gpus, progress=False)
                    name = f"Ray, {workers} worker{'s' if workers > 1 else ''}" + (" on the GPU" if gpus else "")
                    cells[name] = (time.perf_counter() - t0, _load())
                    assert res["model_loads"] == workers
                    shutil.rmtree(out)
                base = cells["single process"][0]
                for name, (sec, load) in cells.items():
                    rows.append(f"| {method} | {name} | {sec:.1f} | {n / sec:,.0f} | {base / sec:.2f} | {load} |")
        finally:
            if not was_up:
                ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (head + f"{n:,} MNIST-1D-shaped samples (`(N, 40)` float32 `.npy`), chunks of {CHUNK_ROWS} rows, Parquet "
            f"output; a local Ray with {max(workers_list)} CPUs on this {cores}-core machine (started in "
            f"{ray_start:.1f} s, not counted). Each Ray worker: 1 actor, 1 CPU, 1 torch thread, the model loaded "
            "once. Speed-up is over the single-process run; with 2 cores, 2 workers cannot beat 2x; a machine "
            "may be shared with other jobs (load average at the end of each run beside it). A Ray run has a fixed "
            f"cost: explaining one chunk ({CHUNK_ROWS} rows of saliency) took {fixed[1]:.1f} s with 1 worker and "
            f"{fixed[2]:.1f} s with 2 (actor processes start, import torch, load the model), against "
            "well under a second in one process.\n\n"
            "| method | engine | seconds | samples/s | speed-up | machine |\n|---|---|---:|---:|---:|---|\n"
            + "\n".join(rows) + "\n")


if __name__ == "__main__":  # pragma: no cover
    print(run(quick="--quick" in sys.argv))
