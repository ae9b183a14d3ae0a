"""Data-parallel training of the localizer with ``torch.distributed`` (DDP).

How a fit is shared out (``Localizer(distributed='auto')``, the default, in a process group of
``W > 1`` processes, e.g. a script started with ``torchrun --nproc-per-node W``):

* every process (rank) is given the same full data, settings, model and seed; the splits, the τ
  grid, the baseline statistics and the order of the samples are the same on every rank (they
  are seeded);
* each *global* batch of ``batch_size`` samples is cut into ``W`` contiguous shards, one per
  rank; the mask network is wrapped in :class:`torch.nn.parallel.DistributedDataParallel`;
* each rank's loss is its shard's per-sample sum times ``W / batch``, so the gradient DDP
  averages is the gradient of the global batch's mean, also when the shards are unequal;
* BatchNorm layers of the mask network use the statistics of the whole global batch (their
  sums are all-reduced with autograd: :func:`global_batch_stats`); their running statistics
  are updated as one process would update them. (``torch.nn.SyncBatchNorm`` refuses CPU
  tensors in torch 2.13, so it cannot serve the gloo backend.);
* per-sample randomness (the τ draws, the 'noise' baseline, ``nn.Dropout`` /
  ``nn.Dropout1d/2d/3d`` masks) is drawn for the global batch and sliced, so the ranks follow
  the single process's random stream (dropout: exactly on the CPU; on CUDA a single process
  uses a fused kernel with its own stream, so the draws differ there);
* after training the masked risks on the calibration / held-out splits are computed a share per
  rank and summed; every rank ends with the same fitted localizer and results; only rank 0
  writes files.

The result is the single-process fit with the same global batch up to rounding (summation order):
in float64 the masks agree within 1e-6; in float32 training amplifies the rounding differences
step by step, by an amount that depends on the task (masks within 5e-3 after up to 60 steps on the
distractor task of tests/test_localizer_ddp.py, 7e-3 after 90 in benchmarks/bench_ddp.py; 7.6e-2 after
about 50 steps on MNIST-1D, the float32-vs-float64 gap); use float64 where fits must agree.

Backends: gloo for a model on the CPU, nccl for a model on ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import InputError, UnsupportedError

__all__ = ["Session", "session", "DistContext", "context", "env_world", "launch", "free_port", "shard",
           "global_batch_stats"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_FEATURE_DROPOUT = {nn.Dropout1d: 3, nn.Dropout2d: 4, nn.Dropout3d: 5}


def _dist():
    import torch.distributed as dist

    return dist


_EXIT_DRAIN_S = 0.1
_exit_drain_registered = False


def _drain_at_exit() -> None:
    """Give gloo's worker threads the GIL once more before the interpreter finalizes.

    After a DDP fit the gloo process group outlives ``destroy_process_group`` (torch 2.13: DDP keeps
    it referenced; its worker threads keep running), and a worker thread that drops the last
    reference to a finished collective must take the GIL to free the Python objects the work holds
    (tensors; the autograd context captured by collectives issued during backward). If that happens
    while Python finalizes, the thread exits inside a ``noexcept`` frame and the process aborts
    ("terminate called without an active exception"). Sleeping in an ``atexit`` hook (it runs before
    finalization) lets those threads finish. Measured on 2 CPU processes: a minimal DDP script aborted
    at exit in 8 of 24 runs without it, 0 of 24 with it; the test worker 3 of ~12 without, 0 of 10 with.
    """
    import time

    time.sleep(_EXIT_DRAIN_S)


def _register_exit_drain() -> None:
    global _exit_drain_registered
    if not _exit_drain_registered:
        import atexit

        atexit.register(_drain_at_exit)
        _exit_drain_registered = True


def env_world() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables, or None when unset."""
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


# ---- the process group for a run (runner / CLI) ---------------------------------------------------
@dataclass
class Session:
    """Where this process stands: ``rank`` of ``world_size``; ``device`` to put the model on (None: leave it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    created: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            _dist().barrier()


def _check_distributed(value: Any) -> None:
    if not (value == "auto" and isinstance(value, str)) and not isinstance(value, bool):
        raise InputError("distributed must be 'auto', True or False", parameter="distributed",
                         expected="'auto', True or False", got=value,
                         fix="distributed='auto' trains data-parallel when a torch.distributed process group is up")


def _resolve_device(device: Any, local_rank: int, distributed: bool) -> torch.device | None:
    if device is None:
        return None
    d = torch.device(device) if not isinstance(device, torch.device) else device
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("CUDA is not available on this machine", parameter="device", expected="'cpu'",
                             got=str(device), fix="use device='cpu' (gloo) or run on a machine with GPUs")
        return torch.device("cuda", local_rank) if distributed else d
    return d


@contextlib.contextmanager
def session(distributed: Any = "auto", device: Any = None) -> Iterator[Session]:
    """Join the process group of this run, initializing it from torchrun's environment when needed.

    When ``RANK`` / ``WORLD_SIZE`` are set (torchrun) with a world size > 1 and no group is
    initialized yet, it is initialized here (``device`` on CUDA: nccl on ``cuda:LOCAL_RANK``;
    else gloo) and destroyed on exit. A group the caller initialized is used as it is and left up.
    ``distributed=False`` ignores any group (every process works alone).
    """
    _check_distributed(distributed)
    dist = _dist()
    if distributed is False:
        yield Session(device=_resolve_device(device, 0, False))
        return
    created = False
    if not (dist.is_available() and dist.is_initialized()):
        env = env_world()
        if env is not None and env[1] > 1:
            if not dist.is_available():  # pragma: no cover - torch builds without distributed
                raise UnsupportedError("this torch build has no torch.distributed", parameter="distributed",
                                       expected="a torch with distributed support", got=torch.__version__,
                                       fix="run in one process (distributed=False)")
            d = _resolve_device(device, env[2], True)
            if d is not None and d.type == "cuda":
                torch.cuda.set_device(d)
                dist.init_process_group("nccl", device_id=d)
            else:
                dist.init_process_group("gloo")
            created = True
            _register_exit_drain()
        elif distributed is True:
            raise InputError("distributed=True but no torch.distributed process group is set up",
                             parameter="distributed", expected="a run started with torchrun (RANK, WORLD_SIZE set) "
                             "or torch.distributed.init_process_group called", got="no process group",
                             fix="start it with `torchrun --nproc-per-node N ...`, or pass distributed='auto'")
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        env = env_world()
        local = env[2] if env is not None else rank
    else:
        rank, world, local = 0, 1, 0
    try:
        yield Session(rank, world, local, _resolve_device(device, local, world > 1), created)
    finally:
        if created:
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


# ---- the training context (Localizer.fit) -----------------------------------------------------------
def context(distributed: Any, device: torch.device) -> "DistContext | None":
    """The data-parallel context for a fit on ``device``, or None when this process trains alone
    (:func:`trustmap.localizer.context.make_context` turns None into the single-process context)."""
    _check_distributed(distributed)
    dist = _dist()
    if distributed is False:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        if distributed is True:
            raise InputError("distributed=True but no torch.distributed process group is initialized",
                             parameter="distributed", expected="torch.distributed.init_process_group called "
                             "(e.g. in a script started with torchrun)", got="no process group",
                             fix="start the script with `torchrun --nproc-per-node N script.py` and call "
                                 "torch.distributed.init_process_group(), or pass distributed='auto'")
        return None
    if dist.get_world_size() < 2:
        return None
    return DistContext(torch.device(device))


class DistContext:
    """What a data-parallel fit needs: the shard of each batch, reductions, DDP and the BatchNorm /
    dropout patches that make the shards add up to the global batch."""

    def __init__(self, device: torch.device) -> None:
        dist = _dist()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = device
        _register_exit_drain()
        backend = str(dist.get_backend()).lower()
        cpu_ok = "gloo" in backend or "mpi" in backend
        if device.type == "cpu" and not cpu_ok:
            raise InputError("the model is on the CPU but the process group's backend cannot reduce CPU tensors",
                             parameter="distributed", expected="a gloo process group for a CPU model",
                             got=f"backend {backend!r}",
                             fix="init_process_group('gloo'), or put the model on cuda:LOCAL_RANK for nccl")
        if device.type == "cuda" and device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        #: reductions of our own (losses, risks) go through this device
        self.comm_device = torch.device("cpu") if cpu_ok else self.device
        self._step = (0, 0, 0)  # (global batch size, this rank's first row, its end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- sharding ---------------------------------------------------------------------------------
    def shard(self, n: int) -> tuple[int, int]:
        """Rows ``[a, b)`` of a global batch of ``n`` that this rank takes."""
        return shard(n, self.rank, self.world)

    def set_step(self, n: int) -> tuple[int, int]:
        a, b = self.shard(n)
        self._step = (n, a, b)
        return a, b

    def batch_share(self, m: int) -> tuple[int, int, tuple[int, int, int] | None, float | None]:
        """This rank's rows ``[a, b)`` of a global batch of ``m``, the ``rows`` to slice batch-wide noise
        with, and the loss scale (world / m: the shard's sum scaled so DDP's average is the batch mean)."""
        a, b = self.set_step(m)
        return a, b, (m, a, b), self.world / m

    def quiet(self):
        """Warnings are given once, by rank 0."""
        if self.is_main:
            return contextlib.nullcontext()
        return _no_warnings()

    # -- reductions -------------------------------------------------------------------------------
    def sum_np(self, arr: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64)).to(self.comm_device)
        _dist().all_reduce(t)
        return t.cpu().numpy()

    def max_float(self, v: float) -> float:
        t = torch.tensor([float(v)], dtype=torch.float64, device=self.comm_device)
        _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
        return float(t[0])

    def all_same(self, value: str) -> bool:
        out: list[Any] = [None] * self.world
        _dist().all_gather_object(out, value)
        return all(v == out[0] for v in out)

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 and give its result (or raise its exception) on every rank."""
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # re-raised on every rank below
                box[0] = ("error", exc)
        _dist().broadcast_object_list(box, src=0, device=self.comm_device if self.comm_device.type == "cuda"
                                      else None)
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's (they already agree; this guarantees it)."""
        dist = _dist()
        for t in list(module.parameters()) + list(module.buffers()):
            with torch.no_grad():
                if t.device == self.comm_device or self.comm_device.type == "cuda":
                    dist.broadcast(t.data, src=0)
                else:
                    buf = t.data.to(self.comm_device)
                    dist.broadcast(buf, src=0)
                    t.data.copy_(buf)

    # -- DDP ---------------------------------------------------------------------------------------
    def wrap(self, net: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        import inspect

        ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers (BatchNorm running statistics) are kept equal by global_batch_stats: no broadcast per step
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})
        return DDP(net, device_ids=ids, output_device=ids[0] if ids else None, **no_sync)

    @contextlib.contextmanager
    def patched(self, net: nn.Module) -> Iterator[None]:
        """BatchNorm on the global batch's statistics and dropout drawn for the global batch, for the
        modules of ``net`` (restored on exit)."""
        done: list[nn.Module] = []
        per_rank: set[str] = set()
        try:
            for m in net.modules():
                if isinstance(m, _BN_TYPES):
                    m.forward = types.MethodType(_global_bn_forward, m)
                    done.append(m)
                elif type(m) in (nn.Dropout, *_FEATURE_DROPOUT):
                    m.forward = types.MethodType(_make_dropout_forward(self), m)
                    done.append(m)
                elif isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)):
                    per_rank.add(type(m).__name__)
            if per_rank:
                warnings.warn(f"the mask network's {', '.join(sorted(per_rank))} layers are not synchronized across "
                              "processes (each uses its own shard): the data-parallel fit will differ from a "
                              "single-process one by more than rounding", stacklevel=4)
            yield
        finally:
            for m in done:
                m.__dict__.pop("forward", None)


@contextlib.contextmanager
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[a, b)`` of ``n`` for ``rank`` of ``world``: contiguous, in rank order, sizes differ by at most 1."""
    return n * rank // world, n * (rank + 1) // world


def global_batch_stats(x: torch.Tensor, dims: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean and (biased) variance over ``dims`` of the samples of *every* rank, differentiable
    (all-reduced with autograd), and the global count. Computed in float64 (two passes)."""
    all_reduce = _AllReduceSum.apply
    xs = x.to(torch.float64)
    count = torch.tensor([float(x.numel() // max(1, x.shape[1]))], dtype=torch.float64, device=x.device)
    packed = all_reduce(torch.cat([xs.sum(dims), count]))
    n = float(packed[-1].detach())
    mean = packed[:-1] / max(n, 1.0)
    shape = [1] * x.ndim
    shape[1] = -1
    sq = all_reduce(((xs - mean.reshape(shape)) ** 2).sum(dims))
    return mean, sq / max(n, 1.0), n


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone(memory_format=torch.contiguous_format)
        _dist().all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone(memory_format=torch.contiguous_format)
        _dist().all_reduce(out)
        return out


def _global_bn_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm forward with the global batch's statistics (training); the module's own in eval."""
    if not self.training:  # evaluation: running statistics, nothing to share
        return type(self).forward(self, x)
    dims = [0] + list(range(2, x.ndim))
    mean, var, n = global_batch_stats(x, dims)
    shape = [1] * x.ndim
    shape[1] = -1
    y = ((x.to(torch.float64) - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + self.eps)).to(x.dtype)
    if self.weight is not None:
        y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
    if self.training and self.track_running_stats and self.running_mean is not None:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else float(self.momentum)
            unbiased = var * (n / max(n - 1.0, 1.0))
            self.running_mean.copy_(m * mean.to(self.running_mean.dtype) + (1 - m) * self.running_mean)
            self.running_var.copy_(m * unbiased.to(self.running_var.dtype) + (1 - m) * self.running_var)
    return y


def _make_dropout_forward(ctx: DistContext):
    def forward(self: nn.modules.dropout._DropoutNd, x: torch.Tensor) -> torch.Tensor:
        n, a, b = ctx._step
        need = _FEATURE_DROPOUT.get(type(self))
        if not self.training or self.p == 0 or x.shape[0] != b - a or (need is not None and x.ndim != need):
            return type(self).forward(self, x)
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        shape = (n,) + tuple(x.shape[1:]) if need is None else (n, x.shape[1]) + (1,) * (x.ndim - 2)
        # the single process draws this noise for the whole batch (aten's _dropout_impl); take our rows
        noise = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * noise[a:b]

    return forward


# ---- launching processes (trustmap locate --nproc N) ---------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(args: Sequence[str], nproc: int, *, capture: bool = False, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    """Start ``nproc`` processes on this machine with ``python -m torch.distributed.run`` (torchrun)
    on a free local port: ``args`` is what follows, e.g. ``['-m', 'trustmap.cli', 'locate', ...]``.
    ``capture=True`` collects the processes' stdout (stderr passes through)."""
    if isinstance(nproc, bool) or not isinstance(nproc, (int, np.integer)) or int(nproc) < 1:
        raise InputError("the number of processes must be an int >= 1", parameter="nproc", expected="an int >= 1",
                         got=nproc, fix="e.g. --nproc 2")
    if env_world() is not None:
        raise InputError("already running under torchrun", parameter="nproc", expected="--nproc in a plain shell",
                         got=f"RANK={os.environ.get('RANK')}", fix="drop --nproc when starting with torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", f"--nproc-per-node={int(nproc)}",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    e = dict(os.environ if env is None else env)
    e.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(cmd, env=e, stdout=subprocess.PIPE if capture else None, text=True, check=False)


def last_json(text: str) -> dict | None:
    """The last JSON object printed in ``text`` (rank 0's ``--json`` output), or None."""
    dec = json.JSONDecoder()
    found = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        i = text.find("{", end)
    return found
