"""
Scale: data larger than memory, Ray, and several processes
==========================================================

Three ways trustmap scales past one in-memory batch:

1. **Streaming**: a ``.npy`` file is memory-mapped and explained a chunk of rows at a time; each
   chunk's maps are written in place into the output file, so the memory a run needs does not
   grow with the file. We write a file chunk by chunk (never holding it in memory), explain it
   at two sizes, and measure the peak memory of each run.
2. **Ray**: ``--engine ray`` runs the same work as Ray Data ``map_batches`` on a pool of actors,
   each loading the model once, and gives the same maps.
3. **DDP**: the TRUST localizer trains data-parallel (``DistributedDataParallel``, gloo on CPU)
   with ``trustmap locate --nproc 2``, and ends with the single process's localizer.

Every run goes through the ``trustmap`` command line in a child process, as you would run it on
a server. The sizes here are small so the page builds in a minute or two on a laptop; the
commands are the same for a billion rows.
"""

# %%
# A model and a big file, written in chunks
# -----------------------------------------
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

from trustmap import datasets, stream, zoo

QUICK = os.environ.get("TRUSTMAP_DOCS_QUICK") == "1"
torch.set_num_threads(1)
torch.manual_seed(0)
workdir = tempfile.mkdtemp(prefix="trustmap-scale-")
atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # the big files go when Python exits
SIZES = (10_000, 50_000) if QUICK else (20_000, 500_000)

train = datasets.load("mnist1d", split="train")
net = zoo.mnist1d_cnn()
zoo.Trainer(**zoo.RECIPES["mnist1d_cnn"], progress=False).fit(net, train.X, train.y)
zoo.save(net, os.path.join(workdir, "model.safetensors"), classes=train.classes)

# %%
# ``numpy.lib.format.open_memmap`` creates the ``.npy`` on disk; we fill it 5,000 rows at a
# time with MNIST-1D test samples plus a little noise, so at no point is the whole file in memory.
test = datasets.load("mnist1d", split="test")
rng = np.random.default_rng(0)


def write_big(path, n, chunk=5_000):
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 40))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = test.X[rng.integers(0, len(test), stop - start)]
        out[start:stop] = rows + rng.normal(0, 0.05, rows.shape).astype(np.float32)
    out.flush()
    del out


for n in SIZES:
    write_big(os.path.join(workdir, f"big_{n}.npy"), n)
    print(f"big_{n}.npy: {os.path.getsize(os.path.join(workdir, f'big_{n}.npy')) / 2**20:.1f} MiB")


def run(args, measure_memory=False):
    """Run ``trustmap ARGS`` in a child process; return its stdout (and peak resident MiB)."""
    # VmHWM (Linux) is the child's own peak; ru_maxrss would also count a large parent on Linux,
    # which keeps it across exec.
    code = ("import resource, sys\nfrom trustmap.cli import main\nrc = main(sys.argv[1:])\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "try:\n    peak = [int(ln.split()[1]) / 1024 for ln in open('/proc/self/status')"
            " if ln.startswith('VmHWM:')][0]\nexcept (OSError, IndexError):\n    pass\n"
            "print('peak_rss_mib', peak)\nsys.exit(rc)")
    cmd = [sys.executable, "-c", code, *args] if measure_memory else [sys.executable, "-m", "trustmap.cli", *args]
    print("$ trustmap " + " ".join(args))
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    lines = [ln for ln in res.stdout.splitlines() if not ln.startswith(("wrote", "peak_rss_mib"))]
    print("\n".join(lines[:8]))
    if res.returncode != 0:
        print(res.stderr)
        raise RuntimeError(f"trustmap {args[0]} exited with {res.returncode}")
    peak = [float(ln.split()[1]) for ln in res.stdout.splitlines() if ln.startswith("peak_rss_mib")]
    return res.stdout, (peak[0] if peak else None)


# %%
# Streaming at constant memory
# ----------------------------
# ``--stream`` reads ``--chunk-rows`` rows at a time (automatic for files over 512 MiB). The
# saliency maps of every row are written into ``saliency.npy`` as each chunk finishes; an
# interrupted run resumes after the last finished chunk.
peaks = {}
for n in SIZES:
    _, peaks[n] = run(["explain", "--model", "model.safetensors", "--data", f"big_{n}.npy", "--stream",
                       "--chunk-rows", "4096", "--method", "saliency", "--quiet", "--out", f"runs/stream_{n}"],
                      measure_memory=True)
for n, p in peaks.items():
    print(f"{n:>8,} rows ({n * 160 / 2**20:5.1f} MiB of data): peak resident memory {p:.0f} MiB")

# %%
# Many times the rows, the same memory: the peak is the Python interpreter, torch and one chunk.
# The maps come back memory-mapped with :func:`trustmap.stream.read_maps`:
maps, targets, record = stream.read_maps(os.path.join(workdir, f"runs/stream_{SIZES[1]}", "saliency.npy"))
print(type(maps).__name__, maps.shape, maps.dtype, "targets", targets[:10])
print({k: record[k] for k in ("method", "chunk_rows") if k in record})
fig, ax = plt.subplots(figsize=(5, 2.6), constrained_layout=True)
ax.bar([f"{n:,} rows" for n in peaks], list(peaks.values()), color="tab:blue")
ax.set_ylabel("peak resident memory (MiB)")
ax.set_title("streamed saliency: memory does not grow with the file")

# %%
# Ray
# ---
# ``--engine ray --workers 2`` starts a local Ray (and stops it afterwards), or joins a cluster
# with ``--address``. Ray is in trustmap's ``[scale]`` and ``[all]`` extras; if it is missing, this
# step says so and is skipped. The result is a Parquet folder with the same maps as the local
# streamed run with the same ``--chunk-rows``.
try:
    import ray  # noqa: F401

    have_ray = True
except ImportError:
    have_ray = False
    print("Ray is not installed (pip install 'trustmap[scale]'): skipping the Ray step.")
if have_ray:
    n_ray = SIZES[0]
    run(["explain", "--model", "model.safetensors", "--data", f"big_{n_ray}.npy", "--engine", "ray",
         "--workers", "2", "--chunk-rows", "4096", "--method", "saliency", "--quiet", "--out", "runs/ray"])
    ray_maps, ray_targets, _ = stream.read_maps(os.path.join(workdir, "runs/ray", "saliency.parquet"))
    local_maps, local_targets, _ = stream.read_maps(os.path.join(workdir, f"runs/stream_{n_ray}", "saliency.npy"))
    print(f"Ray vs local: {ray_maps.shape}, largest difference {np.abs(ray_maps - local_maps).max():.2e}, "
          f"same targets: {bool(np.array_equal(ray_targets, local_targets))}")

# %%
# DDP for the localizer
# ---------------------
# ``trustmap locate --nproc 2`` starts two processes through ``torchrun`` (gloo on CPU). Each
# global batch is split between them and the gradients are averaged, so the result is the
# single-process fit with the same batch size, up to the order of floating-point sums (in float32
# the differences grow with the training steps; see :class:`trustmap.Localizer`). We fit both ways
# on the same labelled file and compare. Three epochs keep this page fast; for a real fit leave
# ``--epochs`` at its default.
np.savez(os.path.join(workdir, "fit.npz"), X=test.X, y=test.y)
epochs = "3" if QUICK else "10"
out1, _ = run(["locate", "--model", "model.safetensors", "--data", "fit.npz", "--epochs", epochs,
               "--quiet", "--out", "runs/loc1"])
out2, _ = run(["locate", "--model", "model.safetensors", "--data", "fit.npz", "--epochs", epochs,
               "--nproc", "2", "--quiet", "--out", "runs/loc2"])
m1 = np.load(os.path.join(workdir, "runs/loc1/masks.npz"))["maps"]
m2 = np.load(os.path.join(workdir, "runs/loc2/masks.npz"))["maps"]
with open(os.path.join(workdir, "runs/loc2/run.json")) as f:
    rec = json.load(f)
print(f"masks {m1.shape}: largest difference between 1 and 2 processes {np.abs(m1 - m2).max():.1e}, "
      f"same arg-max position for {np.mean(m1.argmax(1) == m2.argmax(1)):.0%} of the samples")
print("world size recorded in run.json:", rec["localizer"]["world_size"])
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6), sharey=True, constrained_layout=True)
for ax, i in zip(axes, range(3)):
    ax.plot(m1[i], label="1 process")
    ax.plot(m2[i], ls="--", label="2 processes (DDP)")
    ax.set_title(f"mask of test sample {i}", fontsize=9)
axes[0].legend(fontsize=7)
plt.show()
