"""Build one self-contained HTML report from a run directory (see :mod:`trustmap.report`)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
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
_DPI = 80


# ---- loading ------------------------------------------------------------------------------------
@dataclass
class Run:
    """A run directory's contents, read and checked."""

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

    Raises :class:`~trustmap.errors.RunDirError` naming the file when one is missing or corrupt.
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


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def _img(png: bytes, alt: str, caption: str | None = None) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{b64}" alt="{_esc(alt)}">{cap}</figure>'


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


def _table(head: list[str], rows: list[list[Any]], num_from: int = 1, best: set | None = None) -> str:
    out = ['<div class="scroll"><table><thead><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
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


def _figure(render: Callable[[], Any], alt: str, caption: str | None = None) -> str:
    """Draw a figure, embed it as a PNG, free it."""
    fig = render()
    try:
        return _img(_fig_png(fig), alt, caption)
    finally:
        fig.clear()


def _class_names(run: Run) -> list[str] | None:
    if run.data and run.data.get("classes"):
        return [str(c) for c in run.data["classes"]]
    if run.model_report is not None:
        return list(run.model_report.class_names)
    return None


# ---- sections ----------------------------------------------------------------------------------
def _overview(run: Run) -> _Section:
    m = run.manifest
    items = [("dataset", str((run.data or {}).get("name", m.get("settings", {}).get("dataset", "?"))),
              f"{(run.data or {}).get('n_test', '?')} test samples")]
    if run.model_report is not None:
        items.append(("test accuracy", f"{run.model_report.accuracy:.3f}",
                      f"macro ROC-AUC {run.model_report.macro_roc_auc:.3f}"))
    items.append(("explainers", str(len(run.attributions)), f"on {len(run.samples['X']) if run.samples else 0} samples"))
    if run.localizer is not None:
        r2 = run.localizer["r2"]
        items.append(("localizer R²", _fmt(r2.get("estimate")), f"[{_fmt(r2.get('low'))}, {_fmt(r2.get('high'))}] "
                                                                  f"at τ = {_fmt(run.localizer.get('tau'))}"))
    if run.scores is not None:
        best = _best_counts(run.scores)
        if best:
            top = max(best.items(), key=lambda kv: kv[1])
            items.append(("most often best", top[0], f"{top[1]} of {len(run.scores['metrics'])} metrics"))
    timings = m.get("timings") or {}
    if timings:
        items.append(("compute time", f"{sum(float(v) for v in timings.values()):.0f} s",
                      "training, localizer, explainers, scores"))
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in (m.get("notes") or []))
    what = ('<p>This report shows which parts of the inputs a fitted classifier relies on: the model and its '
            'accuracy, the maps of every explainer on test samples (success and failure cases), class-average maps, '
            'scores of the explanations with confidence intervals, and the TRUST localizer (dnn-locate) with its '
            'generalized partial R².</p>')
    return _Section("overview", "Overview", what + _cards(items) + notes)


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
    from ..plot import plot_model_report

    names = list(rep.class_names)
    body = _figure(lambda: plot_model_report(rep, history=run.history),
                   "Model report: training curves, ROC curve per class, normalized confusion matrix and per-class "
                   "accuracy of the classifier on the test split",
                   f"Test accuracy {rep.accuracy:.3f} on {rep.n} samples; macro ROC-AUC {rep.macro_roc_auc:.3f}.")
    rows = [[_esc(names[k]), _fmt(rep.class_accuracy[k]), _fmt(rep.precision[k]), _fmt(rep.recall[k]),
             _fmt(rep.f1[k]), _fmt(rep.roc_auc[k]), _fmt(int(rep.support[k]))] for k in range(rep.n_classes)]
    body += ("<details><summary>Per-class numbers</summary>"
             + _table(["class", "accuracy", "precision", "recall", "F1", "ROC-AUC", "support"], rows) + "</details>")
    return _Section("model-report", "Model report", body)


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
    from ..plot import plot_gallery, select_gallery

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
        from ..plot import plot_method_grid

        sub.append(("explain-all", "All methods on one sample"))
        body.append('<h3 id="explain-all">All methods on one sample</h3>')
        body.append(_figure(lambda: plot_method_grid(X, maps, index=first, layout=layout),
                            f"Maps of all {len(maps)} methods for test sample {first}, one panel per method",
                            f"Sample {first}{_label_text(first, y, pred, conf, names)}: every method's map, "
                            "each scaled to its largest |value|."))
    for k in order:
        a = run.attributions[k]
        sid = "explain-" + k.replace("_", "-")
        sub.append((sid, k))
        synth = k in SYNTHESIS_METHODS
        body.append(f'<h3 id="{sid}">{_esc(k)}</h3>')
        params = ", ".join(f"{p}={v}" for p, v in (a.params or {}).items() if v is not None)
        body.append(f'<p class="note"><span class="tag">{_esc(a.method)}</span>{_esc(params)}</p>')
        if synth:
            def render(a=a):
                from ..plot import plot_gallery as pg

                idx = np.arange(min(len(a), 4))
                return pg(a.maps, np.abs(a.maps - a.maps.mean()), list(idx), layout=a.layout, y_true=a.targets,
                          class_names=names, title=f"{a.method}: synthesized inputs")
            body.append(_figure(render, f"{k}: inputs synthesized to maximize the class scores (not scored)",
                                "Synthesized inputs (the target class in each title); shading: distance from "
                                "the mean. Not an explanation of a given input, so it is not scored."))
            continue
        body.append(_figure(lambda a=a: plot_gallery(X, a, groups, layout=a.layout, y_true=y, y_pred=pred,
                                                     confidence=conf, class_names=names,
                                                     title=f"{k}: success and failure cases"),
                            f"Gallery of {k} maps on correct and wrong predictions, most and least confident",
                            f"{k}: rows are correct/most confident, correct/least confident, wrong/most "
                            "confident, wrong/least confident (empty groups are left out)."))
    return _Section("explanations", "Explanations", "".join(body), sub)


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
                 "prediction), with a 95% percentile bootstrap interval of the mean; for images also the marginal "
                 "sums over rows and columns with their bands.</p>"], []
    for k in wanted:
        a = run.attributions[k]
        sid = "class-avg-" + k.replace("_", "-")
        sub.append((sid, k))
        body.append(f'<h3 id="{sid}">{_esc(k)}</h3>')
        body.append(_figure(lambda a=a: plot_class_average(a, np.asarray(labels), class_names=names, n_boot=500,
                                                           title=f"{a.method}: class averages"),
                            f"Class-average {k} maps with 95% bootstrap confidence bands, one panel per class"))
    return _Section("class-averages", "Class-average maps", "".join(body), sub)


def _best_counts(scores: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    hib = scores.get("higher_is_better", {})
    for met in scores["metrics"]:
        vals = {m: scores["cells"][m].get(met, {}).get("value") for m in scores["methods"]}
        vals = {m: float(v) for m, v in vals.items() if v is not None and np.isfinite(float(v))}
        if vals:
            best = (max if hib.get(met, True) else min)(vals, key=vals.get)
            counts[best] = counts.get(best, 0) + 1
    return counts


def _scores(run: Run) -> _Section | None:
    sc = run.scores
    if sc is None:
        return None
    from ..plot import plot_metric_comparison

    methods, metrics, cells = sc["methods"], sc["metrics"], sc["cells"]
    hib = sc.get("higher_is_better", {})
    level = sc.get("settings", {}).get("level", 0.95)
    rows, best = [], set()
    for c, met in enumerate(metrics, start=1):
        vals = [cells[m].get(met, {}).get("value") for m in methods]
        fin = [(float(v), r) for r, v in enumerate(vals) if v is not None and np.isfinite(float(v))]
        if fin:
            best.add(((max if hib.get(met, True) else min)(fin)[1], c))
    for m in methods:
        row = [_esc(m)]
        for met in metrics:
            cell = cells[m].get(met, {})
            v = cell.get("value")
            row.append("n/a" if v is None else f"{_fmt(v)} <small>[{_fmt(cell.get('low'))}, {_fmt(cell.get('high'))}]</small>")
        rows.append(row)
    head = ["method"] + [f"{met} {'↑' if hib.get(met, True) else '↓'}" for met in metrics]
    body = [f'<p class="note">Values with {int(round(level * 100))}% bootstrap intervals over the '
            f'{_esc(sc.get("settings", {}).get("n", "?"))} explained samples (↑ higher is better, ↓ lower). '
            'The best value per metric is highlighted.</p>', _table(head, rows, best=best)]
    sig = [c for c in sc.get("comparisons", []) if c.get("significant")]
    body.append(f'<p class="note">Paired comparisons: {_esc(sc.get("settings", {}).get("test", ""))}; '
                f'{_esc(sc.get("settings", {}).get("correction", ""))}. {len(sig)} of {len(sc.get("comparisons", []))} '
                'differences are significant.</p>')
    sub = [("scores-chart", "Comparison chart")]
    body.append('<h3 id="scores-chart">Comparison chart</h3>')
    body.append(_figure(lambda: plot_metric_comparison(sc), "Metric comparison chart: each method's value with its "
                                                              "bootstrap confidence interval, one panel per metric"))
    if "curves" in run.images:
        sub.append(("scores-curves", "Deletion and insertion curves"))
        body.append('<h3 id="scores-curves">Deletion and insertion curves</h3>')
        body.append(_img(run.images["curves"], "Mean deletion and insertion curves of every method"))
    notes = sc.get("settings", {}).get("notes") or []
    body += [f'<p class="note">{_esc(n)}</p>' for n in notes]
    return _Section("scores", "Scores", "".join(body), sub)


def _localizer(run: Run) -> _Section | None:
    loc = run.localizer
    if loc is None:
        return None
    from ..localizer.plots import plot_r2_path
    from ..localizer.r2 import R2Path

    r2 = loc["r2"]
    try:
        path = R2Path.from_dict(loc["r2_path"])
    except Exception as exc:
        raise _corrupt(_rel(run.root, "localizer", run.manifest), exc, "localizer summary") from exc
    body = ['<p class="note">The TRUST localizer (dnn-locate; Dai, Shen, Chen, Li, Pan, Ann. Appl. Stat. 2023) learns '
            'masks δ(x) with budget τ that remove what the classifier relies on; the generalized partial R² = '
            '1 − risk(clean) / risk(masked) says how much of the prediction the located features carry.</p>']
    body.append(_cards([
        ("chosen τ", _fmt(loc.get("tau")), f"mode {loc.get('mode', '?')}"),
        ("held-out R²", _fmt(r2.get("estimate")), f"[{_fmt(r2.get('low'))}, {_fmt(r2.get('high'))}]"),
        ("target R²", _fmt(loc.get("target_r2")), "reached" if loc.get("target_reached") else "not reached"),
    ]))
    sub = [("localizer-path", "R² path")]
    body.append('<h3 id="localizer-path">R² path</h3>')
    body.append(_figure(lambda: plot_r2_path(path, tau=loc.get("tau"), target=loc.get("target_r2")),
                        "R² of the localizer against the mask budget τ with its confidence band",
                        "Held-out R² against τ with its interval; dashed: target, dotted: chosen τ."))
    if "da_plot" in run.images:
        sub.append(("localizer-da", "DA plot"))
        body.append('<h3 id="localizer-da">DA plot</h3>')
        body.append(_img(run.images["da_plot"], "DA plot: training samples of each class with the located features",
                         "Samples of each class with the mask at the chosen τ."))
    if "path_plot" in run.images:
        sub.append(("localizer-pathplot", "Path plot"))
        body.append('<h3 id="localizer-pathplot">Path plot</h3>')
        body.append(_img(run.images["path_plot"], "Path plot: the located features of a few samples as τ grows",
                         "How the located region grows with τ."))
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


SECTIONS = (_overview, _model, _data, _model_report, _explanations, _class_averages, _scores, _localizer,
            _provenance, _versions)


def _template(name: str) -> str:
    return resources.files("trustmap.report").joinpath("templates", name).read_text(encoding="utf-8")


def render(run: Run) -> str:
    """The report's HTML text."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from .. import __version__

    sections = [s for s in (f(run) for f in SECTIONS) if s is not None]
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
    """
    from .runs import load_runs

    run = load_runs(run_dir)
    text = render(run)
    path = Path(out) if out is not None else run.root / "report.html"
    return _io.write_text(path, text)
