"""The one result type every explainer returns."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from .errors import DataError, RunDirError
from .layout import Layout

__all__ = ["Attribution"]

_FORMAT = "trustmap.attribution/1"


@dataclass
class Attribution:
    """Maps shaped like the input (in the caller's layout) plus how they were made.

    Attributes
    ----------
    maps : ndarray
        One map per input, same shape and layout as the input the explainer got.
    targets : ndarray of int, shape (N,)
        The class each map explains (resolved: never ``None``).
    method : str
        Registry name of the method.
    params : dict
        The method's parameters (JSON-serialisable).
    layout : str
        Layout name of ``maps`` (see :mod:`trustmap.layout`).
    extras : dict
        Method-specific results: arrays or numbers (e.g. a convergence delta, an R²).
    provenance : dict
        Model and data fingerprints, library versions, seed, creation time.

    Every explainer returns one (:func:`trustmap.explain`), and so does
    :meth:`Localizer.locate <trustmap.Localizer.locate>`. ``att[i]`` or ``att[a:b]`` selects samples,
    ``len(att)`` counts them.

    Examples
    --------
    >>> att = trustmap.explain(model, X, method="saliency")
    >>> att.maps.shape == X.shape
    True
    >>> att.save("runs/saliency.npz")              # saliency.npz + saliency.json, no pickle
    >>> same = trustmap.Attribution.load("runs/saliency.npz")
    >>> fig = att.plot(X, index=0)                 # a matplotlib Figure
    """

    maps: np.ndarray
    targets: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    layout: str = "NCL"
    extras: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.maps = np.asarray(self.maps)
        self.targets = np.asarray(self.targets, dtype=np.int64).reshape(-1)
        Layout(self.layout)  # validates the name
        if self.maps.shape[0] != self.targets.shape[0]:
            raise DataError(
                "maps and targets disagree on the number of samples",
                parameter="targets",
                expected=f"{self.maps.shape[0]} targets",
                got=self.targets.shape[0],
                fix="pass one target per map",
            )

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def __getitem__(self, index) -> "Attribution":
        """A subset of samples, keeping per-sample extras aligned."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        n = len(self)
        extras = {
            k: (v[idx] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in self.extras.items()
        }
        prov = dict(self.provenance)
        if "data_sha256" in prov:  # the fingerprint is of the whole batch, not of this subset
            prov["subset_of_data_sha256"] = prov.pop("data_sha256")
        return Attribution(self.maps[idx], self.targets[idx], self.method, dict(self.params),
                           self.layout, extras, prov)

    def internal(self) -> np.ndarray:
        """The maps as ``(N, C, *spatial)``."""
        return Layout(self.layout).to_internal(self.maps)

    # ---- persistence: NPZ (arrays) + JSON (everything else); no pickle -------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.npz``) and its JSON record ``path.json`` beside it, atomically.

        Parameters
        ----------
        path : str or path
            The ``.npz`` file (the suffix is added when missing).

        Returns
        -------
        Path
            The ``.npz`` path written.

        Raises
        ------
        RunDirError
            A parent of ``path`` is a file, not a folder.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        from .records import check_output_path

        check_output_path(path)  # a typed error, not an OSError, when a parent is a file
        arrays = {"maps": self.maps, "targets": self.targets}
        scalars: dict[str, Any] = {}
        for k, v in self.extras.items():
            if isinstance(v, np.ndarray):
                if v.dtype == object:
                    raise DataError("object arrays cannot be saved", parameter=f"extras[{k!r}]",
                                    expected="a numeric array", got=v.dtype,
                                    fix="convert the extra to numbers or a list")
                arrays[f"extra__{k}"] = v
            else:
                scalars[k] = v
        record = {
            "format": _FORMAT,
            "method": self.method,
            "params": self.params,
            "layout": self.layout,
            "extras": scalars,
            "maps_sha256": _io.fingerprint_array(self.maps),
            "shape": list(self.maps.shape),
            "provenance": {
                "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": _io.versions(),
                **self.provenance,
            },
        }
        with _io.atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        _io.write_json(_json_path(path), record)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Attribution":
        """Read an Attribution written by :meth:`save` (checks the maps against their record).

        Parameters
        ----------
        path : str or path
            The ``.npz`` file or its ``.json`` record.

        Returns
        -------
        Attribution

        Raises
        ------
        RunDirError, MissingFileError
            A missing, truncated or foreign file, or maps that do not match their record.
        """
        path = Path(path)
        if path.suffix == ".json":  # the record was named: its maps are beside it
            path = path.with_suffix(".npz")
        if not path.exists() and path.with_suffix(".npz").exists():
            path = path.with_suffix(".npz")
        jpath = _json_path(path)
        for p in (path, jpath):
            if not p.exists():
                raise RunDirError("attribution file is missing", parameter="path",
                                  expected="an .npz file with its .json record beside it", got=str(p),
                                  fix="save the attribution with Attribution.save(path)")
        from .records import read_record  # the JSON half of our safetensors/npz + JSON records

        record = read_record(jpath, _FORMAT, ("method", "maps_sha256"), parameter="path", error=RunDirError,
                             what="attribution")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # corrupt file: name it
            raise RunDirError(f"attribution file is corrupt ({type(exc).__name__}: {exc})",
                              parameter="path", got=str(path),
                              fix="re-run the explainer to write the file again") from exc
        if "maps" not in arrays:
            raise RunDirError("not a trustmap attribution file", parameter="path", got=str(path),
                              expected=_FORMAT, fix="pass a file written by Attribution.save")
        if _io.fingerprint_array(arrays["maps"]) != record.get("maps_sha256"):
            raise RunDirError("maps do not match their JSON record (file changed or corrupt)",
                              parameter="path", got=str(path), fix="re-run the explainer")
        extras = dict(record.get("extras", {}))
        extras.update({k[len("extra__"):]: v for k, v in arrays.items() if k.startswith("extra__")})
        return cls(arrays["maps"], arrays["targets"], record["method"], record.get("params", {}),
                   record.get("layout", "NCL"), extras, record.get("provenance", {}))

    def plot(self, x=None, **kwargs):
        """Plot the maps (behind ``x`` when given); returns a matplotlib Figure.

        ``kwargs`` go to :func:`trustmap.plot.plot_attribution` (``index``, ``channels``, ``cmap``,
        ``ax``, ``vmax``, ``alpha``, ``channel_names``, ``class_names``).
        """
        from .plot import plot_attribution

        return plot_attribution(self, x, **kwargs)


def _json_path(npz_path: Path) -> Path:
    return npz_path.with_suffix(".json")
