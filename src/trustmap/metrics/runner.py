"""``run_evaluate_explanations``: score a folder of saved explanations (the CLI's
``trustmap evaluate --explanations DIR``).

Every ``*.npz`` in the folder that is a saved :class:`~trustmap.Attribution` (``trustmap explain``
writes ``<method>.npz``; ``trustmap locate`` writes ``masks.npz``) is scored on the data it was
made for. Files written to ``out_dir`` (atomically):

===================  ===========================================================================
``scores.json``      the table (values, intervals, paired comparisons, settings, per-sample values)
``scores.md``        the same as a markdown table
``curves.png``       mean deletion / insertion curves per method (when computed and matplotlib is there)
===================  ===========================================================================
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _io
from ..attribution import Attribution
from ..errors import MissingFileError

__all__ = ["run_evaluate_explanations", "load_explanations", "curves_png"]


def load_explanations(explanations_dir: str | os.PathLike) -> dict[str, Attribution]:
    """The Attributions saved in a folder, by name (the file's stem; a localizer's ``masks`` is
    named by its method, ``trust``). Other ``.npz`` files are skipped."""
    d = Path(explanations_dir)
    if not d.is_dir():
        raise MissingFileError("explanations folder not found", parameter="explanations_dir",
                               expected="a folder with <method>.npz files (trustmap explain --out DIR)", got=str(d),
                               fix="check the path, or run trustmap explain first")
    out: dict[str, Attribution] = {}
    for p in sorted(d.glob("*.npz")):
        record = p.with_suffix(".json")
        if not record.exists():
            continue
        try:
            fmt = _io.read_json(record).get("format")
        except Exception:  # an unreadable record: not ours
            continue
        if fmt != "trustmap.attribution/1":
            continue
        a = Attribution.load(p)
        name = a.method if p.stem == "masks" else p.stem
        if name in out:
            name = p.stem
        out[name] = a
    if not out:
        raise MissingFileError("no saved explanations in the folder", parameter="explanations_dir",
                               expected="<method>.npz files with their .json records", got=str(d),
                               fix="run trustmap explain --out DIR (or Attribution.save) first")
    return out


def run_evaluate_explanations(model, data, explanations_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                              metrics: Sequence[str] | str | None = None, *, split: str = "test",
                              layout: str | None = None, mask=None, frac: float = 0.3, baseline: Any = "zero",
                              normalize: str | None = None, steps: int | str = "auto", r2_tau: float | None = None,
                              n_boot: int = 2000, level: float = 0.95, n_perm: int = 10000, alpha: float = 0.05,
                              seed: int = 0, safe_mode: bool = True, plots: bool = True) -> dict[str, Any]:
    """Score every saved explanation in ``explanations_dir`` and write the table to ``out_dir``.

    Parameters
    ----------
    model : Model, torch.nn.Module, keras.Model or path
        Anything :func:`trustmap.load_model` accepts.
    data : str, path, Dataset or (X, y)
        A built-in dataset name (its ``split``), a data file, a Dataset or an ``(X, y)`` pair: the
        inputs that were explained (the explanations may cover its first samples only; their data
        fingerprints are checked).
    explanations_dir : path
        Folder of saved Attributions (``trustmap explain --out DIR``).
    out_dir : path, optional
        Where ``scores.json``, ``scores.md`` (and ``curves.png``) go; ``None`` writes nothing.
    metrics : str or sequence of str, optional
        Names (list or comma-separated); default as :func:`evaluate_explanations` (localization
        metrics join when the data carry a ground-truth region, e.g. the synthetic datasets).
    split : str, default 'test'
        The split of a built-in dataset.
    layout : str, optional
        Layout of the data when the shape is ambiguous.
    mask : array or path, optional
        A region mask (array or ``.npy`` file) overriding the data's own.
    frac, baseline, normalize, steps, r2_tau, n_boot, level, n_perm, alpha, seed
        See :func:`trustmap.metrics.evaluate_explanations`.
    safe_mode : bool, default True
        Passed to :func:`trustmap.load_model`.
    plots : bool, default True
        Write ``curves.png`` (with deletion or insertion, and an ``out_dir``).

    Returns
    -------
    dict
        ``scores`` (the :class:`ExplanationScores`), ``methods``, ``n`` (samples scored),
        ``files`` (paths written) and ``markdown``.

    Raises
    ------
    MissingFileError
        ``explanations_dir`` does not exist or holds no saved explanations, or the data file, a
        streamed result it names or the ``mask`` file does not exist.
    DataError
        The explanations cover different numbers of samples or more samples than ``data``, were
        made for other inputs, or the data file is unreadable.
    InputError
        An unknown metric, dataset name or setting out of range.
    ShapeError, LayoutError, TargetError
        The data or the maps do not fit the model.
    ModelLoadError
        ``model`` cannot be loaded (``UnsafeModelError`` when ``safe_mode`` refuses it).

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.metrics import run_evaluate_explanations
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 14, 2))
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> X = np.random.default_rng(0).random((20, 1, 16)).astype(np.float32)
    >>> d = tempfile.mkdtemp()
    >>> for m in ("saliency", "gradcam"):
    ...     _ = trustmap.explain(model, X, method=m).save(os.path.join(d, m + ".npz"))
    >>> res = run_evaluate_explanations(model, (X, model.predict(X)), d, None, ["average_drop", "deletion"],
    ...                                 n_boot=200, n_perm=200)
    >>> sorted(res["methods"]), res["n"], res["files"]
    (['gradcam', 'saliency'], 20, [])
    """
    from ..jobs.commands import score, select_explanations
    from ..jobs.data import open_data
    from ..models import load_model

    m = load_model(model, safe_mode=safe_mode)
    src = open_data(data, split=split, layout=layout)
    attrs, idx, X, y = select_explanations(Path(explanations_dir), src, 4096, None, seed)
    region = mask
    if isinstance(region, (str, os.PathLike)):
        p = Path(region)
        if not p.exists():
            raise MissingFileError("mask file not found", parameter="mask", expected="an .npy file", got=str(p),
                                   fix="check the path")
        region = np.load(p, allow_pickle=False)
    if region is None and src.mask is not None:
        region = src.mask
    if region is not None:
        region = np.asarray(region)[: len(idx)] if len(np.asarray(region)) >= len(idx) else region
    res = score(m, X, y, attrs, out_dir, metrics, mask=region, frac=frac, steps=steps, r2_tau=r2_tau,
                layout=src.layout, baseline=baseline, normalize=normalize, n_boot=n_boot, level=level,
                n_perm=n_perm, alpha=alpha, seed=seed, plots=plots)
    return {**res, "files": [str(f) for f in res["files"]]}


def curves_png(scores, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - optional
        warnings.warn("matplotlib is not installed; curves.png not written", stacklevel=3)
        return None
    kinds = [k for k in ("deletion", "insertion") if k in scores.metrics]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for meth in scores.methods:
            r = scores.results[meth][kind]
            ax.plot(r.extras["fractions"], r.extras["mean_curve"], label=f"{meth} (AUC {r.value:.3f})")
        ax.set_xlabel(f"fraction {'removed' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("target score")
        ax.set_title(kind)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with _io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
