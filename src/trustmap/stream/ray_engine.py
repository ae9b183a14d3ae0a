"""Explain a data file on Ray: a pool of long-lived actors that load the model once and are reused
across methods, blocks of rows and calls; the driver writes the results in order.

The work is the one :func:`~trustmap.stream.stream_explain` does, through the same loop
(:func:`trustmap.jobs.engine.fill`) and the same sinks; only the scheduling differs:

* **A pool of workers kept warm.** Each actor imports torch and loads the model once. The pool is
  cached in this Python process, keyed by the model's fingerprint (and the CPUs/GPUs per worker),
  so a second :func:`ray_explain` of the same model (other methods, other data) starts no process
  and loads nothing. A different model replaces the pool. :func:`shutdown_ray_pool` ends it (and
  the local Ray it started), as does the end of the process; ``keep_pool=False`` ends it after
  the call (the CLI does so).
* **Workers read their rows themselves** from the data file, by range (a memory-mapped ``.npy``,
  Parquet row groups, ...), keeping it open between blocks; the driver sends only row ranges
  and targets, and receives maps.
* **Blocks sized by cost.** The driver times each method on a few rows (while the actors start)
  and cuts the rows into blocks of about ``BLOCK_SECONDS`` of work, at least ``BLOCKS_PER_WORKER``
  per worker, so cheap methods go in large blocks (little per-task overhead) and expensive ones in
  small blocks (balanced workers); each worker has ``IN_FLIGHT`` blocks queued, so it never waits.
* **Results written by the driver in row order**, chunk by chunk, into the streamed Parquet sink:
  the output, its records and the resume ledger are those of ``stream_explain(format='parquet')``,
  and an interrupted Ray run resumes where it stopped (also as a streamed run, and back).

Methods that draw random numbers seed them per sample from the sample's own bytes, so the maps equal
those of the single-process path whatever the block sizes and the number of workers.

When Ray pays (:func:`choose_engine`, ``--engine auto``): estimated work = rows x the measured cost
per row; Ray with W workers (those that fit on the CPUs) saves about work x (1 - 1/W) and costs its
fixed start-up (Ray, the actors' imports and model loads: ``RAY_START_S``; ``WARM_START_S`` with a
warm pool of this model). Ray is chosen only if it is installed and the saving exceeds
``PAYS_MARGIN`` x the fixed cost.

Where things must be reachable
    Each worker reads its rows from the data file itself, so the data file and a model file must be
    visible **at the same path** from every node: true on one machine, or on shared storage for a
    multi-node cluster. trustmap must be installed on every node, with the same Ray version as here.
    A model object (rather than a file) is sent to the workers through Ray's object store. The
    output folder is written by the driver only.

Output (the layout of the streamed Parquet sink, readable by :func:`~trustmap.stream.read_maps`)
    ``OUT/METHOD.parquet/`` (a folder of part files, one per chunk: columns ``index``, ``target``,
    ``map``), ``OUT/METHOD.json`` (how the maps were made; ``engine: ray``) and ``OUT/run.json``.
    The folder is ``METHOD.parquet.partial`` (with ``METHOD.progress.json``) until every chunk is in.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, DependencyError, InputError, TrustmapError, UnsupportedError
from ..jobs.data import see_first_row
from ..jobs.engine import DEFAULT_CHUNK_ROWS, FileSink, check_chunk_rows, fill
from ..jobs.record import model_desc, new_record, write_record
from ..jobs.targets import check_target_range, parse_target, target_key, targets_for
from .sinks import open_sink
from .sources import Source, open_source

__all__ = ["ray_explain", "shutdown_ray_pool", "choose_engine", "measure_cost", "INSTALL_RAY", "RAY_START_S",
           "WARM_START_S", "BLOCK_SECONDS", "PAYS_MARGIN"]

INSTALL_RAY = "pip install 'trustmap[scale]'"

#: seconds of work per block a worker is handed (the driver's estimate from the measured cost per row)
BLOCK_SECONDS = 1.0
#: the fewest rows in a block: smaller model batches cost more per row (LIME: 1.4x at 64 rows against 512)
MIN_BLOCK_ROWS = 64
#: at least this many blocks per worker, so that the last blocks balance the workers
BLOCKS_PER_WORKER = 4
#: blocks queued on each worker: the next one starts as soon as one ends
IN_FLIGHT = 2
#: fixed cost of a Ray run without a warm pool (start a local Ray, start the actors, import torch, load
#: the model), seconds; measured by benchmarks/bench_ray.py on the 2-core machine (4-6 s)
RAY_START_S = 5.0
#: fixed cost with a warm pool of the same model (tasks submitted, results fetched), seconds
WARM_START_S = 0.3
#: Ray is chosen when its estimated saving exceeds this many times its fixed cost
PAYS_MARGIN = 1.25
#: the largest block of maps a worker returns at once (bytes)
_BLOCK_BYTES = 64 << 20


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise DependencyError("Ray is not installed", parameter="engine", expected="ray>=2.10",
                              got=str(exc), fix=INSTALL_RAY) from None
    return ray


def _ray_installed() -> bool:
    import importlib.util

    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    return importlib.util.find_spec("ray") is not None


def _check_count(value, parameter: str, *, whole: bool, minimum: float, inclusive: bool, example: str):
    ok_type = (int, np.integer) if whole else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(float(value)) \
            or (float(value) < minimum if inclusive else float(value) <= minimum):
        kind = "a whole number" if whole else "a number"
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise InputError(f"{parameter} must be {kind} {bound}", parameter=parameter,
                         expected=f"{'an int' if whole else 'a number'} {bound}", got=value, fix=f"pass e.g. {example}")
    return int(value) if whole else float(value)


class _Worker:
    """One worker of the pool: loads the model once, then explains blocks of rows it reads itself."""

    def __init__(self, **kwargs) -> None:
        from ..errors import TrustmapError

        try:
            self._setup(**kwargs)
        except TrustmapError as exc:  # Ray passes on only the text of an error: encode it (rebuilt in the driver)
            raise _encode_error(exc) from None

    def _setup(self, *, model_file, model_ref, safe_mode, device, threads) -> None:
        import ray
        import torch

        from ..models import load_model

        if threads:
            torch.set_num_threads(int(threads))
        obj = model_file if model_file is not None else ray.get(model_ref[0])
        model = load_model(obj, safe_mode=safe_mode)
        if device != "cpu":
            model = _to_device(model, device)
        self.model = model
        self.sources: dict[str, Source] = {}
        self.explainers: dict[str, dict] = {}
        self.info_ = {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                      "device": str(getattr(model, "device", "cpu"))}

    def info(self) -> dict:
        """Where this worker runs, and the CPU seconds it has used so far (``cpu_s``)."""
        return {**self.info_, "cpu_s": time.process_time()}

    def explain(self, data: dict, start: int, stop: int, methods: list[str], params: dict, targets):
        from ..errors import TrustmapError

        try:
            return self._explain(data, start, stop, methods, params, targets)
        except TrustmapError as exc:
            raise _encode_error(exc) from None

    def _explain(self, data, start, stop, methods, params, targets):
        from ..jobs.params import make_explainers

        key = json.dumps(data, sort_keys=True)
        src = self.sources.get(key)
        if src is None:  # opened once per file and kept: later blocks read by range
            for old in self.sources.values():
                old.close()
            self.sources = {key: open_source(data["path"], layout=data["layout"], label=data["label"],
                                             key=data["key"])}
            src = self.sources[key]
        pkey = json.dumps([methods, params], sort_keys=True, default=str)
        if pkey not in self.explainers:
            self.explainers[pkey] = make_explainers(methods, params)
        explainers = self.explainers[pkey]
        x, _ = src.read(start, stop)
        out = {}
        for name in methods:
            attr = explainers[name].explain(self.model, x, target=targets, layout=src.layout)
            out[name] = (np.ascontiguousarray(attr.maps, dtype=np.float32), np.asarray(attr.targets, np.int64))
        return out


def _to_device(model, device: str):
    """The worker's own model on ``device`` (the worker holds a copy; the caller's object is untouched)."""
    import torch

    from ..models import KerasModel, TorchModel

    if not torch.cuda.is_available():
        raise DependencyError("the Ray worker sees no CUDA device", parameter="num_gpus_per_worker",
                              expected="a CUDA build of torch and a GPU on the worker's node",
                              got=f"torch {torch.__version__} without CUDA",
                              fix="pass num_gpus_per_worker=0 (CPU workers), or install a CUDA torch on the nodes")
    if isinstance(model, TorchModel):
        model._body.to(device)  # this worker's copy (loaded from the file, or unpickled from the object store)
        model._device = torch.device(device)
    elif isinstance(model, KerasModel):
        pass  # Keras on the torch backend places its variables on the visible GPU itself
    else:
        raise UnsupportedError("this model runs on CPU only", parameter="num_gpus_per_worker",
                               expected="a torch or Keras model", got=model.framework, fix="pass num_gpus_per_worker=0")
    return model


class _Pool:
    """The actors of one model, on one Ray session."""

    def __init__(self, ray, key: tuple, node: str, cpus: float, gpus: float, init: dict) -> None:
        self.ray, self.key, self.node, self.cpus, self.gpus, self.init = ray, key, node, cpus, gpus, init
        self.actors: list = []
        self.infos: list = []
        self.cls = ray.remote(_Worker)

    def grow(self, n: int) -> int:
        """At least ``n`` actors (starting, not waited for); returns how many were started."""
        new = 0
        while len(self.actors) < n:
            a = self.cls.options(num_cpus=self.cpus, num_gpus=self.gpus or 0).remote(**self.init)
            self.actors.append(a)
            self.infos.append(a.info.remote())
            new += 1
        return new

    def ready(self, n: int) -> list[dict]:
        with _worker_errors():
            return self.ray.get(self.infos[:n])

    def kill(self, wait_s: float = 30.0) -> None:
        """Kill the actors and wait (up to ``wait_s``) until Ray reports each one dead: ``ray.kill``
        only sends the order, and a task sent just after it may still run."""
        ray = self.ray
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)
        deadline = time.monotonic() + wait_s
        for a in self.actors:
            while time.monotonic() < deadline:
                try:
                    ray.get(a.info.remote(), timeout=max(0.1, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - RayActorError once it is dead (or a timeout: give up)
                    break
                time.sleep(0.05)
        self.actors, self.infos = [], []


#: this process's pool and whether this module started (or connected) the Ray it runs on
_STATE: dict[str, Any] = {"pool": None, "owns_ray": False, "atexit": False}


def _node_id(ray) -> str:
    return str(ray.get_runtime_context().get_node_id())


def _live_pool(ray):
    """The cached pool if it is on the Ray session running now (else it is forgotten)."""
    pool = _STATE["pool"]
    if pool is not None and not (ray.is_initialized() and pool.node == _node_id(ray)):
        _STATE["pool"] = None
        pool = None
    return pool


def _drop_pool() -> None:
    """Kill the cached pool's actors (the Ray session is left as it is)."""
    ray = sys.modules.get("ray")
    pool = _STATE["pool"]
    _STATE["pool"] = None
    if pool is not None and ray is not None and ray.is_initialized() and pool.node == _node_id(ray):
        pool.kill()


def shutdown_ray_pool() -> None:
    """End the cached pool of Ray workers; stop the local Ray (or leave the cluster) if :func:`ray_explain`
    started it. A Ray the caller had started stays as it was. Called at the end of the process.

    Does nothing when no pool is held (e.g. Ray was never used in this process).

    Returns
    -------
    None

    Examples
    --------
    >>> from trustmap.stream import shutdown_ray_pool
    >>> shutdown_ray_pool()  # no pool held here: nothing to end
    """
    ray = sys.modules.get("ray")
    _drop_pool()
    if ray is None:
        return
    if _STATE["owns_ray"]:
        _STATE["owns_ray"] = False
        if ray.is_initialized():
            ray.shutdown()


def _ensure_ray(ray, address, num_cpus: int) -> str:
    """Ray as found (already initialized: used as is), a local Ray started here, or a connection to a cluster."""
    if ray.is_initialized():
        if not _STATE["owns_ray"]:
            return "existing" if address is None else "cluster"
        return _STATE.get("kind", "local")
    _STATE["pool"] = None
    if address is None:
        # workers at the driver's priority (Ray's default niceness, 15, lets any other process on the
        # machine starve the pool that is doing the user's job)
        ray.init(num_cpus=max(num_cpus, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
                 _system_config={"worker_niceness": 0})
        kind = "local"
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise InputError("cannot connect to the Ray cluster", parameter="address",
                             expected="'auto', 'host:port' of a running head node, or 'ray://host:10001'",
                             got=f"{address!r} ({type(exc).__name__}: {first})",
                             fix="start the cluster (`ray start --head`), or drop address to start a local Ray"
                             ) from None
        kind = "cluster"
    _STATE["owns_ray"], _STATE["kind"] = True, kind
    if not _STATE["atexit"]:
        atexit.register(shutdown_ray_pool)
        _STATE["atexit"] = True
    return kind


def _get_pool(ray, key: tuple, n: int, cpus: float, gpus: float, ship) -> tuple[_Pool, int]:
    """The pool of this model with at least ``n`` actors (another model's pool is ended first)."""
    pool = _live_pool(ray)
    if pool is not None and pool.key != key:
        pool.kill()
        pool = None
    if pool is None:
        model_file, model_ref = ship()
        pool = _Pool(ray, key, _node_id(ray), cpus, gpus,
                     dict(model_file=model_file, model_ref=model_ref, safe_mode=key[1],
                          device="cuda" if gpus else "cpu", threads=0 if gpus else max(1, int(cpus))))
        _STATE["pool"] = pool
        if not _STATE["atexit"]:
            atexit.register(shutdown_ray_pool)
            _STATE["atexit"] = True
    return pool, pool.grow(n)


def _check_room(ray, kind: str, num_workers: int, cpus: float, gpus: float) -> None:
    """Refuse (local Ray) or warn (a cluster, which may autoscale) when the pool cannot be placed."""
    have = ray.cluster_resources()
    fits = [int(have.get("CPU", 0) // cpus) if cpus else num_workers]
    if gpus:
        fits.append(int(have.get("GPU", 0) // gpus))
    room = min(fits)
    if room >= num_workers:
        return
    what = (f"the Ray cluster has room for {room} worker(s) of {cpus:g} CPU" + (f" + {gpus:g} GPU" if gpus else "")
            + f" (it has {have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU)")
    if kind != "cluster":  # a Ray on this machine cannot grow: a pool that does not fit would wait forever
        short_gpu = bool(gpus) and int(have.get("GPU", 0) // gpus) < num_workers
        raise InputError(what, parameter="num_gpus_per_worker" if short_gpu else "num_workers",
                         expected=f"{num_workers} workers", got=room,
                         fix="pass num_gpus_per_worker=0 for CPU workers, or fewer workers (CLI: --workers)")
    warnings.warn(what + f"; {num_workers} were asked for: the run waits until they can start "
                  "(or until the cluster scales up)", stacklevel=3)


#: how a worker's trustmap error crosses Ray (which keeps only the text of an exception raised in user code)
_MARK = "trustmap-worker-error:"


class _WorkerError(Exception):
    """A trustmap error raised in a worker, carried as text to the driver (see :func:`_user_error`)."""


def _encode_error(exc) -> _WorkerError:
    payload = {"cls": type(exc).__name__, "what": exc.what, "parameter": exc.parameter, "expected": exc.expected,
               "got": None if exc.got is None else str(exc.got), "fix": exc.fix}
    return _WorkerError(_MARK + json.dumps(payload) + "\n")


def _user_error(exc: BaseException):
    """The trustmap error a worker raised, rebuilt from Ray's wrapper (None if there is none)."""
    from .. import errors

    text = str(exc)
    at = text.find(_MARK)
    if at < 0:
        return None
    try:
        payload = json.JSONDecoder().raw_decode(text[at + len(_MARK):])[0]
    except ValueError:
        return None
    cls = getattr(errors, str(payload.pop("cls", "")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.TrustmapError)):
        cls = errors.TrustmapError
    return cls(payload.pop("what", "a Ray worker failed"), **{k: payload.get(k) for k in
                                                             ("parameter", "expected", "got", "fix")})


def _ship_model(ray, model, m) -> tuple[str | None, list | None]:
    """A model file travels as its absolute path (each worker loads it); a model object through the object store."""
    if isinstance(model, (str, os.PathLike)):
        return os.path.abspath(os.fspath(model)), None
    try:
        return None, [ray.put(m)]
    except Exception as exc:  # noqa: BLE001 - any pickling failure
        raise InputError("this model object cannot be sent to Ray workers", parameter="model",
                         expected="a picklable model, or a model file", got=f"{type(exc).__name__}: {exc}",
                         fix="pass the model file (.safetensors, .keras, .onnx) instead of the object") from None


def measure_cost(m, src, explainers: dict, target=None, *, budget_s: float = 0.1,
                 max_rows: int = 1024) -> dict[str, float]:
    """Seconds per row of each explainer on this model, timed in this process on the file's first rows
    (batches of 16, 64, ... rows until one takes ``budget_s`` or ``max_rows`` rows, after a warm-up call
    of 2 rows, which is the measure when it alone takes ``budget_s``).

    Parameters
    ----------
    m : Model
        The loaded model.
    src : Source
        The open data file (:func:`~trustmap.stream.open_source`); its first rows are explained.
    explainers : dict
        ``{name: explainer}``, each with an ``explain(model, X, target=, layout=)`` method.
    target : int, array of int or None, optional
        Targets of the rows (an array covers the file's rows); ``None``: the predicted class.
    budget_s : float, default 0.1
        A timing stops growing its batch once one call takes this long.
    max_rows : int, default 1024
        The most rows timed in one call.

    Returns
    -------
    dict
        ``{name: seconds per row}``.

    Raises
    ------
    DataError
        The rows cannot be read from the file.
    TargetError
        A target is not a class of the model.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.explain import get_explainer
    >>> from trustmap.stream import open_source
    >>> from trustmap.stream.ray_engine import measure_cost
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.random.default_rng(0).random((8, 1, 16)).astype(np.float32))
    >>> src = open_source(path)
    >>> cost = measure_cost(model, src, {"saliency": get_explainer("saliency")})
    >>> src.close()
    >>> sorted(cost), cost["saliency"] > 0
    (['saliency'], True)
    """
    k_max = int(min(max_rows, src.n))
    x, y = src.read(0, k_max)
    tgt = targets_for(target, y, 0, k_max, src.n) if not isinstance(target, np.ndarray) else target[:k_max]
    cost = {}
    for name, ex in explainers.items():
        def run(k):
            t = tgt if tgt is None or np.ndim(tgt) == 0 else tgt[:k]
            t0 = time.perf_counter()
            ex.explain(m, x[:k], target=t, layout=src.layout)
            return time.perf_counter() - t0

        k = min(2, k_max)
        dt = run(k)  # warm-up (lazy set-up, first calls); enough when two rows already take the budget
        if dt >= budget_s:
            cost[name] = dt / k
            continue
        k = min(16, k_max)
        while True:
            dt = run(k)
            if dt >= budget_s or k >= k_max:
                break
            k = min(k_max, k * 4)
        cost[name] = max(dt, 1e-9) / k
    return cost


def _fmt_s(sec: float) -> str:
    return f"{sec:.2g} s" if sec < 10 else f"{sec:,.0f} s"


def _decide(cost: dict[str, float], rows: int, workers: int, fixed: float, installed: bool,
            why_not: str | None = None) -> dict[str, Any]:
    per_row = float(sum(cost.values()))
    work = rows * per_row
    saving = work * (1 - 1 / workers) if workers >= 1 else 0.0
    pays = installed and why_not is None and workers >= 2 and saving > PAYS_MARGIN * fixed
    rule = (f"Ray if installed and rows x cost per row x (1 - 1/W) > {PAYS_MARGIN:g} x Ray's fixed cost "
            f"(W = workers that fit on the CPUs)")
    facts = (f"{rows:,} rows x {per_row * 1e6:,.1f} us/row = {_fmt_s(work)} of work; W = {workers}: Ray would save "
             f"~{_fmt_s(saving)} against ~{_fmt_s(fixed)} fixed cost")
    if not installed:
        reason = "Ray is not installed"
    elif why_not:
        reason = why_not
    else:
        reason = "it pays" if pays else "it does not pay"
    engine = "ray" if pays else "local"
    line = f"engine auto -> {'Ray' if pays else 'in-process'} ({reason})" + ("" if why_not else f": {facts}") \
        + f"; rule: {rule}"
    return {"engine": engine, "reason": reason, "rule": rule, "rows": int(rows),
            "cost_per_row_s": {k: float(v) for k, v in cost.items()}, "work_s": float(work),
            "workers": int(workers), "ray_fixed_s": float(fixed), "ray_saving_s": float(saving),
            "ray_installed": bool(installed), "line": line}


def _usable_workers(num_workers: int, cpus: float, address=None) -> int:
    """Workers that run at once: those asked for, at most the CPUs of the Ray running here (or of this
    machine; a cluster not yet joined is taken to have room for them)."""
    have = os.cpu_count() or 1
    ray = sys.modules.get("ray")
    running = ray is not None and getattr(ray, "is_initialized", lambda: False)()
    if address is not None and not running:
        return int(num_workers)
    if running:
        with contextlib.suppress(Exception):
            have = int(ray.cluster_resources().get("CPU", have))
    return max(1, min(int(num_workers), int(have // cpus) if cpus else int(num_workers)))


def choose_engine(model, data, methods: str | Sequence[str], *, target=None,
                  params: dict[str, dict[str, Any]] | None = None, num_workers: int = 2,
                  num_cpus_per_worker: float = 1, address: str | None = None, layout=None, label=None, key=None,
                  labels=None, safe_mode: bool = True, m=None) -> dict[str, Any]:
    """In-process or Ray for explaining every row of ``data`` with ``methods``, and why.

    The cost per row of each method is timed here on the file's first rows (:func:`measure_cost`);
    estimated work = rows x the summed cost. Ray with W workers (those asked for that fit on the
    CPUs) would save about work x (1 - 1/W) and costs its fixed start-up: :data:`RAY_START_S`, or
    :data:`WARM_START_S` when this process holds a warm pool of this model. Ray is chosen only if
    it is installed and the saving exceeds :data:`PAYS_MARGIN` x the fixed cost.

    Returns ``engine`` (``'ray'`` or ``'local'``), ``reason``, ``rule``, the figures behind it
    (``rows``, ``cost_per_row_s``, ``work_s``, ``workers``, ``ray_fixed_s``, ``ray_saving_s``) and
    ``line`` (one line saying all that, as ``--engine auto`` prints it on stderr).

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts (a module whose class count shows only on data
        learns it from the file's first row).
    data : path, Source or array
        A data file :func:`~trustmap.stream.open_source` streams, or an open
        :class:`~trustmap.stream.Source`; anything else gets ``'local'`` (Ray workers read a file).
    methods : str or sequence of str
        Method names (a comma-separated string or a list).
    target : int, 'label', array or None, optional
        As for :func:`~trustmap.stream.stream_explain`; the timing explains these targets.
    params : dict, optional
        ``{method: {parameter: value}}``.
    num_workers : int, default 2
        Ray workers asked for; those that fit on the CPUs count.
    num_cpus_per_worker : float, default 1
        CPUs per worker.
    address : str, optional
        A Ray cluster's address: its workers are not limited by this machine's CPUs.
    layout, label, key, labels
        How the data file is read, as for :func:`~trustmap.stream.open_source`.
    safe_mode : bool, default True
        Passed to :func:`trustmap.load_model`.
    m : Model, optional
        ``model`` already loaded (then ``model`` is not loaded again).

    Returns
    -------
    dict
        ``engine``, ``reason``, ``rule``, ``rows``, ``cost_per_row_s``, ``work_s``, ``workers``,
        ``ray_fixed_s``, ``ray_saving_s``, ``ray_installed`` and ``line``.

    Raises
    ------
    InputError
        An unknown method or parameter, a ``num_workers`` or ``num_cpus_per_worker`` out of
        range, or a bad ``target``.
    TargetError, LabelError
        ``target`` out of range, or ``'label'`` without labels.
    MissingFileError
        The data file (or labels file) does not exist.
    DataError
        The file is unreadable, empty, not numeric, or its labels do not match.
    ShapeError, LayoutError
        The samples do not fit the model (or ``layout``).
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import choose_engine
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.random.default_rng(0).random((8, 1, 16)).astype(np.float32))
    >>> c = choose_engine(model, path, "saliency")
    >>> c["engine"], c["rows"], c["reason"]  # 8 rows: Ray's start-up would not pay
    ('local', 8, 'it does not pay')
    >>> choose_engine(model, np.zeros((2, 1, 16)), "saliency")["engine"]  # an array, not a file
    'local'
    """
    from ..jobs.params import make_explainers
    from ..models import load_model

    from .sources import STREAM_FORMATS

    explainers = make_explainers(methods, params)
    num_workers = _check_count(num_workers, "num_workers", whole=True, minimum=1, inclusive=True,
                               example="num_workers=2")
    cpus = _check_count(num_cpus_per_worker, "num_cpus_per_worker", whole=False, minimum=0, inclusive=False,
                        example="num_cpus_per_worker=1")
    if not isinstance(data, Source) and not (isinstance(data, (str, os.PathLike))
                                             and Path(data).suffix.lower() in STREAM_FORMATS):
        return _decide({}, 0, 1, RAY_START_S, _ray_installed(),
                       why_not="Ray workers read a data file (" + ", ".join(STREAM_FORMATS) + "); this data is not one")
    m = m if m is not None else load_model(model, safe_mode=safe_mode)
    src = data if isinstance(data, Source) else open_source(data, layout=layout, label=label, key=key,
                                                            labels=labels)
    try:
        target = parse_target(target)
        see_first_row(m, src)
        check_target_range(target, src.y, src.n, m.n_classes)
        if isinstance(target, str):
            target = np.asarray(src.y, dtype=np.int64)
        cost = measure_cost(m, src, explainers, target)
        rows = src.n
    finally:
        if not isinstance(data, Source):
            src.close()
    installed = _ray_installed()
    ray = sys.modules.get("ray")
    warm = False
    if installed and ray is not None and _STATE["pool"] is not None and ray.is_initialized():
        pool = _live_pool(ray)
        warm = pool is not None and pool.key[0] == m.fingerprint() and len(pool.actors) >= 1
    fixed = WARM_START_S if warm else RAY_START_S
    return _decide(cost, rows, _usable_workers(num_workers, cpus, address), fixed, installed)


class _Result:
    """One chunk's maps and targets, as a sink takes them."""

    __slots__ = ("maps", "targets")

    def __init__(self, maps, targets) -> None:
        self.maps, self.targets = maps, targets

    def __len__(self) -> int:
        return len(self.maps)


def _cut(work, block_rows: int) -> list[tuple[int, int, list[str]]]:
    """Blocks of about ``block_rows`` rows over runs of consecutive chunks that need the same methods."""
    runs: list[list] = []
    for _, a, b, names in work:
        if runs and runs[-1][1] == a and runs[-1][2] == names:
            runs[-1][1] = b
        else:
            runs.append([a, b, list(names)])
    blocks = []
    for a, b, names in runs:
        k = max(1, math.ceil((b - a) / block_rows))
        edges = np.linspace(a, b, k + 1).round().astype(np.int64)
        blocks += [(int(e0), int(e1), names) for e0, e1 in zip(edges[:-1], edges[1:]) if e1 > e0]
    return blocks


def block_rows_for(cost_per_row: float, rows: int, workers: int, row_bytes: int, n_methods: int,
                   chunk_rows: int) -> int:
    """Rows per block: about ``BLOCK_SECONDS`` of work, at least ``BLOCKS_PER_WORKER`` blocks per worker,
    at most ``_BLOCK_BYTES`` of maps, at least ``MIN_BLOCK_ROWS`` rows."""
    by_time = BLOCK_SECONDS / max(cost_per_row, 1e-9)
    by_balance = math.ceil(rows / (BLOCKS_PER_WORKER * max(1, workers)))
    by_memory = _BLOCK_BYTES / max(1, row_bytes * max(1, n_methods))
    return int(max(MIN_BLOCK_ROWS, min(by_time, by_balance, by_memory, max(rows, 1))))


def _schedule_on(ray, actors, data: dict, params: dict, targets, block_rows: int, stats: dict):
    """The scheduling hook of :func:`fill`: blocks to the actors (``IN_FLIGHT`` queued on each, the least
    loaded first), results gathered back into chunks and handed on in chunk order."""

    def schedule(work):
        blocks = _cut(work, block_rows)
        stats["blocks"] = len(blocks)
        stats["block_rows"] = int(block_rows)
        load = [0] * len(actors)
        inflight: dict = {}
        results: dict[int, dict] = {}
        nxt = emit = wi = 0
        buf: list = []  # (start, stop, {name: (maps, targets)}) in row order, not yet handed on
        try:
            while wi < len(work):
                while nxt < len(blocks) and min(load) < IN_FLIGHT:
                    i = load.index(min(load))
                    a, b, names = blocks[nxt]
                    t = targets if targets is None or np.ndim(targets) == 0 else np.asarray(targets[a:b])
                    ref = actors[i].explain.remote(data, a, b, names, {k: params[k] for k in names if k in params}, t)
                    inflight[ref] = (nxt, i)
                    load[i] += 1
                    nxt += 1
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    j, i = inflight.pop(ref)
                    load[i] -= 1
                    with _worker_errors():
                        results[j] = ray.get(ref)
                while emit in results:
                    a, b, _ = blocks[emit]
                    buf.append((a, b, results.pop(emit)))
                    emit += 1
                while wi < len(work) and buf and buf[-1][1] >= work[wi][2]:
                    c, ca, cb, names = work[wi]
                    yield c, _take(buf, ca, cb)
                    wi += 1
        finally:
            for ref in inflight:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    return schedule


def _take(buf: list, ca: int, cb: int) -> dict[str, _Result]:
    """Rows ``ca:cb`` out of the front of ``buf`` (removed from it), per method."""
    parts: dict[str, list] = {}
    while ca < cb:
        a, b, res = buf[0]
        if a != ca:
            raise DataError("Ray blocks arrived out of order", parameter="chunk_rows", expected=f"row {ca}",
                            got=f"row {a}", fix="report this as a bug")
        e = min(b, cb)
        for k, (mp, tg) in res.items():
            parts.setdefault(k, []).append((mp[: e - a], tg[: e - a]))
        if e == b:
            buf.pop(0)
        else:
            buf[0] = (e, b, {k: (mp[e - a:], tg[e - a:]) for k, (mp, tg) in res.items()})
        ca = e
    return {k: _Result(np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v]))
            for k, v in parts.items()}


def ray_explain(model, data, methods: str | Sequence[str], out_dir, *, target=None,
                params: dict[str, dict[str, Any]] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                layout=None, label=None, key=None, labels=None, address: str | None = None, num_workers: int = 2,
                num_gpus_per_worker: float = 0, num_cpus_per_worker: float = 1, overwrite: bool = False,
                resume: bool = True, progress: bool = True, safe_mode: bool = True, keep_pool: bool = True,
                engine_choice: dict | None = None) -> dict[str, Any]:
    """Explain every sample of a data file with ``methods`` on a pool of Ray actors.

    Parameters
    ----------
    model
        A model file (each worker loads it; preferred) or object (sent through Ray's object store).
    data
        A data file :func:`~trustmap.stream.open_source` streams (``.npy``, ``.parquet``, ``.h5``,
        ``.csv``) or an open :class:`~trustmap.stream.Source`; workers reopen it by its path.
    methods, target, params, chunk_rows, layout, label, key, labels
        As for :func:`~trustmap.stream.stream_explain`; the maps equal its maps. ``chunk_rows`` is
        the unit of the output's parts and of resuming; the workers' blocks are sized by cost.
    address
        ``None``: start a local Ray (as many CPUs as this machine, at least the pool's) kept for
        later calls (see ``keep_pool``). ``'auto'``, ``'host:port'`` or ``'ray://host:10001'``:
        connect to a running cluster. If Ray is already initialized in this process it is used as
        is and left running.
    num_workers
        Actors in the pool, each holding one copy of the model.
    num_gpus_per_worker
        GPUs per actor (fractions share a GPU); > 0 runs the model on CUDA inside the actors.
    num_cpus_per_worker
        CPUs per actor (also its torch thread count, for CPU workers).
    overwrite, resume
        As for :func:`~trustmap.stream.stream_explain`: a finished result from the same settings is
        kept (its method skipped), an unfinished one resumed, any other refused unless ``overwrite``.
    progress
        A progress bar on stderr.
    keep_pool
        Keep the workers (and the local Ray started for them) for the next call with this model:
        it then starts no process and loads nothing. :func:`shutdown_ray_pool` ends them (so does
        the end of the process). ``False``: end them before returning (the CLI's choice).
    engine_choice
        What ``--engine auto`` decided (:func:`choose_engine`), recorded in ``run.json``.

    Returns
    -------
    dict
        ``files`` (method -> ``METHOD.parquet`` folder), ``computed``/``skipped`` (chunks per
        method), ``n``, ``seconds`` and ``samples_per_s`` (the Ray work, without starting Ray),
        ``workers``, ``model_loads`` (models loaded on the workers by this call: one per new actor,
        none with a warm pool), ``pool_reused``, ``blocks`` and ``block_rows``.

    Raises
    ------
    DependencyError
        Ray is not installed, or a GPU worker sees no CUDA device.
    InputError
        An unknown method, parameter or ``target``; ``chunk_rows``, ``num_workers``,
        ``num_cpus_per_worker`` or ``num_gpus_per_worker`` out of range; an ``address`` that is not
        a string; a cluster that cannot be reached or lacks the CPUs/GPUs asked for; a model object
        that cannot be sent to the workers.
    UnsupportedError
        GPU workers for a model that runs on CPU only.
    StreamConflictError
        ``out_dir`` holds a result made with other settings.
    TargetError, LabelError
        ``target`` out of range, or ``'label'`` without labels.
    MissingFileError
        The data file (or labels file) does not exist.
    DataError
        The file is unreadable, empty, not numeric, has NaN/Inf, or its labels do not match.
    ShapeError, LayoutError
        The samples do not fit the model (or ``layout``).
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap.stream import ray_explain, shutdown_ray_pool
    >>> np.save("x.npy", np.random.default_rng(0).random((1000, 1, 40)).astype(np.float32))  # doctest: +SKIP
    >>> res = ray_explain("model.pt", "x.npy", "gradcam,saliency", "maps", num_workers=2)  # doctest: +SKIP
    >>> res["files"]["gradcam"].name, res["n"]  # doctest: +SKIP
    ('gradcam.parquet', 1000)
    >>> shutdown_ray_pool()  # doctest: +SKIP
    """
    from ..jobs.params import make_explainers, method_names
    from ..models import load_model

    names = method_names(methods)
    params = dict(params or {})
    explainers = make_explainers(names, params)
    chunk_rows = check_chunk_rows(chunk_rows)
    num_workers = _check_count(num_workers, "num_workers", whole=True, minimum=1, inclusive=True,
                               example="num_workers=2")
    gpus = _check_count(num_gpus_per_worker, "num_gpus_per_worker", whole=False, minimum=0, inclusive=True,
                        example="num_gpus_per_worker=1 (or 0 for CPU workers)")
    cpus = _check_count(num_cpus_per_worker, "num_cpus_per_worker", whole=False, minimum=0, inclusive=False,
                        example="num_cpus_per_worker=1")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise InputError("address must be a Ray address", parameter="address",
                         expected="None (local Ray), 'auto', 'host:port' or 'ray://host:port'", got=address,
                         fix="pass address='auto' to join the cluster this machine belongs to")
    ray = _import_ray()
    m = load_model(model, safe_mode=safe_mode)
    if gpus and m.framework not in ("torch", "keras"):
        raise UnsupportedError("this model runs on CPU only", parameter="num_gpus_per_worker",
                               expected="a torch or Keras model for GPU workers", got=m.framework,
                               fix="pass num_gpus_per_worker=0")
    src = open_source(data, layout=layout, label=label, key=key, labels=labels)
    out = Path(out_dir)
    stats: dict[str, Any] = {"blocks": 0, "block_rows": 0}
    loads, devices, kind, pool_n, reused, seconds = 0, [], None, 0, False, 0.0
    try:
        if src.n == 0:
            raise DataError("the data file holds no samples", parameter="data", expected="at least one row",
                            got=str(src.path), fix="pass a file with samples")
        target = parse_target(target)
        see_first_row(m, src)
        check_target_range(target, src.y, src.n, m.n_classes)  # checked here rather than in every worker
        targets = np.asarray(src.y, dtype=np.int64) if isinstance(target, str) else target
        n, sample_shape = src.n, src.sample_shape
        data_desc = {**src.describe(), "fingerprint": src.fingerprint()}
        base = {"model": m.fingerprint(), "data": src.fingerprint(), "layout": src.layout,
                "target": target_key(target)}
        sinks = {k: FileSink(open_sink("parquet", out, k, n, sample_shape, {**base, "method": k, "params": ex.params},
                                       chunk_rows, resume=resume, overwrite=overwrite))
                 for k, ex in explainers.items()}
        todo = [k for k in names if len(sinks[k].done) < len(src.chunks(chunk_rows))]
        rows_todo = sum(b - a for c, (a, b) in enumerate(src.chunks(chunk_rows))
                        if any(c not in sinks[k].done for k in todo))
        pool_n = min(num_workers, max(1, math.ceil(rows_todo / MIN_BLOCK_ROWS)))  # an actor without rows: only a load
        if todo:
            kind = _ensure_ray(ray, address, max(1, math.ceil(pool_n * cpus)))
            _check_room(ray, kind, pool_n, cpus, gpus)
            fp = base["model"]
            had = _live_pool(ray)
            reused = had is not None and had.key == (fp, bool(safe_mode), cpus, gpus) and len(had.actors) >= pool_n
            pool, loads = _get_pool(ray, (fp, bool(safe_mode), cpus, gpus), pool_n, cpus, gpus,
                                    lambda: _ship_model(ray, model, m))
            # the actors start in the background; meanwhile the cost per row sizes the blocks
            cost = measure_cost(m, src, {k: explainers[k] for k in todo}, targets)
            row_bytes = 4 * int(np.prod(sample_shape))
            brows = block_rows_for(sum(cost.values()), rows_todo, pool_n, row_bytes, len(todo), chunk_rows)
            stats["cost_per_row_s"] = cost
            devices = sorted({str(i.get("device")) for i in pool.ready(pool_n)})
            data_arg = {"path": str(src.path.resolve()), "layout": src.layout, "label": label, "key": key,
                        "fingerprint": src.fingerprint()}
            t0 = time.perf_counter()
            try:
                st = fill(src, {k: None for k in todo}, {k: sinks[k] for k in todo}, chunk_rows,
                          progress=progress, desc=f"explain (Ray, {pool_n} workers)",
                          schedule=_schedule_on(ray, pool.actors[:pool_n], data_arg, params, targets, brows, stats))
            except TrustmapError:
                raise  # the user's error (bad data, a bad target): the pool is fine
            except BaseException:
                _drop_pool()  # a worker died, or an interrupt left tasks running: start afresh next time
                raise
            seconds = time.perf_counter() - t0
        files = {}
        desc = model_desc(model, m)
        for k, ex in explainers.items():
            files[k] = Path(sinks[k].finish({
                "kind": "attribution", "method": k, "params": ex.params, "layout": src.layout, "model": desc,
                "data": data_desc, "target": target_key(target), "chunk_rows": chunk_rows, "engine": "ray",
                "workers": pool_n, "ray": ray.__version__}))
        n_chunks = len(src.chunks(chunk_rows))
        computed = {k: (st["computed"][k] if todo and k in todo else 0) for k in names}
        skipped = {k: n_chunks - computed[k] for k in names}
        rec = new_record("explain", model=model, m=m, src=src, engine="ray", methods=names,
                         params={k: v.params for k, v in explainers.items()}, target=target_key(target),
                         stream={"chunk_rows": chunk_rows, "format": "parquet", "computed": computed,
                                 "skipped": skipped},
                         ray={"address": address, "session": kind, "workers": pool_n, "cpus_per_worker": cpus,
                              "gpus_per_worker": gpus, "model_loads": loads, "pool_reused": reused,
                              "devices": devices, "seconds": seconds, "blocks": stats["blocks"],
                              "block_rows": stats["block_rows"],
                              "cost_per_row_s": stats.get("cost_per_row_s", {})},
                         maps={k: Path(v).name for k, v in files.items()})
        if engine_choice is not None:
            rec["engine_choice"] = {k: v for k, v in engine_choice.items() if k != "line"}
        rec["versions"]["ray"] = ray.__version__
        write_record(out, rec)
    finally:
        if not isinstance(data, Source):
            src.close()
        if not keep_pool:
            shutdown_ray_pool()
    rows = n if todo else 0
    return {"files": files, "computed": computed, "skipped": skipped, "n": n, "seconds": seconds,
            "samples_per_s": rows / seconds if seconds > 0 and rows else None, "workers": pool_n,
            "model_loads": loads, "pool_reused": reused, "blocks": stats["blocks"], "block_rows": stats["block_rows"],
            "engine": "ray", "record": rec}


@contextlib.contextmanager
def _worker_errors():
    """A trustmap error raised in a worker (a bad target, a layer the model lacks) re-raised as itself."""
    try:
        yield
    except Exception as exc:
        err = _user_error(exc)
        if err is None:
            raise
        raise err from None


