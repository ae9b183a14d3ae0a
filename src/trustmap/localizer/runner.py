"""``run_locate``: fit a localizer, locate, and write everything to a run directory (the CLI's job).

Files written to ``out_dir`` (atomically):

=========================  =====================================================================
``localizer.safetensors``  the mask network's weights (with ``localizer.json``: settings, τ path, R²)
``masks.npz``              the masks of every input as an :class:`~trustmap.Attribution` (+ ``masks.json``)
``r2_path.json``           target, chosen τ, held-out R² with interval, held-out and calibration paths
``r2_path.png`` ...        plots (``plots=True``): R² path, DA plot, path plot
``checkpoint/``            training state after every epoch; a rerun with ``resume=True`` continues
=========================  =====================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from ..errors import DataError, InputError

__all__ = ["run_locate", "load_arrays"]


def load_arrays(data, y=None) -> tuple[Any, Any]:
    """``(X, y)`` from a tuple, a dict with 'X'/'y', an ``.npz`` file with arrays ``X`` (or ``x``) and ``y``,
    or another data file :func:`trustmap.data.read` understands."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and y is None:
        return data[0], data[1]
    if isinstance(data, dict):
        X = data.get("X", data.get("x"))
        return X, data.get("y") if y is None else y
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise DataError("data file not found", parameter="data", expected="an existing .npz file", got=str(path),
                            fix="check the path")
        if path.suffix.lower() != ".npz":  # any format trustmap.data reads (csv, parquet, h5, ...)
            from ..data import read

            ds = read(path)
            return ds.X, (ds.y if y is None else y)
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            xk = "X" if "X" in keys else ("x" if "x" in keys else None)
            if xk is None or ("y" not in keys and y is None):
                raise DataError("the .npz file needs arrays 'X' and 'y'", parameter="data",
                                expected="keys X and y", got=sorted(keys), fix="np.savez(path, X=X, y=y)")
            return z[xk], (z["y"] if y is None else y)
    if y is None:
        raise InputError("labels are needed to fit the localizer", parameter="y", expected="an array of labels",
                         got=None, fix="pass y=..., or data=(X, y)")
    return data, y


def _parse_number(value: Any, parameter: str) -> Any:
    """'auto' stays; a numeric string (from the command line) becomes a float."""
    if isinstance(value, str) and value.strip().lower() != "auto":
        try:
            return float(value)
        except ValueError:
            raise InputError("not a number", parameter=parameter, expected="'auto' or a number", got=value,
                             fix=f"e.g. {parameter}=0.8") from None
    return "auto" if isinstance(value, str) else value


def _parse_taus(value: Any) -> Any:
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
               tau: Any = "auto", r_metric: str = "acc", mode: str = "trust", layout: str | None = None,
               epochs: int = 20, seed: int = 0, progress: bool = False, resume: bool = True, plots: bool = True,
               safe_mode: bool = True, **localizer_kwargs) -> dict[str, Any]:
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
    **localizer_kwargs : any other :class:`Localizer` parameter.

    Returns a dict: the output paths, ``tau``, ``target_r2``, ``r2`` (estimate, low, high), ``target_reached``.
    """
    from ..models import load_model
    from .fit import Localizer

    target_r2 = _parse_number(target_r2, "target_r2")
    tau = _parse_taus(tau)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = load_model(model, safe_mode=safe_mode) if isinstance(model, (str, os.PathLike)) else load_model(model)
    X, yy = load_arrays(data, y)
    if isinstance(X_val, (str, os.PathLike)):
        X_val, y_val = load_arrays(X_val, y_val)
    loc = Localizer(tau=tau, target_r2=target_r2, r_metric=r_metric, mode=mode, layout=layout, epochs=epochs,
                    seed=seed, progress=progress, checkpoint=(out / "checkpoint") if resume else None,
                    **localizer_kwargs)
    loc.fit(m, X, yy, X_val, y_val)
    paths: dict[str, Any] = {}
    paths["localizer"] = str(loc.save(out / "localizer.safetensors"))
    att = loc.locate(X, y=yy)
    paths["masks"] = str(att.save(out / "masks.npz"))
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
    }
    paths["r2_path"] = str(_io.write_json(out / "r2_path.json", summary))
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:  # pragma: no cover - optional
            plots = False
    if plots:
        figs = {"r2_path.png": loc.plot_r2_path(), "da_plot.png": loc.da_plot(X, yy),
                "path_plot.png": loc.path_plot(X)}
        for name, fig in figs.items():
            with _io.atomic_path(out / name, suffix=".png") as tmp:
                fig.savefig(tmp, dpi=110, format="png")
            paths[name[:-4] + "_png"] = str(out / name)
    return {**paths, "out_dir": str(out), "tau": loc.tau_, "target_r2": loc.target_r2_,
            "target_reached": loc.target_reached_,
            "r2": {"estimate": loc.r2_.estimate, "low": loc.r2_.low, "high": loc.r2_.high}}
