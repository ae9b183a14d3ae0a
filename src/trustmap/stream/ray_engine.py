"""Explain a data file on Ray: Ray Data ``map_batches`` over the file's chunks, a pool of actors
that each load the model once, results written as Parquet.

The work is the one :func:`~trustmap.stream.stream_explain` does, cut the same way: the dataset is
one row per chunk of ``chunk_rows`` rows (``chunk``, ``start``, ``stop``); each actor of the pool
loads the model and opens the data file once, then explains the chunks Ray hands it. Methods that
draw random numbers seed them per sample within a chunk, so with the same ``chunk_rows`` the maps
equal those of the single-process path, whatever the number of workers.

Where things must be reachable
    Each worker reads its chunks from the data file itself and Ray's writers write the Parquet
    parts into the output folder, so the data file, the model file and the output folder must
    be visible **at the same path** from every node: true on one machine, or on shared storage
    (NFS, a mounted bucket) for a multi-node cluster. trustmap must be installed on every node,
    with the same Ray version as here. A model object (rather than a file) is sent to the workers
    through Ray's object store.

Output (the layout the streamed Parquet sink writes, readable by :func:`~trustmap.stream.read_maps`)
    ``OUT/METHOD.parquet/`` (a folder of part files: columns ``index``, ``target``, ``map``),
    ``OUT/METHOD.json`` (how the maps were made; ``engine: ray``) and ``OUT/run.json``. Ray writes
    into a hidden temporary folder inside ``OUT``; each method's folder gets its final name only
    when the whole dataset is written, so a final folder is never half-written. A Ray run is not
    resumed chunk by chunk: an interrupted run starts again (its temporary folder is discarded).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..errors import DataError, DependencyError, InputError, RunDirError, UnsupportedError
from ..jobs.engine import DEFAULT_CHUNK_ROWS, check_chunk_rows
from ..jobs.record import model_desc, new_record, write_record
from ..jobs.targets import check_target_range, parse_target, target_key
from .sinks import _FORMAT, StreamConflictError, _fsync_dir, _read_record, maps_table
from .sources import Source, open_source

__all__ = ["ray_explain", "INSTALL_RAY"]

INSTALL_RAY = "pip install 'trustmap[scale]'"

#: the column that carries the method name between the actors and the writer (a Hive partition;
#: it is not stored in the part files)
_METHOD_COL = "method"


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks its dependencies)
    except ImportError as exc:
        raise DependencyError("Ray Data is not installed", parameter="engine", expected="ray[data]>=2.10",
                              got=str(exc), fix=INSTALL_RAY) from None
    return ray


def _check_count(value, parameter: str, *, whole: bool, minimum: float, inclusive: bool, example: str):
    ok_type = (int, np.integer) if whole else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(float(value)) \
            or (float(value) < minimum if inclusive else float(value) <= minimum):
        kind = "a whole number" if whole else "a number"
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise InputError(f"{parameter} must be {kind} {bound}", parameter=parameter,
                         expected=f"{'an int' if whole else 'a number'} {bound}", got=value, fix=f"pass e.g. {example}")
    return int(value) if whole else float(value)


class _ExplainActor:
    """One worker of the pool: loads the model and opens the data file once, then explains chunks."""

    def __init__(self, **kwargs) -> None:
        from ..errors import TrustmapError

        try:
            self._setup(**kwargs)
        except TrustmapError as exc:  # Ray passes on only the text of an error: encode it (rebuilt in the driver)
            raise _encode_error(exc) from None

    def _setup(self, *, model_file, model_ref, safe_mode, data_path, layout, label, key, methods, params,
               targets, device, threads, loads_dir) -> None:
        import ray
        import torch

        from ..jobs.params import make_explainers
        from ..models import load_model

        if threads:
            torch.set_num_threads(int(threads))
        obj = model_file if model_file is not None else ray.get(model_ref[0])
        model = load_model(obj, safe_mode=safe_mode)
        if device != "cpu":
            model = _to_device(model, device)
        self.model = model
        self.src = open_source(data_path, layout=layout, label=label, key=key)
        self.explainers = make_explainers(methods, params)
        self.targets = ray.get(targets[0]) if isinstance(targets, list) else targets
        # one marker file per model load: how the driver counts loads (one per actor, not per batch)
        marker = Path(loads_dir) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                                      "device": str(getattr(model, "device", "cpu"))}))

    def __call__(self, batch: dict[str, np.ndarray]):
        from ..errors import TrustmapError

        try:
            return self._explain(batch)
        except TrustmapError as exc:  # Ray passes on only the text of an error: encode it (rebuilt in the driver)
            raise _encode_error(exc) from None

    def _explain(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        tables = []
        for a, b in zip(batch["start"], batch["stop"]):
            a, b = int(a), int(b)
            x, _ = self.src.read(a, b)
            if self.targets is None or np.ndim(self.targets) == 0:
                tgt = self.targets
            else:
                tgt = self.targets[a:b]
            index = np.arange(a, b, dtype=np.int64)
            for name, ex in self.explainers.items():
                attr = ex.explain(self.model, x, target=tgt, layout=self.src.layout)
                t = maps_table(index, attr.targets, attr.maps)
                tables.append(t.append_column(_METHOD_COL, pa.array([name] * len(t), type=pa.string())))
        return pa.concat_tables(tables)


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


@contextlib.contextmanager
def _ray_session(ray, address, num_cpus: int):
    """Ray as found (already initialized: used as is), a local Ray started and shut down here
    (``address=None``), or a connection to an existing cluster (left running)."""
    if ray.is_initialized():
        yield "existing" if address is None else "cluster"
        return
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
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
    try:
        yield kind
    finally:
        ray.shutdown()  # stops the local Ray; only disconnects from a cluster


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


def ray_explain(model, data, methods: str | Sequence[str], out_dir, *, target=None,
                params: dict[str, dict[str, Any]] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                layout=None, label=None, key=None, labels=None, address: str | None = None, num_workers: int = 2,
                num_gpus_per_worker: float = 0, num_cpus_per_worker: float = 1, overwrite: bool = False,
                progress: bool = True, safe_mode: bool = True) -> dict[str, Any]:
    """Explain every sample of a data file with ``methods`` on a pool of Ray actors.

    Parameters
    ----------
    model
        A model file (each worker loads it; preferred) or object (sent through Ray's object store).
    data
        A data file :func:`~trustmap.stream.open_source` streams (``.npy``, ``.parquet``, ``.h5``,
        ``.csv``) or an open :class:`~trustmap.stream.Source`; workers reopen it by its path.
    methods, target, params, chunk_rows, layout, label, key, labels
        As for :func:`~trustmap.stream.stream_explain`; the same ``chunk_rows`` gives the same maps.
    address
        ``None``: start a local Ray with ``num_workers * num_cpus_per_worker`` CPUs and shut it down
        afterwards. ``'auto'``, ``'host:port'`` or ``'ray://host:10001'``: connect to a running
        cluster (left running). If Ray is already initialized in this process it is used as is.
    num_workers
        Actors in the pool, each holding one copy of the model.
    num_gpus_per_worker
        GPUs per actor (fractions share a GPU); > 0 runs the model on CUDA inside the actors.
    num_cpus_per_worker
        CPUs per actor (also its torch thread count, for CPU workers).
    overwrite
        Replace results of these methods already in ``out_dir``. Without it a finished result from
        the same settings is kept (its method is skipped) and any other one is refused.
    progress
        Ray Data's progress bars on stderr.

    Returns
    -------
    dict
        ``files`` (method -> ``METHOD.parquet`` folder), ``computed``/``skipped`` (chunks per
        method), ``n``, ``seconds`` and ``samples_per_s`` (the Ray work, without starting Ray),
        ``workers`` and ``model_loads`` (model loads on the workers: one per actor).
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
    try:
        if src.n == 0:
            raise DataError("the data file holds no samples", parameter="data", expected="at least one row",
                            got=str(src.path), fix="pass a file with samples")
        target = parse_target(target)
        check_target_range(target, src.y, src.n, m.n_classes)  # checked here rather than in every worker
        if isinstance(target, str):  # 'label'
            targets = np.asarray(src.y, dtype=np.int64)
        else:
            targets = target
        data_desc, n, sample_shape, src_layout = src.describe(), src.n, src.sample_shape, src.layout
        src_labeled, src_classes = src.y is not None, list(src.classes)
        data_desc["fingerprint"] = src.fingerprint()
        data_path = str(src.path.resolve())
        base_run = {"model": m.fingerprint(), "data": src.fingerprint(), "layout": src_layout,
                    "target": target_key(target)}
    finally:
        if not isinstance(data, Source):
            src.close()
    chunks = [(a, min(a + chunk_rows, n)) for a in range(0, n, chunk_rows)]
    pool = min(num_workers, len(chunks))  # an actor without a chunk would only load the model
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # what is already there: the same finished result is kept, anything else refused (or removed)
    runs, todo, files = {}, [], {}
    for name, ex in explainers.items():
        runs[name] = _io.to_jsonable({**base_run, "method": name, "params": ex.params, "n": n,
                                      "sample_shape": list(sample_shape), "chunk_rows": chunk_rows,
                                      "format": "parquet"})  # what the streamed Parquet sink records
        final, rec_path = out / f"{name}.parquet", out / f"{name}.json"
        others = [out / f"{name}.parquet.partial", out / f"{name}.progress.json"]
        if overwrite:
            for p in (final, rec_path, *others):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        rec = _read_record(rec_path)
        if final.exists() and rec is not None and rec.get("run") == runs[name]:
            files[name] = final
            continue
        clash = [p for p in (final, *others) if p.exists()]
        if clash:
            raise StreamConflictError("the output already holds a result of this method made differently, or an "
                                      "unfinished streamed run", parameter="out",
                                      expected=f"no {name}.parquet, or one from the same run", got=str(clash[0]),
                                      fix="pass a new output folder, or overwrite=True (CLI: --overwrite)")
        todo.append(name)

    computed = {name: (len(chunks) if name in todo else 0) for name in names}
    skipped = {name: (0 if name in todo else len(chunks)) for name in names}
    seconds, loads, devices, kind = 0.0, 0, [], None
    if todo:
        tmp = out / f".ray-{uuid.uuid4().hex[:12]}.partial"
        loads_dir = tmp / "_loads"
        loads_dir.mkdir(parents=True)
        try:
            with _ray_session(ray, address, max(1, math.ceil(pool * cpus))) as kind:
                _check_room(ray, kind, pool, cpus, gpus)
                model_file, model_ref = _ship_model(ray, model, m)
                targets_arg = [ray.put(targets)] if isinstance(targets, np.ndarray) else targets
                t0 = time.perf_counter()
                with _quiet_ray_data(ray, progress), _worker_errors():
                    _run_dataset(ray, chunks, pool, cpus, gpus, str(tmp.resolve()), dict(
                        model_file=model_file, model_ref=model_ref, safe_mode=safe_mode, data_path=data_path,
                        layout=src_layout, label=label, key=key, methods=todo,
                        params={k: params[k] for k in todo if k in params}, targets=targets_arg,
                        device="cuda" if gpus else "cpu", threads=0 if gpus else max(1, int(cpus)),
                        loads_dir=str(loads_dir.resolve())))
                seconds = time.perf_counter() - t0
            markers = [json.loads(f.read_text()) for f in loads_dir.glob("*.json")]
            loads, devices = len(markers), sorted({str(mk.get("device")) for mk in markers})
            for name in todo:
                part = tmp / f"{_METHOD_COL}={name}"
                if not part.is_dir():
                    raise RunDirError("the Ray workers' Parquet parts are not in the output folder",
                                      parameter="out_dir", expected=str(part), got="missing",
                                      fix="out_dir must be on storage every Ray node sees at the same path")
            for name in todo:  # every part is in: give each method's folder its final name
                final = out / f"{name}.parquet"
                os.replace(tmp / f"{_METHOD_COL}={name}", final)
                files[name] = final
            _fsync_dir(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        desc = model_desc(model, m)
        for name in todo:
            ex = explainers[name]
            _io.write_json(out / f"{name}.json", {
                "format": _FORMAT, "storage": "parquet", "name": name, "file": f"{name}.parquet",
                "shape": [n, *sample_shape], "run": runs[name], "kind": "attribution", "method": name,
                "params": ex.params, "layout": src_layout, "model": desc, "data": data_desc,
                "target": target_key(target), "chunk_rows": chunk_rows, "engine": "ray", "workers": pool,
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": {**_io.versions(), "ray": ray.__version__}})
    files = {name: files[name] for name in names}
    rows = n if todo else 0
    rec = new_record("explain", model=model, m=m, engine="ray", methods=names,
                     params={k: v.params for k, v in explainers.items()}, target=target_key(target),
                     data=data_desc, n=n, labels={"source": "data" if labels is None and src_labeled else
                                                  ("file" if labels is not None else "none")},
                     classes=list(src_classes),
                     stream={"chunk_rows": chunk_rows, "format": "parquet", "computed": computed, "skipped": skipped},
                     ray={"address": address, "session": kind, "workers": pool, "cpus_per_worker": cpus,
                          "gpus_per_worker": gpus, "model_loads": loads, "devices": devices, "seconds": seconds},
                     maps={k: Path(v).name for k, v in files.items()})
    rec["versions"]["ray"] = ray.__version__
    write_record(out, rec)
    return {"files": files, "computed": computed, "skipped": skipped, "n": n, "seconds": seconds,
            "samples_per_s": rows / seconds if seconds > 0 and rows else None, "workers": pool,
            "model_loads": loads, "engine": "ray"}


def _run_dataset(ray, chunks, num_workers: int, cpus: float, gpus: float, tmp: str, actor_kwargs: dict) -> None:
    """One Ray Data pipeline: chunk descriptors -> actor pool -> Parquet parts partitioned by method."""
    import inspect

    items = [{"chunk": c, "start": a, "stop": b} for c, (a, b) in enumerate(chunks)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))  # a block per chunk: any worker can take it
    ds = ds.map_batches(_ExplainActor, batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=num_workers), fn_constructor_kwargs=actor_kwargs,
                        num_cpus=cpus, num_gpus=gpus or None)
    # the writers take no CPU slot: with every CPU held by an actor, CPU-bound writers would wait for the
    # pool to finish and every result would pile up in the object store until then
    accepted = inspect.signature(ds.write_parquet).parameters
    extra = {"concurrency": max(1, min(num_workers, 8))} if "concurrency" in accepted else {}
    ds.write_parquet(tmp, partition_cols=[_METHOD_COL], ray_remote_args={"num_cpus": 0}, **extra)


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


@contextlib.contextmanager
def _quiet_ray_data(ray, progress: bool):
    """Ray Data's progress bars and INFO logs only when progress is wanted; restored afterwards."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    logger = logging.getLogger("ray.data")
    level = logger.level
    ctx.enable_progress_bars = bool(progress)
    if not progress:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ctx.enable_progress_bars = before
        logger.setLevel(level)
