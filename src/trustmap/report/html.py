"""Build one self-contained HTML report from a run directory (see :mod:`trustmap.report`)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import _io
from ..errors import RunDirError
from ..explain.registry import methods_where
from ..jobs.record import RUN_FORMAT, RUN_FORMATS  # the one run-record schema

__all__ = ["build_report", "load_run", "Run", "RUN_FORMAT", "SYNTHESIS_METHODS"]

#: methods whose output is a synthesized input, not a map of the given input (shown, not scored)
SYNTHESIS_METHODS = tuple(methods_where(synthesizes_inputs=True))
_DPI = 90


# ---- loading ------------------------------------------------------------------------------------
@dataclass
class Run:
    """A run directory's contents, read and checked (by :func:`load_run`).

    Parameters
    ----------
    root : Path
        The run directory.
    manifest : dict
        Its ``run.json``.
    data, model_report, history, samples, attributions, scores, localizer
        What the run wrote, each ``None`` (or empty) when absent: the data description, the
        :class:`~trustmap.metrics.ModelReport`, the training history, ``samples.npz``, the
        Attributions by method, the scores and the localizer summary.
    images : dict of str to bytes
        PNG figures of the run.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain
    >>> from trustmap.report import load_run
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> _ = stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "run"), progress=False)
    >>> run = load_run(os.path.join(d, "run"))
    >>> run.root.name, run.model_report is None
    ('run', True)
    """

    root: Path
    manifest: dict[str, Any]
    data: dict[str, Any] | None = None
    model_report: Any = None
    history: Any = None
    samples: dict[str, np.ndarray] | None = None
    attributions: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] | None = None
    localizer: dict[str, Any] | None = None
    images: dict[str, bytes] = field(default_factory=dict)


def _rel(run: Path, key: str, manifest: dict) -> Path | None:
    files = manifest.get("files") or {}
    name = files.get(key)
    return None if name is None else run / name


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise RunDirError(f"the run directory is missing {path.name} ({what})", parameter="run_dir",
                          expected=f"the file {path}", got="no such file",
                          fix="re-run `trustmap demo` (or the step that writes it) for this run directory")
    return path


def _corrupt(path: Path, exc: BaseException, what: str) -> RunDirError:
    return RunDirError(f"{path.name} ({what}) is corrupt: {type(exc).__name__}: {exc}", parameter="run_dir",
                       got=str(path), fix="re-run `trustmap demo` (or the step that writes it) to write it again")


def _json(path: Path, what: str) -> Any:
    _need(path, what)
    try:
        return _io.read_json(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise _corrupt(path, exc, what) from exc


def _npz(path: Path, what: str) -> dict[str, np.ndarray]:
    _need(path, what)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise _corrupt(path, exc, what) from exc


def _png(path: Path, what: str) -> bytes:
    _need(path, what)
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 60:
        raise _corrupt(path, ValueError("not a PNG image"), what)
    if not data.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"):
        raise _corrupt(path, ValueError("truncated PNG image (no IEND chunk)"), what)
    return data


def load_run(run_dir: str | os.PathLike) -> Run:
    """Read and check every file of a run directory that its ``run.json`` names.

    Parameters
    ----------
    run_dir : str or Path
        A folder written by ``trustmap demo``, ``explain``, ``locate``, ``evaluate`` or ``score``.

    Returns
    -------
    Run

    Raises
    ------
    RunDirError
        The folder or its ``run.json`` is missing, or a file it names is missing or corrupt (the
        message names the file).

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain
    >>> from trustmap.report import load_run
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> _ = stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "run"), progress=False)
    >>> run = load_run(os.path.join(d, "run"))
    >>> run.manifest["command"]
    'explain'
    """
    from ..attribution import Attribution

    root = Path(run_dir)
    if not root.is_dir():
        raise RunDirError("run directory not found", parameter="run_dir", expected="a folder written by trustmap demo",
                          got=str(root), fix="check the path, or run `trustmap demo` first")
    manifest = _json(root / "run.json", "the run's manifest")
    if not isinstance(manifest, dict) or manifest.get("format") not in RUN_FORMATS:
        raise _corrupt(root / "run.json", ValueError(f"format is not {RUN_FORMAT} (written by an older trustmap?)"),
                       "the run's manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise _corrupt(root / "run.json", ValueError("no 'files' table"), "the run's manifest")
    run = Run(root, manifest)
    p = _rel(root, "data", manifest)
    if p is not None:
        run.data = _json(p, "data summary")
    p = _rel(root, "model_report", manifest)
    if p is not None:
        from ..metrics.model_report import ModelReport

        d = _json(p, "model report")
        try:
            run.model_report = ModelReport.from_dict(d)
        except Exception as exc:
            raise _corrupt(p, exc, "model report") from exc
    p = _rel(root, "history", manifest)
    if p is not None:
        from ..zoo import History

        d = _json(p, "training history")
        try:
            run.history = History.from_dict(d)
        except Exception as exc:
            raise _corrupt(p, exc, "training history") from exc
    p = _rel(root, "samples", manifest)
    if p is not None:
        s = _npz(p, "explained samples")
        if "X" not in s:
            raise _corrupt(p, ValueError("no array 'X'"), "explained samples")
        run.samples = s
    for name, rel in (manifest.get("attributions") or {}).items():
        path = root / rel
        _need(path, f"attribution of {name}")
        _need(path.with_suffix(".json"), f"record of the attribution of {name}")
        try:
            run.attributions[name] = Attribution.load(path)
        except RunDirError:
            raise
        except Exception as exc:
            raise _corrupt(path, exc, f"attribution of {name}") from exc
    p = _rel(root, "scores", manifest)
    if p is not None:
        d = _json(p, "explanation scores")
        if not isinstance(d, dict) or not {"methods", "metrics", "cells"} <= set(d):
            raise _corrupt(p, ValueError("not a score table"), "explanation scores")
        run.scores = d
    p = _rel(root, "localizer", manifest)
    if p is not None:
        d = _json(p, "localizer summary")
        if not isinstance(d, dict) or "r2" not in d or "r2_path" not in d:
            raise _corrupt(p, ValueError("no R² or R² path"), "localizer summary")
        run.localizer = d
    for key in ("da_plot", "path_plot", "curves"):
        p = _rel(root, key, manifest)
        if p is not None:
            run.images[key] = _png(p, key.replace("_", " "))
    for key, rel in files.items():  # anything else named must exist too
        _need(root / rel, key)
    return run


# ---- rendering helpers -------------------------------------------------------------------------
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


#: widest figure in CSS pixels: the report's content column at a 1400 px window (figures are never
#: scaled down by the page; wider ones are drawn at a lower dpi with their text enlarged to match)
MAX_FIG_PX = 1000
#: the smallest text in a figure, in CSS pixels
MIN_TEXT_PX = 9.5


def _legible(fig, dpi: float) -> None:
    """Raise every text of ``fig`` to at least :data:`MIN_TEXT_PX` pixels at ``dpi``."""
    from matplotlib.text import Text

    min_pt = MIN_TEXT_PX * 72.0 / dpi
    for ax in fig.axes:
        for axis, which in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            labels = axis.get_ticklabels()
            size = labels[0].get_fontsize() if labels else min_pt
            if size < min_pt:
                ax.tick_params(axis=which, labelsize=min_pt)
    for t in fig.findobj(Text):
        if t.get_text() and t.get_fontsize() < min_pt:
            t.set_fontsize(min_pt)


def _fig_png(fig) -> bytes:
    w_in = float(fig.get_figwidth())
    dpi = min(float(_DPI), MAX_FIG_PX / max(w_in, 1e-6))
    _legible(fig, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def _img(png: bytes, alt: str, caption: str | None = None, wide: bool = False) -> str:
    """A figure; ``wide``: a PNG drawn elsewhere, shown at its own size in a box that scrolls."""
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    cls = ' class="wide"' if wide else ""
    return f'<figure{cls}><div class="fig"><img src="data:image/png;base64,{b64}" alt="{_esc(alt)}"></div>{cap}</figure>'


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _esc(v)
    return "n/a" if not np.isfinite(f) else f"{f:.{digits}g}"


def _table(head: list[str], rows: list[list[Any]], num_from: int = 1, best: set | None = None,
           cls: str = "") -> str:
    out = [f'<div class="scroll"><table{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}><thead><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r, row in enumerate(rows):
        cells = []
        for c, v in enumerate(row):
            cls = "num" if c >= num_from else ""
            if best and (r, c) in best:
                cls += " best"
            cells.append(f'<td class="{cls.strip()}">{v}</td>' if cls.strip() else f"<td>{v}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _cards(items: list[tuple[str, str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_esc(k)}</div><div class="v{" long" if len(str(v)) > 12 else ""}">{_esc(v)}</div>'
        f'<div class="s">{_esc(s)}</div></div>' for k, v, s in items) + "</div>"


@dataclass
class _Section:
    id: str
    title: str
    html: str
    sub: list[tuple[str, str]] = field(default_factory=list)  # (id, title) of h3s


#: figures queued while the sections are written: (render, alt, caption); drawn by :func:`_draw_all`
_JOBS: list[tuple[Callable[[], Any], str, str | None]] = []
_MARK = "\x00trustmap-figure-{}\x00"


def _figure(render: Callable[[], Any], alt: str, caption: str | None = None) -> str:
    """Queue a figure; its place in the HTML is a marker that :func:`_draw_all` replaces with the
    embedded PNG (so that figures can be drawn in parallel processes)."""
    _JOBS.append((render, alt, caption))
    return _MARK.format(len(_JOBS) - 1)


def _draw_one(i: int) -> bytes:
    """Draw queued figure ``i`` as PNG bytes and free it."""
    fig = _JOBS[i][0]()
    try:
        return _fig_png(fig)
    finally:
        fig.clear()


def _draw_in_worker(i: int):
    try:
        return True, _draw_one(i)
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        return False, exc


def report_workers(n_jobs: int) -> int:
    """Processes that draw the report's figures: ``TRUSTMAP_REPORT_WORKERS`` when set (1: draw in
    this process), else one per CPU beyond the first, at most 4 (so 1 on a 2-core machine, where
    forked workers measured slower: benchmarks/RESULTS.md); 1 where ``fork`` is unavailable."""
    import multiprocessing as mp

    env = os.environ.get("TRUSTMAP_REPORT_WORKERS", "").strip()
    try:
        cpus = os.cpu_count() or 1
        want = int(env) if env else (min(4, cpus - 1) if cpus >= 4 else 1)
    except ValueError:
        want = 1
    if "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(want, n_jobs))


def _draw_all() -> list[str]:
    """Draw every queued figure (in forked worker processes when there are several CPUs); the
    ``<figure>`` HTML of each."""
    n = len(_JOBS)
    workers = report_workers(n) if n >= 4 else 1
    pngs: list[bytes]
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(_draw_in_worker, range(n), chunksize=1)
        for ok, value in results:
            if not ok:
                raise value
        pngs = [value for _, value in results]
    else:
        pngs = [_draw_one(i) for i in range(n)]
    return [_img(png, alt, caption) for png, (_, alt, caption) in zip(pngs, _JOBS)]


def _class_names(run: Run) -> list[str] | None:
    if run.data and run.data.get("classes"):
        return [str(c) for c in run.data["classes"]]
    if run.model_report is not None:
        return list(run.model_report.class_names)
    return None


# ---- what the numbers mean ---------------------------------------------------------------------
#: one line per metric: what it tells the reader (the arrow in the table says which way is better)
METRIC_MEANING: dict[str, str] = {
    "average_drop": "how much the target's probability falls when only the map's top features are kept",
    "increase_in_confidence": "share of samples whose target probability rises when only the top features are kept",
    "deletion": "area under the target-score curve as the top features are removed first (a fast fall is faithful)",
    "insertion": "area under the target-score curve as the top features are put back first into a blank input",
    "faithfulness_correlation": "correlation between a feature set's attribution sum and the score drop when it is "
                                "removed",
    "r2": "generalized partial R² when the map's top features (the budget) are masked: the share of predictive "
          "power they carry",
    "pointing_game": "share of samples whose largest attribution falls inside the known ground-truth region",
    "mass_inside": "share of the attribution mass inside the known ground-truth region",
    "topk_iou": "overlap (IoU) of the top features with the known ground-truth region",
    "auprc": "area under the precision-recall curve of the map as a detector of the ground-truth region",
    "randomization_spearman": "rank correlation of the map with the map of a randomized model (low: the map "
                              "depends on the model, as it should)",
    "randomization_ssim": "structural similarity of the map with that of a randomized model (low: it depends on "
                          "the model)",
}
#: metrics that measure faithfulness to the model (the summary's "most faithful")
FAITHFULNESS = ("average_drop", "increase_in_confidence", "deletion", "insertion", "faithfulness_correlation", "r2")
LOCALIZER_METHOD = "trust"


def _finite(v: Any) -> bool:
    try:
        return v is not None and bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def _best_counts(scores: dict, metrics: tuple[str, ...] | list[str] | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    hib = scores.get("higher_is_better", {})
    for met in scores["metrics"]:
        if metrics is not None and met not in metrics:
            continue
        vals = {m: scores["cells"][m].get(met, {}).get("value") for m in scores["methods"]}
        vals = {m: float(v) for m, v in vals.items() if _finite(v)}
        if vals:
            best = (max if hib.get(met, True) else min)(vals, key=vals.get)
            counts[best] = counts.get(best, 0) + 1
    return counts


@dataclass
class _LocR2:
    """The localizer's R² as the report shows it everywhere (one source of truth)."""

    value: float
    low: float | None
    high: float | None
    where: str          # which samples it was measured on
    target: float | None
    reached: bool | None  # against ``value`` (the same split as the number beside it)
    other: dict | None  # the fit-time held-out R² when the headline is the test-sample one
    tau: float | None
    meaning: str

    def text(self) -> str:
        ci = f" [{_fmt(self.low)}, {_fmt(self.high)}]" if _finite(self.low) and _finite(self.high) else ""
        return f"{_fmt(self.value)}{ci}"


def _fit_r2_meaning(run: Run) -> str | None:
    """The localizer's own sentence on what its (fit-time) R² and interval mean, when recorded."""
    loc = run.localizer or {}
    if loc.get("r2_meaning"):
        return str(loc["r2_meaning"])
    weights = _rel(run.root, "localizer_weights", run.manifest)
    if weights is None:
        return None
    try:
        rec = _io.read_json(weights.with_suffix(".json"))
    except Exception:  # optional: an older record has no sentence
        return None
    text = rec.get("r2_meaning") if isinstance(rec, dict) else None
    return str(text) if text else None


def _loc_r2(run: Run) -> _LocR2 | None:
    """The headline R²: the scores table's cell for the localizer's masks when the run has one
    (measured on the explained test samples, like every other number of the report), else the
    localizer's held-out R² from its fit. "Target reached" is decided on the same number."""
    loc = run.localizer
    cell = None
    if run.scores is not None and "r2" in run.scores.get("metrics", []):
        cell = run.scores["cells"].get(LOCALIZER_METHOD, {}).get("r2")
        if cell is not None and not _finite(cell.get("value")):
            cell = None
    if loc is None and cell is None:
        return None
    tau = (loc or {}).get("tau")
    if tau is None and run.scores is not None:
        tau = run.scores.get("settings", {}).get("r2_tau")
    target = (loc or {}).get("target_r2")
    fit_r2 = (loc or {}).get("r2") or {}
    objective = (loc or {}).get("objective") or ((loc or {}).get("settings") or {}).get("objective")
    if cell is not None:
        value, low, high = float(cell["value"]), cell.get("low"), cell.get("high")
        n = run.scores.get("settings", {}).get("n", "?")
        where = f"the {n} explained test samples"
        other = fit_r2 if _finite(fit_r2.get("estimate")) else None
    else:
        value, low, high = float(fit_r2.get("estimate", np.nan)), fit_r2.get("low"), fit_r2.get("high")
        split = (loc or {}).get("split") or {}
        where = (f"{split['holdout']} held-out samples of the fitting data" if split.get("holdout")
                 else "the localizer's held-out samples")
        other = None
    reached = None if not (_finite(target) and _finite(value)) else bool(round(value, 3) >= round(float(target), 3))
    labels = (loc or {}).get("labels_source") or (loc or {}).get("labels")
    metric = (fit_r2.get("metric") or ((loc or {}).get("params") or {}).get("r_metric") or "acc")
    risk = {"acc": "its error rate", "prob": "its risk 1 − p(label)", "loss": "its cross-entropy",
            "ce": "its cross-entropy"}.get(str(metric), f"its risk ({metric})")
    against = "its own predictions" if labels == "predictions" else "the given labels"
    fit_meaning = _fit_r2_meaning(run)
    meaning = (fit_meaning if cell is None and fit_meaning else None) or (
        f"Masking the features the localizer selects (budget τ = {_fmt(tau)}) removes this share of the "
        f"classifier's predictive power (R² = 1 − risk clean / risk masked, with {risk} against {against}; "
        f"0: nothing lost, 1: all of it), measured on {where}.")
    if objective == "preserve":
        meaning += " (objective 'preserve': the masks keep, rather than remove, what the prediction needs.)"
    return _LocR2(value, low, high, where, target if _finite(target) else None, reached, other, tau, meaning)


def _reliance(run: Run) -> str | None:
    """Where the localizer's masks (else the most faithful method's maps) put their mass, in words."""
    if not run.attributions:
        return None
    name = LOCALIZER_METHOD if LOCALIZER_METHOD in run.attributions else None
    if name is None and run.scores is not None:
        best = _best_counts(run.scores, FAITHFULNESS)
        name = max(best, key=best.get) if best else None
    if name is None or name not in run.attributions:
        name = next((k for k in run.attributions if k not in SYNTHESIS_METHODS), None)
    if name is None:
        return None
    try:
        a = run.attributions[name]
        m = np.abs(np.asarray(a.internal(), dtype=np.float64))
    except Exception:
        return None
    m = np.where(np.isfinite(m), m, 0.0).mean(axis=0)  # (C, *spatial)
    total = float(m.sum())
    if m.ndim < 2 or total <= 0:
        return None
    spatial = m.sum(axis=0)
    flat = np.sort(spatial.ravel())[::-1]
    k = int(np.searchsorted(np.cumsum(flat), 0.5 * total)) + 1
    top = spatial >= flat[min(k, len(flat)) - 1]
    share = 100.0 * k / spatial.size
    who = "the localizer's masks" if name == LOCALIZER_METHOD else f"the {name} maps"
    if spatial.ndim == 1:
        pos = np.flatnonzero(top)
        where = f"positions {pos.min()}–{pos.max()} of {spatial.size}"
    else:
        rows, cols = np.flatnonzero(top.any(axis=1)), np.flatnonzero(top.any(axis=0))
        where = (f"rows {rows.min()}–{rows.max()} and columns {cols.min()}–{cols.max()} of the "
                 f"{spatial.shape[0]}×{spatial.shape[1]} image")
    text = f"Half of {who}' mass (averaged over the explained samples) lies in {share:.0f}% of the input: {where}"
    if m.shape[0] > 1:
        per = m.reshape(m.shape[0], -1).sum(axis=1) / total
        order = np.argsort(per)[::-1][:3]
        text += "; channels carrying most: " + ", ".join(f"{int(c)} ({100 * per[c]:.0f}%)" for c in order)
    return text + "."


# ---- sections ----------------------------------------------------------------------------------
def _summary(run: Run) -> _Section:
    m = run.manifest
    items = [("dataset", str((run.data or {}).get("name", m.get("settings", {}).get("dataset", "?"))),
              f"{(run.data or {}).get('n_test', '?')} test samples")]
    if run.model_report is not None:
        items.append(("test accuracy", f"{run.model_report.accuracy:.3f}",
                      f"macro ROC-AUC {run.model_report.macro_roc_auc:.3f}"))
    lr = _loc_r2(run)
    if lr is not None:
        items.append(("localizer R²", _fmt(lr.value),
                      (f"[{_fmt(lr.low)}, {_fmt(lr.high)}] " if _finite(lr.low) else "") + f"at τ = {_fmt(lr.tau)}"))
    best = _best_counts(run.scores, FAITHFULNESS) if run.scores is not None else {}
    n_faith = len([x for x in (run.scores or {}).get("metrics", []) if x in FAITHFULNESS])
    if best:
        top = max(best.items(), key=lambda kv: kv[1])
        items.append(("most faithful", top[0], f"best on {top[1]} of {n_faith} faithfulness metrics"))
    items.append(("explainers", str(len(run.attributions)),
                  f"on {len(run.samples['X']) if run.samples else 0} samples"))
    timings = m.get("timings") or {}
    if timings:
        items.append(("compute time", f"{sum(float(v) for v in timings.values()):.0f} s",
                      "training, localizer, explainers, scores"))
    points = []
    rel = _reliance(run)
    if rel:
        points.append(f"<li><b>What the model relies on.</b> {_esc(rel)}</li>")
    if best:
        top = max(best.items(), key=lambda kv: kv[1])
        points.append(f"<li><b>Most faithful method.</b> {_esc(top[0])} is best on {top[1]} of {n_faith} "
                      'faithfulness metrics (<a href="#scores">scores</a>).</li>')
    if lr is not None:
        target = ""
        if lr.target is not None:
            target = (f" The target R² {_fmt(lr.target)} is {'reached' if lr.reached else 'not reached'} "
                      "on these samples.")
        points.append(f"<li><b>Localizer R² = {_esc(lr.text())}.</b> {_esc(lr.meaning)}{_esc(target)} "
                      '(<a href="#localizer">localizer</a>)</li>')
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in (m.get("notes") or []))
    if notes:
        k_notes = len(m.get("notes") or [])
        notes = f"<details><summary>{k_notes} note{'' if k_notes == 1 else 's'} from the run</summary>{notes}</details>"
    return _Section("summary", "Summary", _cards(items) + (f'<ul class="points">{"".join(points)}</ul>'
                                                             if points else "") + notes)


def _model(run: Run) -> _Section | None:
    info = run.manifest.get("model")
    if not info:
        return None
    rows = [[_esc(k), _esc(json.dumps(v) if isinstance(v, (dict, list)) else v)] for k, v in info.items()]
    return _Section("model", "Model", _table(["property", "value"], rows, num_from=99))


def _data(run: Run) -> _Section | None:
    d = run.data
    if not d:
        return None
    rows = [[_esc(k), _esc(d[k])] for k in ("name", "layout", "shape", "channels", "length", "n_train", "n_test",
                                             "source") if k in d]
    body = _table(["property", "value"], rows, num_from=99)
    counts = d.get("class_counts") or {}
    if counts:
        names = d.get("classes") or []
        splits = list(counts)
        k = max(len(v) for v in counts.values())
        crow = [[_esc(names[i] if i < len(names) else i)] + [_fmt(counts[s][i]) if i < len(counts[s]) else "0"
                                                             for s in splits] for i in range(k)]
        body += "<h3 id=\"data-classes\">Samples per class</h3>" + _table(["class"] + splits, crow)
    for note in d.get("notes") or []:
        body += f'<p class="note">{_esc(note)}</p>'
    return _Section("data", "Data", body, [("data-classes", "Samples per class")] if counts else [])


def _model_report(run: Run) -> _Section | None:
    rep = run.model_report
    if rep is None:
        return None
    from ..plot import plot_class_accuracy, plot_confusion, plot_roc, plot_training_curves

    names = list(rep.class_names)
    body = [f'<p class="note">Test accuracy {rep.accuracy:.3f} on {rep.n} samples; macro ROC-AUC '
            f'{rep.macro_roc_auc:.3f}.</p>']
    sub = []
    if run.history is not None:
        sub.append(("model-curves", "Training curves"))
        body.append('<h3 id="model-curves">Training curves</h3>')
        body.append(_figure(lambda: plot_training_curves(run.history),
                            "Training curves: loss and accuracy per epoch on the training and validation data",
                            "Loss and accuracy per epoch (solid: training, dashed: validation)."))
    sub.append(("model-roc-confusion", "ROC and confusion matrix"))
    body.append('<h3 id="model-roc-confusion">ROC and confusion matrix</h3><div class="figrow">')
    body.append(_figure(lambda: plot_roc(rep), "ROC curve of every class (one against the rest) with its AUC",
                        "ROC per class (one against the rest); AUC in the legend."))
    body.append(_figure(lambda: plot_confusion(rep), "Normalized confusion matrix of the test split with the "
                                                     "fraction and count in every cell",
                        "Rows: true class, columns: predicted class; each row sums to 1."))
    body.append("</div>")
    sub.append(("model-per-class", "Per class"))
    body.append('<h3 id="model-per-class">Per class</h3>')
    body.append(_figure(lambda: plot_class_accuracy(rep), "Accuracy (recall) of every class as bars",
                        "Accuracy (recall) per class; dashed: overall accuracy."))
    rows = [[_esc(names[k]), _fmt(rep.class_accuracy[k]), _fmt(rep.precision[k]), _fmt(rep.recall[k]),
             _fmt(rep.f1[k]), _fmt(rep.roc_auc[k]), _fmt(int(rep.support[k]))] for k in range(rep.n_classes)]
    body.append("<details><summary>Per-class numbers</summary>"
                + _table(["class", "accuracy", "precision", "recall", "F1", "ROC-AUC", "support"], rows) + "</details>")
    return _Section("model-report", "Model report", "".join(body), sub)


def _sample_info(run: Run):
    s = run.samples or {}
    y = s.get("y")
    pred = s.get("pred")
    probs = s.get("probs")
    conf = probs.max(axis=1) if probs is not None and probs.ndim == 2 else None
    return s.get("X"), y, pred, conf


def _label_text(i, y, pred, conf, names) -> str:
    def nm(k):
        return names[int(k)] if names is not None and 0 <= int(k) < len(names) else str(int(k))

    parts = []
    if y is not None:
        parts.append(f"true class {nm(y[i])}")
    if pred is not None:
        parts.append(f"predicted {nm(pred[i])}" + (f" (p = {float(conf[i]):.2f})" if conf is not None else ""))
    return (" (" + ", ".join(parts) + ")") if parts else ""


def _explanations(run: Run) -> _Section | None:
    if not run.attributions or run.samples is None:
        return None
    from ..plot import select_gallery

    X, y, pred, conf = _sample_info(run)
    names = _class_names(run)
    layout = run.manifest.get("samples_layout")
    body = ["<p class=\"note\">For each method: the samples it was most and least confident about, among correct "
            "and wrong predictions. Each map is scaled to its own largest |value|; signed maps use a diverging "
            "scale (red: for the target class, blue: against).</p>"]
    sub = []
    order = sorted(run.attributions, key=lambda k: (k in SYNTHESIS_METHODS, k != "trust", k))
    n_per = int(run.manifest.get("settings", {}).get("gallery", 3))
    if y is not None and pred is not None and conf is not None:
        groups = select_gallery(y, pred, conf, n=n_per)
    elif pred is not None:  # no labels: grouped by predicted class, most confident first
        order_ = np.argsort(-conf) if conf is not None else np.arange(len(pred))
        groups = {f"predicted {names[k] if names and k < len(names) else k}": order_[pred[order_] == k][:n_per]
                  for k in np.unique(pred).tolist()}
    else:
        groups = {"samples": np.arange(min(len(X), 2 * n_per))}
    # methods side by side on the first (most confident correct, else first) sample
    first = next((int(g[0]) for g in groups.values() if len(g)), 0)
    maps = {k: run.attributions[k] for k in order if k not in SYNTHESIS_METHODS}
    if maps:
        sub.append(("explain-all", "All methods on one sample"))
        body.append('<h3 id="explain-all">All methods on one sample</h3>')
        body.append(_method_tiles(X, maps, first, layout))
        body.append(f'<p class="note">Sample {first}{_esc(_label_text(first, y, pred, conf, names))}: every '
                    "method's map, each scaled to its largest |value|.</p>")
    body.append(f'<h3 id="explain-galleries">Galleries per method</h3><p class="note">{len(order)} methods; '
                'open one to see its maps on the success and failure cases.</p>')
    for k in order:
        a = run.attributions[k]
        sid = "explain-" + k.replace("_", "-")
        synth = k in SYNTHESIS_METHODS
        params = ", ".join(f"{p}={v}" for p, v in (a.params or {}).items() if v is not None)
        params = params if len(params) <= 110 else params[:108] + " …"
        body.append(f'<details class="method" id="{sid}"><summary><b>{_esc(k)}</b> '
                    f'<span class="params">{_esc(params)}</span></summary>')
        if synth:
            def render(a=a):
                from ..plot import plot_gallery as pg

                idx = np.arange(min(len(a), 4))
                return pg(a.maps, np.abs(a.maps - a.maps.mean()), list(idx), layout=a.layout, y_true=a.targets,
                          class_names=names, title=f"{a.method}: synthesized inputs")
            body.append(_figure(render, f"{k}: inputs synthesized to maximize the class scores (not scored)",
                                "Synthesized inputs (the target class in each title); shading: distance from "
                                "the mean. Not an explanation of a given input, so it is not scored."))
            body.append("</details>")
            continue
        body.append(_tile_gallery(X, a, groups, layout, y, pred, conf, names, k))
        body.append("</details>")
    sub.append(("explain-galleries", "Galleries per method"))
    return _Section("explanations", "Explanations", "".join(body), sub)


def _tile(x_i: np.ndarray, m_i: np.ndarray, size: int = 180) -> tuple[bytes, str, bool]:
    """One sample's map (internal layout) as a raster tile: ``(png, cmap, signed)``."""
    from ..plot.tiles import image_tile, signal_tile

    signed = bool(np.nanmin(m_i) < 0)
    rank = m_i.ndim - 1
    cmap = "RdBu_r" if signed else ("Reds" if rank == 1 else "inferno")
    lo, hi = (-1.0, 1.0) if signed else (0.0, 1.0)
    mi = m_i / (float(np.nanmax(np.abs(m_i))) or 1.0)
    if rank == 1:
        return signal_tile(x_i, mi, cmap, lo, hi, width=260, row_h=44 if x_i.shape[0] <= 3 else 22), cmap, signed
    heat = mi.sum(axis=0) if mi.shape[0] > 1 else mi[0]
    heat = heat / (float(np.nanmax(np.abs(heat))) or 1.0)
    return image_tile(x_i.mean(axis=0), heat, cmap, lo, hi, size=size), cmap, signed


def _scale_bar(cmap: str, signed: bool, rank: int) -> str:
    from ..plot.tiles import scale_css

    return (f'<div class="tiles-scale"><span>{"−1 (against)" if signed else "0"}</span>'
            f'<span class="bar" style="background: {scale_css(cmap)}"></span>'
            f'<span>{"+1 (for the target)" if signed else "1"}</span> <small>{_esc(cmap)}; each map ÷ its largest '
            f'|value|{"; over images: transparent at 0" if rank == 2 else ""}</small></div>')


def _method_tiles(X, maps: dict, index: int, layout) -> str:
    """Every method's map of one sample, as tiles with the method's name and colour scale below."""
    from ..layout import as_layout

    x_i = np.asarray(as_layout(layout).to_internal(X[index:index + 1]), dtype=np.float64)[0]
    scales: dict[tuple[str, bool], None] = {}
    out = ['<div class="tiles">']
    for name, a in maps.items():
        m_i = np.asarray(a.internal(), dtype=np.float64)[index]
        png, cmap, signed = _tile(x_i, m_i)
        scales[(cmap, signed)] = None
        b64 = base64.b64encode(png).decode("ascii")
        out.append(f'<figure class="tile"><img src="data:image/png;base64,{b64}" alt="{_esc(name)} map of test '
                   f'sample {index}"><figcaption><b>{_esc(name)}</b> <small>{"signed" if signed else ""}</small>'
                   "</figcaption></figure>")
    out.append("</div>")
    return "".join(out) + "".join(_scale_bar(c, sg, x_i.ndim - 1) for c, sg in scales)


def _tile_gallery(X, a, groups: dict, layout, y, pred, conf, names, method: str) -> str:
    """A method's gallery as HTML: one raster tile per sample (drawn straight into pixels), the
    titles and the colour scale as page text."""
    from ..layout import as_layout

    xs = np.asarray(as_layout(layout).to_internal(X), dtype=np.float64)
    m = np.asarray(a.internal(), dtype=np.float64)

    from ..plot.gallery import sample_title

    out, scales = [], {}
    for gname, idx in groups.items():
        if not len(idx):
            continue
        out.append(f'<div class="tile-group"><div class="gname">{_esc(gname)}</div><div class="tiles">')
        for i in idx:
            i = int(i)
            png, cmap, signed = _tile(xs[i], m[i])
            scales[(cmap, signed)] = None
            cap = sample_title(i, y, pred, conf, names)
            b64 = base64.b64encode(png).decode("ascii")
            out.append(f'<figure class="tile"><img src="data:image/png;base64,{b64}" '
                       f'alt="{_esc(method)} map of test sample {cap}"><figcaption>{_esc(cap)}</figcaption></figure>')
        out.append("</div></div>")
    return "".join(_scale_bar(c, sg, m.ndim - 2) for c, sg in scales) + "".join(out)


def _class_averages(run: Run) -> _Section | None:
    if not run.attributions or run.samples is None:
        return None
    X, y, pred, conf = _sample_info(run)
    labels = y if y is not None else pred
    if labels is None:
        return None
    from ..plot import plot_class_average

    names = _class_names(run)
    wanted = [k for k in ("saliency", "trust", "integrated_gradients", "gradcam") if k in run.attributions][:2]
    if not wanted:
        wanted = [k for k in run.attributions if k not in SYNTHESIS_METHODS][:1]
    body, sub = ["<p class=\"note\">Mean map over the explained samples of each class (each explained for its own "
                 "prediction), with a 95% percentile bootstrap interval of the mean (200 resamples); for images also the marginal "
                 "sums over rows and columns with their bands.</p>"], []
    for k in wanted:
        a = run.attributions[k]
        sid = "class-avg-" + k.replace("_", "-")
        sub.append((sid, k))
        body.append(f'<h3 id="{sid}">{_esc(k)}</h3>')
        body.append(_figure(lambda a=a: plot_class_average(a, np.asarray(labels), class_names=names, n_boot=200,
                                                           title=f"{a.method}: class averages"),
                            f"Class-average {k} maps with 95% bootstrap confidence bands, one panel per class"))
    return _Section("class-averages", "Class-average maps", "".join(body), sub)


def _scores(run: Run) -> _Section | None:
    sc = run.scores
    if sc is None:
        return None
    from ..plot import plot_metric_comparison

    methods, metrics, cells = sc["methods"], list(sc["metrics"]), sc["cells"]
    hib = sc.get("higher_is_better", {})
    st = sc.get("settings", {})
    level = st.get("level", 0.95)
    # R² at budget: kept in the main table only when it separates the methods (the spread of the
    # values exceeds the typical interval width); otherwise shown apart, with why
    demoted = []
    if "r2" in metrics:
        vals = [cells[m].get("r2", {}) for m in methods]
        fin = [c for c in vals if _finite(c.get("value"))]
        spread = (max(float(c["value"]) for c in fin) - min(float(c["value"]) for c in fin)) if len(fin) > 1 else 0.0
        widths = [float(c["high"]) - float(c["low"]) for c in fin if _finite(c.get("low")) and _finite(c.get("high"))]
        if len(fin) > 2 and spread <= (float(np.median(widths)) if widths else 0.0):
            demoted = ["r2"]
    shown = [x for x in metrics if x not in demoted]

    def table(mets):
        rows, best = [], set()
        for c, met in enumerate(mets, start=1):
            fin = [(float(cells[m].get(met, {}).get("value")), r) for r, m in enumerate(methods)
                   if _finite(cells[m].get(met, {}).get("value"))]
            if fin:
                best.add(((max if hib.get(met, True) else min)(fin)[1], c))
        for m in methods:
            row = [_esc(m)]
            for met in mets:
                cell = cells[m].get(met, {})
                v = cell.get("value")
                row.append("n/a" if not _finite(v) else
                           f"{_fmt(v)}<br><small>[{_fmt(cell.get('low'))}, {_fmt(cell.get('high'))}]</small>")
            rows.append(row)
        head = ["method"] + [f"{met.replace('_', ' ')} {'↑' if hib.get(met, True) else '↓'}" for met in mets]
        return _table(head, rows, best=best, cls="scores")

    n = st.get("n", "?")
    body = [f'<p class="note">Mean over the {_esc(n)} explained samples with a {int(round(level * 100))}% '
            'bootstrap interval (below each value). ↑: higher is better, ↓: lower is better; the best value of '
            'each metric is highlighted.</p>', table(shown)]
    body.append('<dl class="metrics">' + "".join(
        f"<dt>{_esc(met.replace('_', ' '))} {'↑' if hib.get(met, True) else '↓'}</dt>"
        f"<dd>{_esc(METRIC_MEANING.get(met, ''))} ({'higher' if hib.get(met, True) else 'lower'} is better)</dd>"
        for met in metrics) + "</dl>")
    sub = []
    if demoted:
        tau, frac = st.get("r2_tau"), st.get("r2_frac")
        budget = f"τ = {_fmt(tau)}" if tau is not None else f"{_fmt(100 * float(frac))}% of the entries"
        sub.append(("scores-r2", "R² at the localizer's budget"))
        body.append('<h3 id="scores-r2">R² at the localizer\'s budget</h3>')
        body.append(f'<p class="note">R² when each method\'s top features up to the budget ({_esc(budget)}; '
                    f'{_esc(st.get("r2_budget", ""))}) are masked. At this budget the values of the methods differ '
                    'by less than a typical confidence interval, so this column does not separate the methods '
                    'here and is shown apart: masking this much removes what the model needs whichever map '
                    'chooses it.</p>')
        body.append(table(demoted))
    comps = sc.get("comparisons", [])
    sig = [c for c in comps if c.get("significant")]
    n_perm = st.get("n_perm")
    floor_note = ""
    if n_perm:
        pairs = len(methods) * (len(methods) - 1) // 2
        n_valid = int(n) if isinstance(n, (int, np.integer)) or str(n).isdigit() else None
        exact = n_valid is not None and 2 ** min(n_valid, 60) <= int(n_perm)
        p_min = (2.0 / 2 ** n_valid) if exact else 1.0 / (int(n_perm) + 1)
        holm_floor = min(1.0, pairs * p_min)
        at_floor = [c for c in comps if _finite(c.get("p_holm")) and float(c["p_holm"]) <= holm_floor * (1 + 1e-9)]
        floor_note = (f" With {int(n_perm)} permutations the smallest possible p-value is {p_min:.2g}, so after "
                      f"Holm's correction over {pairs} pairs the smallest possible adjusted p-value is "
                      f"{holm_floor:.2g}; {len(at_floor)} of {len(comps)} adjusted p-values are at that floor "
                      "(the true p-value is at most that).")
    body.append(f'<p class="note">Paired comparisons: {_esc(st.get("test", ""))}; '
                f'{_esc(st.get("correction", ""))}. {len(sig)} of {len(comps)} differences are significant at '
                f'α = {_esc(st.get("alpha", 0.05))}.{_esc(floor_note)}</p>')
    if comps:
        rows = [[_esc(c.get("metric", "").replace("_", " ")), _esc(c.get("a")), _esc(c.get("b")),
                 f"{_fmt(c.get('diff'))} <small>[{_fmt(c.get('low'))}, {_fmt(c.get('high'))}]</small>",
                 _fmt(c.get("p_holm")), _esc(c.get("better") or "—")] for c in comps if c.get("significant")]
        if rows:
            body.append(f"<details><summary>The {len(rows)} significant differences</summary>"
                        + _table(["metric", "a", "b", "a − b", "Holm p", "better"], rows, num_from=3)
                        + "</details>")
    sub.append(("scores-chart", "Comparison chart"))
    body.append('<h3 id="scores-chart">Comparison chart</h3>')
    body.append(_figure(lambda: plot_metric_comparison(sc), "Metric comparison chart: each method's value with its "
                                                              "bootstrap confidence interval, one panel per metric"))
    if "curves" in run.images:
        sub.append(("scores-curves", "Deletion and insertion curves"))
        body.append('<h3 id="scores-curves">Deletion and insertion curves</h3>')
        body.append(_img(run.images["curves"], "Mean deletion and insertion curves of every method", wide=True))
    notes = st.get("notes") or []
    body += [f'<p class="note">{_esc(x)}</p>' for x in notes]
    return _Section("scores", "Scores", "".join(body), sub)


def _localizer(run: Run) -> _Section | None:
    loc = run.localizer
    if loc is None:
        return None
    from ..localizer.plots import plot_r2_path
    from ..localizer.r2 import R2Path

    lr = _loc_r2(run)
    try:
        path = R2Path.from_dict(loc["r2_path"])
    except Exception as exc:
        raise _corrupt(_rel(run.root, "localizer", run.manifest), exc, "localizer summary") from exc
    body = ['<p class="note">The TRUST localizer (dnn-locate; Dai, Shen, Chen, Li, Pan, Ann. Appl. Stat. 2023) learns '
            'masks δ(x) with budget τ that remove what the classifier relies on; the generalized partial R² = '
            '1 − risk(clean) / risk(masked) says how much of the prediction the located features carry.</p>']
    cards = [("chosen τ", _fmt(loc.get("tau")), f"mode {loc.get('mode', '?')}")]
    if lr is not None:
        cards.append(("localizer R²", _fmt(lr.value),
                      (f"[{_fmt(lr.low)}, {_fmt(lr.high)}] " if _finite(lr.low) else "") + f"on {lr.where}"))
        if lr.target is not None:
            cards.append(("target R²", _fmt(lr.target),
                          f"{'reached' if lr.reached else 'not reached'} by the R² beside it ({_fmt(lr.value)})"))
    lab = loc.get("labels_source") or loc.get("labels")
    if lab:
        cards.append(("labels", str(lab), "the model's own predictions" if lab == "predictions" else "the given labels"))
    steps = (run.manifest.get("settings") or {}).get("refine") if isinstance(run.manifest, dict) else None
    if isinstance(steps, int) and steps > 0:
        cards.append(("masks", f"refined, {steps} steps", "per sample, after the mask network (locate --refine); "
                                                          "the R² is the mask network's"))
    body.append(_cards(cards))
    if lr is not None:
        body.append(f'<p class="meaning">{_esc(lr.meaning)}</p>')
        if lr.other is not None:
            o = lr.other
            split = loc.get("split") or {}
            where = f"{split['holdout']} held-out samples of the fitting data" if split.get("holdout") else \
                "held-out samples of the fitting data"
            body.append(f'<p class="note">While fitting, on {_esc(where)}, the R² at this τ was '
                        f'{_esc(_fmt(o.get("estimate")))} [{_esc(_fmt(o.get("low")))}, {_esc(_fmt(o.get("high")))}]; '
                        'the R² path below is that of the fitting data. The number used in the rest of this report '
                        'is the one above, measured on the same test samples as every other score.</p>')
            fm = _fit_r2_meaning(run)
            if fm:
                body.append(f'<p class="note">What the fit-time R² means: {_esc(fm)}</p>')
    sub = [("localizer-path", "R² path")]
    body.append('<h3 id="localizer-path">R² path</h3>')
    body.append(_figure(lambda: plot_r2_path(path, tau=loc.get("tau"), target=loc.get("target_r2")),
                        "R² of the localizer against the mask budget τ with its confidence band",
                        "R² on the fitting data's held-out samples against τ with its interval; dashed: target, "
                        "dotted: chosen τ."))
    if LOCALIZER_METHOD in run.attributions and run.samples is not None:
        a = run.attributions[LOCALIZER_METHOD]
        from ..layout import as_layout

        if as_layout(a.layout).rank == 2:  # the masks of the explained test samples, drawn visibly
            from ..plot import plot_gallery

            X, y, pred, conf = _sample_info(run)
            idx = list(range(min(len(X), len(a), 6)))
            sub.append(("localizer-masks", "Masks on test samples"))
            body.append('<h3 id="localizer-masks">Masks on test samples</h3>')
            body.append(_figure(lambda: plot_gallery(X[: len(a)], a, idx, layout=a.layout, y_true=y, y_pred=pred,
                                                     confidence=conf, class_names=_class_names(run),
                                                     title="localizer masks"),
                                "The localizer's masks over the first explained test images",
                                "Each mask scaled to its own largest value; transparent where the mask is zero."))
    if "da_plot" in run.images:
        sub.append(("localizer-da", "DA plot"))
        body.append('<h3 id="localizer-da">DA plot</h3>')
        body.append(_img(run.images["da_plot"], "DA plot: training samples of each class with the located features",
                         "Samples of each class with the mask at the chosen τ.", wide=True))
    if "path_plot" in run.images:
        sub.append(("localizer-pathplot", "Path plot"))
        body.append('<h3 id="localizer-pathplot">Path plot</h3>')
        body.append(_img(run.images["path_plot"], "Path plot: the located features of a few samples as τ grows",
                         "How the located region grows with τ.", wide=True))
    return _Section("localizer", "TRUST localizer", "".join(body), sub)


def _provenance(run: Run) -> _Section:
    prov = {"run": {k: v for k, v in run.manifest.items() if k != "versions"},
            "attributions": {k: a.provenance for k, a in run.attributions.items()}}
    text = json.dumps(_io.to_jsonable(prov), indent=2, sort_keys=True)
    return _Section("provenance", "Provenance",
                    '<p class="note">The run\'s manifest (settings, files, fingerprints, timings) and the provenance '
                    'record of every attribution.</p><pre id="provenance-json">' + _esc(text) + "</pre>")


def _versions(run: Run) -> _Section:
    vers = dict(run.manifest.get("versions") or {})
    now = _io.versions()
    rows = [[_esc(k), _esc(v), _esc(now.get(k, "—"))] for k, v in sorted(vers.items())]
    for k in sorted(set(now) - set(vers)):
        rows.append([_esc(k), "—", _esc(now[k])])
    return _Section("versions", "Versions", '<p class="note">Library versions when the run was made and when this '
                    'report was built.</p>' + _table(["package", "run", "report"], rows, num_from=99))


def _counterfactuals(run: Run) -> _Section | None:
    from .counterfactuals import counterfactual_section  # a module of its own (it imports this one)

    return counterfactual_section(run)


SECTIONS = (_summary, _model_report, _explanations, _class_averages, _scores, _counterfactuals, _localizer, _data,
            _model, _provenance, _versions)


def _template(name: str) -> str:
    return resources.files("trustmap.report").joinpath("templates", name).read_text(encoding="utf-8")


def render(run: Run) -> str:
    """The report's HTML text.

    Parameters
    ----------
    run : Run
        From :func:`load_run`.

    Returns
    -------
    str
        A self-contained HTML page (figures embedded; no outside requests).

    Raises
    ------
    ModuleNotFoundError
        matplotlib is not installed (the ``plot`` extra); a plain ImportError, not a typed one.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, trustmap
    >>> from trustmap.stream import stream_explain
    >>> from trustmap.report import load_run, render
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "x.npy"), np.random.default_rng(0).normal(size=(10, 1, 16)).astype(np.float32))
    >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten())
    >>> model = trustmap.load_model(net, input_shape=(1, 16))
    >>> _ = stream_explain(model, os.path.join(d, "x.npy"), "saliency", os.path.join(d, "run"), progress=False)
    >>> html = render(load_run(os.path.join(d, "run")))
    >>> html.startswith("<!DOCTYPE html>")
    True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from .. import __version__

    _JOBS.clear()
    try:
        sections = [s for s in (f(run) for f in SECTIONS) if s is not None]
        figures = _draw_all()
        for s in sections:
            s.html = re.sub("\x00trustmap-figure-(\\d+)\x00", lambda mt: figures[int(mt.group(1))], s.html)
    finally:
        _JOBS.clear()
    toc = ["<ol>"]
    for s in sections:
        toc.append(f'<li><a href="#{s.id}">{_esc(s.title)}</a>')
        if s.sub:
            toc.append("<ol>" + "".join(f'<li><a href="#{i}">{_esc(t)}</a></li>' for i, t in s.sub) + "</ol>")
        toc.append("</li>")
    toc.append("</ol>")
    body = "\n".join(f'<section id="{s.id}"><h2>{_esc(s.title)}</h2>{s.html}</section>' for s in sections)
    m = run.manifest
    ds = (run.data or {}).get("name") or m.get("settings", {}).get("dataset", "")
    model = (m.get("model") or {}).get("architecture") or (m.get("model") or {}).get("name", "model")
    return string.Template(_template("report.html")).substitute(
        title=_esc(f"trustmap report: {model} on {ds}"), css=_template("report.css"), toc="".join(toc), body=body,
        subtitle=_esc(f"Run directory {run.root.name} · created {m.get('created', '?')}"), version=_esc(__version__),
        created=_esc(_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))


def build_report(run_dir, out: str | os.PathLike | None = None) -> Path:
    """Build ``RUN_DIR/report.html`` (or ``out``): one self-contained HTML file, written atomically.

    ``run_dir`` is one run folder of any command, or a list of them (e.g. explain + locate + evaluate
    of the same model and data; the report goes to the first one by default), read by
    :func:`trustmap.report.runs.load_runs`. Raises :class:`~trustmap.errors.RunDirError` naming the
    file when one is missing or corrupt.

    Parameters
    ----------
    run_dir : str, path, or a list of them
        Run folders holding a ``run.json`` (:mod:`trustmap.jobs.record`), of one model and data.
    out : str or path, optional
        The HTML file to write (default: ``report.html`` in the first folder).

    Returns
    -------
    Path
        The HTML file written: no request to any other host (figures inline, a
        Content-Security-Policy forbids any).

    Raises
    ------
    RunDirError
        A folder without ``run.json``, a named file missing or corrupt, or folders of different
        models.

    Examples
    --------
    >>> from trustmap.report import build_report
    >>> build_report("runs/demo")                               # runs/demo/report.html
    >>> build_report(["runs/expl", "runs/loc", "runs/scores"], out="report.html")
    """
    from .runs import load_runs

    run = load_runs(run_dir)
    text = render(run)
    path = Path(out) if out is not None else run.root / "report.html"
    return _io.write_text(path, text)
