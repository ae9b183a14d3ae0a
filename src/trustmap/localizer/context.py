"""Where a localizer fit runs: one process (:class:`LocalContext`) or several with DDP
(:class:`~trustmap.localizer.distributed.DistContext`), behind one interface.

The training loop and the evaluation of the masked risks talk only to this interface; they have
no branch for "distributed or not". In one process every operation is the identity: the process
takes the whole batch, sums over one process, runs rank 0's work itself, wraps nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from . import distributed as _distributed

__all__ = ["LocalContext", "make_context"]


class LocalContext:
    """The single-process context: the same methods as ``DistContext``, each the identity."""

    rank = 0
    world = 1
    is_main = True

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device

    def shard(self, n: int) -> tuple[int, int]:
        return 0, n

    def batch_share(self, m: int) -> tuple[int, int, None, None]:
        return 0, m, None, None

    def sum_np(self, arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr, dtype=np.float64)

    def max_float(self, v: float) -> float:
        return float(v)

    def all_same(self, value: str) -> bool:
        return True

    def from_main(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def broadcast_module(self, module: nn.Module) -> None:
        return None

    def wrap(self, net: nn.Module) -> nn.Module:
        return net

    @contextlib.contextmanager
    def patched(self, net: nn.Module) -> Iterator[None]:
        yield

    def quiet(self):
        return contextlib.nullcontext()


def make_context(distributed: Any, device: torch.device) -> "LocalContext | _distributed.DistContext":
    """The context for a fit on ``device``: data-parallel when a process group of > 1 is up (see
    ``Localizer(distributed=...)``), else this process alone."""
    ctx = _distributed.context(distributed, device)
    return LocalContext(torch.device(device)) if ctx is None else ctx
