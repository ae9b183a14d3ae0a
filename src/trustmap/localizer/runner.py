"""``run_locate``: fit a localizer, locate, and write everything to a run directory (the CLI's job).

Files written to ``out_dir`` (atomically):

=========================  =====================================================================
``localizer.safetensors``  the mask network's weights (with ``localizer.json``: settings, τ path, R²)
``masks.npz``              the masks of every input as an :class:`~trustmap.Attribution` (+ ``masks.json``)
``r2_path.json``           target, chosen τ, held-out R² with interval, held-out and calibration paths
``r2_path.png`` ...        plots (``plots=True``): R² path, DA plot, path plot
``checkpoint/``            training state after every epoch; a rerun with ``resume=True`` continues
=========================  =====================================================================

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) the localizer trains data-parallel: the process
group is initialized here when the caller has not done it (and destroyed at the end), every rank
fits on the full data, and only rank 0 writes the files (see :mod:`trustmap.localizer.distributed`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


from .. import _io
from ..errors import InputError

__all__ = ["run_locate", "load_arrays", "load_data", "sampling_rate", "fit_localizer", "localizer_key",
           "parse_number", "parse_taus"]


def sampling_rate(meta) -> float | None:
    """The sampling rate (Hz) a data source's metadata records (``sampling_rate_hz``, as the built-in
    ``ecg208`` and the Kaggle MIT-BIH files do), or None."""
    v = (meta or {}).get("sampling_rate_hz")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and v == v and v != float("inf") else None


def load_data(data, y=None) -> tuple[Any, Any, float | None]:
    """``(X, y or None, fs or None)`` from a tuple, a dict with 'X'/'y' (and optional 'fs'), a
    :class:`~trustmap.datasets.Dataset`, a data file or built-in dataset name (through
    :func:`trustmap.jobs.open_data`, the one data entry), or ``X`` with ``y=``. ``y`` is None when the
    data have no labels (the localizer then explains the model's predictions); ``fs`` is the sampling
    rate the data record (:func:`sampling_rate`), None when unknown."""
    from ..datasets import Dataset

    if isinstance(data, Dataset):
        return data.X, (data.y if y is None else y), sampling_rate(data.meta)
    if isinstance(data, (tuple, list)) and len(data) == 2 and y is None:
        return data[0], data[1], None
    if isinstance(data, dict):
        X = data.get("X", data.get("x"))
        return X, data.get("y") if y is None else y, sampling_rate({"sampling_rate_hz": data.get("fs")})
    if isinstance(data, (str, os.PathLike)):
        from ..jobs import open_data

        src = open_data(data)
        return src.X, (src.y if y is None else y), sampling_rate(getattr(src, "meta", None))
    return data, y, None


def load_arrays(data, y=None) -> tuple[Any, Any]:
    """``(X, y or None)`` of :func:`load_data` (without the sampling rate)."""
    X, yy, _ = load_data(data, y)
    return X, yy


def parse_number(value: Any, parameter: str) -> Any:
    """'auto' stays; a numeric string (from the command line) becomes a float."""
    if isinstance(value, str) and value.strip().lower() != "auto":
        try:
            return float(value)
        except ValueError:
            raise InputError("not a number", parameter=parameter, expected="'auto' or a number", got=value,
                             fix=f"e.g. {parameter}=0.8") from None
    return "auto" if isinstance(value, str) else value


def parse_taus(value: Any) -> Any:
    """'auto', a number, or comma-separated numbers ('2,4,8') from the command line."""
    if isinstance(value, str) and value.strip().lower() != "auto":
        try:
            vals = [float(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise InputError("tau must be 'auto', a number or comma-separated numbers", parameter="tau",
                             expected="e.g. 'auto', '10' or '2,4,8,16'", got=value, fix="pass tau='2,4,8,16'") from None
        return vals[0] if len(vals) == 1 else vals
    return "auto" if isinstance(value, str) else value


def run_locate(model, data, out_dir, *, y=None, X_val=None, y_val=None, target_r2: Any = "auto",
               tau: Any = "auto", r_metric: str = "auto", mode: str = "trust", layout: str | None = None,
               epochs: int = 20, seed: int = 0, progress: bool = False, resume: bool = True, plots: bool = True,
               safe_mode: bool = True, distributed: Any = "auto", device: Any = None, refine: int = 0,
               refine_budget: Any = None, **localizer_kwargs) -> dict[str, Any]:
    """Fit a :class:`~trustmap.localizer.Localizer` for ``model`` on ``data`` and write the run to ``out_dir``.

    Parameters
    ----------
    model : a model object or file (anything :func:`trustmap.load_model` takes).
    data : ``(X, y)``, a dict with 'X' and 'y', an ``.npz`` file with arrays ``X`` and ``y``, or ``X``
        with ``y=`` given.
    out_dir : directory for the files (created).
    target_r2, tau, r_metric, mode, layout, epochs, seed, progress : passed to the Localizer
        (strings from a command line are accepted: ``'auto'``, ``'0.8'``, ``'2,4,8'``).
    resume : keep a checkpoint in ``out_dir/checkpoint`` and continue from it when present.
    plots : also write PNG plots (needs matplotlib).
    distributed : 'auto' | bool
        Data-parallel training (see :class:`Localizer`). 'auto': when started by torchrun (or a process
        group is up). Every rank must call ``run_locate`` with the same arguments; rank 0 writes the files,
        every rank returns the same dict (after rank 0 has written them).
    device : None | 'cpu' | 'cuda'
        Where to put a torch model (None: where it is; a model file loads on the CPU). 'cuda' under
        torchrun means ``cuda:LOCAL_RANK`` (and the nccl backend).
    refine, refine_budget : per-sample refinement of the written masks (``Localizer.locate(refine=,
        refine_budget=)``): ``refine`` gradient steps per sample (0: the mask network's masks), at the
        budgets ``refine_budget`` (None: the objective's defaults). The fitted record and R² are unchanged.
    **localizer_kwargs : any other :class:`Localizer` parameter.

    Returns a dict: the output paths, ``tau``, ``target_r2``, ``r2`` (estimate, low, high), ``target_reached``,
    ``rank`` and ``world_size``.

    Examples
    --------
    A real fit trains the mask network for ``epochs`` passes, so this one is not run here:

    >>> import tempfile, numpy as np, torch, trustmap
    >>> from trustmap.localizer import run_locate
    >>> lin = torch.nn.Linear(6, 2)  # class 1 when positions 2 and 3 sum above 1
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[0.0] * 6, [0, 0, 5, 5, 0, 0]]))
    ...     _ = lin.bias.copy_(torch.tensor([0.0, -5.0]))
    >>> model = trustmap.load_model(torch.nn.Sequential(torch.nn.Flatten(), lin), input_shape=(1, 6))
    >>> X = np.random.RandomState(0).rand(64, 1, 6).astype(np.float32)
    >>> y = (X[:, 0, 2] + X[:, 0, 3] > 1).astype(int)
    >>> res = run_locate(model, (X, y), tempfile.mkdtemp(), tau=2, epochs=5)  # doctest: +SKIP
    >>> res["tau"], res["r2"]  # doctest: +SKIP
    """
    from . import distributed as _distributed

    from .refine import check_refine

    target_r2 = parse_number(target_r2, "target_r2")
    tau = parse_taus(tau)
    check_refine(refine, refine_budget, "remove")  # a typo fails before the fit, not after it
    with _distributed.session(distributed, device) as sess:
        res = _run_locate(sess, model, data, Path(out_dir), y, X_val, y_val, target_r2, tau, r_metric, mode, layout,
                          epochs, seed, progress, resume, plots, safe_mode, distributed, localizer_kwargs,
                          refine, refine_budget)
        sess.barrier()  # every rank returns once rank 0 has written the files
    return res


def _run_locate(sess, model, data, out: Path, y, X_val, y_val, target_r2, tau, r_metric, mode, layout, epochs, seed,
                progress, resume, plots, safe_mode, distributed, localizer_kwargs, refine=0,
                refine_budget=None) -> dict[str, Any]:
    from ..errors import UnsupportedError
    from ..models import Model, load_model

    opts = {} if sess.device is None else {"device": sess.device}
    if isinstance(model, Model):
        m = model
    elif isinstance(model, (str, os.PathLike)):
        m = load_model(model, safe_mode=safe_mode, **opts)
    else:
        m = load_model(model, **opts)
    if sess.device is not None and m.device != sess.device:
        raise UnsupportedError("the model cannot be moved to the requested device", parameter="device",
                               expected=f"a torch model (it would go to {sess.device})", got=f"a model on {m.device}",
                               fix="pass a torch model or model file, or leave device=None")
    if sess.is_main:
        out.mkdir(parents=True, exist_ok=True)
    X, yy, fs = load_data(data, y)
    if isinstance(X_val, (str, os.PathLike)):
        X_val, y_val = load_arrays(X_val, y_val)
    if localizer_kwargs.get("fs") is None:
        localizer_kwargs["fs"] = fs  # time axes in seconds when the data record their sampling rate
    loc, paths = fit_localizer(m, X, yy, out, X_val=X_val, y_val=y_val, tau=tau, target_r2=target_r2,
                               r_metric=r_metric, mode=mode, layout=layout, epochs=epochs, seed=seed,
                               progress=bool(progress) and sess.is_main, checkpoint=(out / "checkpoint") if resume
                               else None, distributed=distributed, plots=plots, write=sess.is_main,
                               **localizer_kwargs)
    done = {"rank": sess.rank, "world_size": sess.world_size, "out_dir": str(out), "tau": loc.tau_,
            "target_r2": loc.target_r2_, "target_reached": loc.target_reached_,
            "r2": {"estimate": loc.r2_.estimate, "low": loc.r2_.low, "high": loc.r2_.high}, "refine": int(refine)}
    paths["masks"] = str(out / "masks.npz")
    if not sess.is_main:  # rank 0 writes the files: the same paths, not written here
        return {**paths, **done}
    loc.locate(X, y=yy, refine=refine, refine_budget=refine_budget).save(out / "masks.npz")
    return {**paths, **done}


def fit_localizer(m, X, y, out: Path, *, X_val=None, y_val=None, plots: bool = True, write: bool = True,
                  val_accuracy: float | None = None, fs: float | None = None, **params) -> tuple[Any, dict[str, str]]:
    """Fit a :class:`Localizer` (``params``: its parameters) on ``X, y`` and write ``localizer.safetensors``
    (+ ``.json``), ``r2_path.json`` and the plots to ``out`` (when ``write``). ``fs``: the sampling rate
    (Hz), when known (time axes in seconds). Returns ``(localizer, paths)``."""
    from .fit import Localizer

    out = Path(out)
    loc = Localizer(**params)
    loc.fit(m, X, y, X_val, y_val, val_accuracy=val_accuracy, fs=fs)  # y=None: the model's predictions are the labels
    names = {"localizer": "localizer.safetensors", "r2_path": "r2_path.json"}
    if plots and _has_matplotlib():
        names.update(r2_path_png="r2_path.png", da_plot_png="da_plot.png", path_plot_png="path_plot.png")
    paths = {k: str(out / v) for k, v in names.items()}
    if not write:
        return loc, paths
    out.mkdir(parents=True, exist_ok=True)
    paths["localizer"] = str(loc.save(out / "localizer.safetensors"))
    summary = {
        "format": "trustmap.locate-run/1",
        "mode": loc.mode,
        "tau": loc.tau_,
        "target_r2": loc.target_r2_,
        "target_reached": loc.target_reached_,
        "r2": loc.r2_.to_dict(),
        "r2_path": loc.r2_path_.to_dict(),
        "calibration_path": loc.calibration_path_.to_dict(),
        "split": loc.split_,
        "settings": loc.settings_,
        "params": loc._json_params(),
        "labels": getattr(loc, "labels_source_", "labels" if y is not None else "predictions"),
        "fs": getattr(loc, "fs_", None),
        "tau_grid_extended": getattr(loc, "tau_grid_extended_", 0),
        "extension_tried": getattr(loc, "extension_tried_", None),
    }
    _io.write_json(out / "r2_path.json", summary)
    if plots and _has_matplotlib():
        import matplotlib.pyplot as plt

        from ..models import load_model

        y_plot = y if y is not None else load_model(m).predict(X, layout=params.get("layout"))  # da_plot needs labels
        figs = {"r2_path.png": loc.plot_r2_path, "da_plot.png": lambda: loc.da_plot(X, y_plot),
                "path_plot.png": lambda: loc.path_plot(X)}
        for name, make in figs.items():
            fig = make()
            with _io.atomic_path(out / name, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            plt.close(fig)
    return loc, paths


def localizer_key(loc) -> str:
    """A fingerprint of a fitted localizer's weights (so masks from another localizer are never mixed in)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(loc.net_.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # pragma: no cover - optional
        return False
    return True
