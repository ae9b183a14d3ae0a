"""Timing helpers for benchmarks: the physical floor (batched forward / forward+backward
passes a method needs) and wall time of any callable. Never used by tests."""

from __future__ import annotations

import gc
import os
import statistics
import time
from typing import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def timeit(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _batches(n: int, batch: int):
    return [slice(i, min(n, i + batch)) for i in range(0, n, batch)]


def floor_forward(model, x: torch.Tensor, passes: int = 1, batch: int = 1000) -> Callable[[], None]:
    """A callable doing ``passes`` batched forward passes of ``x`` (internal layout) through a
    trustmap Model, in inference mode: the floor of a forward-only method."""

    def run():
        with model.frozen(), torch.inference_mode():
            for _ in range(passes):
                for s in _batches(len(x), batch):
                    model.logits_t(x[s])

    return run


def floor_backward(model, x: torch.Tensor, passes: int = 1, batch: int = 1000) -> Callable[[], None]:
    """A callable doing ``passes`` batched forward+backward passes (gradient w.r.t. the input)."""

    def run():
        with model.frozen():
            for _ in range(passes):
                for s in _batches(len(x), batch):
                    xi = x[s].detach().requires_grad_(True)
                    out = model.logits_t(xi)
                    torch.autograd.grad(out[:, 0].sum(), xi)

    return run


def summarize(times: list[float]) -> str:
    return f"{min(times):.4f}s (median {statistics.median(times):.4f}s)"
