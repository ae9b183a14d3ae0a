"""The ``trustmap`` command line: parses arguments, calls the library, prints. No logic of its own.

Exit codes: 0 success; 2 a usage error or bad input (one line on stderr); 1 an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        _LAST_USAGE[:] = [message]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _common(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-o", "--out", default=out_default,
                   help=f"output directory (default: {out_default})" if out_default else
                   "output directory for the report files (default: print only)")


def _data_args(p: argparse.ArgumentParser, *, dataset_default: str | None) -> None:
    from .data import NAMES

    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", choices=NAMES, default=None,
                   help="built-in dataset" + (f" (default: {dataset_default})" if dataset_default else ""))
    g.add_argument("--data", help="data file: .npz, .npy, .csv (MIT-BIH Kaggle layout or a label column), "
                                  ".parquet, .h5, .ts")
    p.add_argument("--labels", help="labels beside the data (.npy or one label per line); without labels the "
                                    "model's predictions stand in for them")
    p.add_argument("--classes", help="class names in class-index order, e.g. N,S,V,F,Q (used by every plot and table)")
    p.add_argument("--layout", help="layout of the data file's arrays, e.g. NLC or NCHW (when ambiguous)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _param_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method option, repeatable: e.g. --param gradcam.per_channel=true --param "
                        "lime.n_samples=1000 (checked against the method's parameters)")
    p.add_argument("--params", metavar="FILE.json", help='method options from a JSON file: {"lime": {"n_samples": 500}}')


def _stream_args(p: argparse.ArgumentParser, *, maps: bool = True) -> None:
    g = p.add_argument_group("streaming (data files larger than memory)")
    g.add_argument("--stream", action="store_true",
                   help="read --data a chunk at a time and write results incrementally (resumable); automatic "
                        f"for .npy/.parquet/.h5/.csv files over {_AUTO_STREAM_MB} MiB")
    g.add_argument("--chunk-rows", type=int, default=4096,
                   help="rows per chunk, in memory and streamed (the same value gives the same maps; default 4096)")
    if maps:
        g.add_argument("--format", default="npy", choices=["npy", "parquet"],
                       help="streamed output: one .npy per method (default) or a Parquet folder")
    g.add_argument("--overwrite", action="store_true",
                   help="discard an earlier (unfinished) streamed run in --out instead of resuming it")


#: data files larger than this are streamed even without --stream
_AUTO_STREAM_MB = 512


def _streaming(a: argparse.Namespace, cmd: str) -> bool:
    """Whether this command streams its --data file: --stream, or a large streamable file."""
    from .stream import STREAM_FORMATS

    if not getattr(a, "data", None):
        if getattr(a, "stream", False):
            raise SystemExit(_usage(cmd, "--stream needs --data FILE (.npy, .parquet, .h5 or .csv)"))
        return False
    suffix = os.path.splitext(a.data)[1].lower()
    if a.stream:
        return True
    if suffix in STREAM_FORMATS and os.path.isfile(a.data) and os.path.getsize(a.data) > _AUTO_STREAM_MB * 2**20:
        sys.stderr.write(f"trustmap {cmd}: {a.data} is over {_AUTO_STREAM_MB} MiB: streaming it "
                         f"(chunks of {a.chunk_rows} rows; results written as they come)\n")
        return True
    return False


def _need_data(a: argparse.Namespace, cmd: str) -> None:
    if not (a.dataset or a.data):
        raise SystemExit(_usage(cmd, "one of --dataset or --data is required"))


def _method_params(a: argparse.Namespace, methods=None, extra=()) -> dict:
    from .jobs import parse_params

    return parse_params(a.param, a.params, methods=methods, extra=extra)


def _cmd_train(a: argparse.Namespace) -> dict:
    from . import workflows

    dataset = a.dataset if (a.dataset or a.data) else "mnist1d"
    res = workflows.train(dataset=dataset, data=a.data, test_data=a.test_data, arch=a.arch, out_dir=a.out,
                          epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=a.patience, seed=a.seed,
                          layout=a.layout, progress=not a.quiet, labels=a.labels, classes=a.classes)
    return {**res.to_dict(), "run": str(res.out_dir / "run.json"), "summary": res.report.summary()}


def _cmd_evaluate(a: argparse.Namespace) -> dict:
    from .jobs.commands import evaluate

    _need_data(a, "evaluate")
    stream = _streaming(a, "evaluate")
    res = evaluate(a.model, a.data, a.out, dataset=a.dataset, split=a.split, explanations=a.explanations,
                   metrics=a.metrics, engine="stream" if stream else "memory", chunk_rows=a.chunk_rows,
                   layout=a.layout, labels=a.labels, classes=a.classes,
                   score_samples=a.score_samples if stream else None, seed=a.seed, progress=not a.quiet,
                   safe_mode=not a.unsafe, frac=a.frac)
    result: dict = {"labels": res["labels"], "files": [str(f) for f in res["files"]]}
    summary = []
    if "report" in res:
        result.update(accuracy=res["accuracy"], report=res["report"].to_dict())
        summary.append(res["report"].summary())
    else:
        summary.append("no model report: the data have no labels (the scores use the model's predictions)")
    if "scores" in res:
        result["scores"] = res["scores"].to_dict()
        result["methods"] = res["methods"]
        result["n_scored"] = res["n_scored"]
        head = f"scores on {res['n_scored']} random samples:" if stream else f"scores on {res['n_scored']} samples:"
        summary.append(head + "\n" + res["markdown"])
    if a.out:
        result["run"] = str(os.path.join(a.out, "run.json"))
    result["summary"] = "\n\n".join(summary)
    return result


def _cmd_explain(a: argparse.Namespace) -> dict:
    from .jobs import method_names, parse_target

    _need_data(a, "explain")
    methods = method_names(a.method)
    params = _method_params(a, methods)
    target = parse_target(a.target)
    engine, choice = getattr(a, "engine", "local"), None
    if engine == "auto":
        from .stream.ray_engine import choose_engine

        choice = choose_engine(a.model, a.data if a.data and not a.n else None, methods, target=target,
                               params=params, num_workers=a.workers, address=a.address, layout=a.layout,
                               labels=a.labels, safe_mode=not a.unsafe)
        sys.stderr.write(f"trustmap explain: {choice['line']}\n")
        engine = choice["engine"]
    if engine == "ray":
        return _cmd_explain_ray(a, methods, params, target, choice)
    stream = _streaming(a, "explain")
    if stream and a.n:
        raise SystemExit(_usage("explain", "--n picks samples of an in-memory run; a streamed run explains the "
                                           "whole file"))
    from .jobs.commands import explain

    res = explain(a.model, a.data, methods, a.out, dataset=a.dataset, split=a.split, target=target, params=params,
                  engine="stream" if stream else "memory", chunk_rows=a.chunk_rows, format=a.format,
                  layout=a.layout, labels=a.labels, classes=a.classes, n=a.n, plots=a.plots, seed=a.seed,
                  overwrite=a.overwrite, progress=not a.quiet, safe_mode=not a.unsafe, engine_choice=choice)
    rate = res["samples_per_s"]
    done = sum(res["computed"].values())
    summary = (f"{res['n']} samples, {len(methods)} method(s)" +
               (f": {done} chunk(s) computed, {sum(res['skipped'].values())} already done" if stream else "") +
               (f"; {rate:,.0f} samples/s" if rate else "") + f"; labels: {res['labels']}")
    return {"methods": methods, "n": res["n"], "engine": "stream" if stream else "memory", "labels": res["labels"],
            "params": res["record"]["params"], "outputs": {k: str(v) for k, v in res["outputs"].items()},
            "files": [str(f) for f in res["files"]], "computed": res["computed"], "skipped": res["skipped"],
            "samples_per_s": rate, "run": str(os.path.join(a.out, "run.json")), "summary": summary}


def _cmd_explain_ray(a: argparse.Namespace, methods, params, target, choice=None) -> dict:
    from .stream import ray_explain

    if not a.data:
        raise SystemExit(_usage("explain", "--engine ray needs --data FILE (.npy, .parquet, .h5 or .csv) that every "
                                           "Ray worker can read"))
    if a.n:
        raise SystemExit(_usage("explain", "--n picks samples of an in-memory run; --engine ray explains the whole "
                                           "file"))
    res = ray_explain(a.model, a.data, methods, a.out, target=target, params=params,
                      chunk_rows=a.chunk_rows, layout=a.layout, labels=a.labels,
                      address=a.address, num_workers=a.workers, num_gpus_per_worker=a.gpus_per_worker,
                      overwrite=a.overwrite, progress=not a.quiet, safe_mode=not a.unsafe, keep_pool=False,
                      engine_choice=choice)
    rate = res["samples_per_s"]
    summary = (f"{res['n']} samples, {len(res['files'])} method(s) on Ray ({res['workers']} worker(s), model loaded "
               f"{res['model_loads']} time(s)): {sum(res['computed'].values())} chunk(s) computed, "
               f"{sum(res['skipped'].values())} already done" + (f"; {rate:,.0f} samples/s" if rate else ""))
    return {"methods": list(res["files"]), "n": res["n"], "engine": "ray",
            "outputs": {k: str(v) for k, v in res["files"].items()},
            "files": [str(f) for f in res["files"].values()], "computed": res["computed"], "skipped": res["skipped"],
            "workers": res["workers"], "model_loads": res["model_loads"], "samples_per_s": rate,
            "run": str(os.path.join(a.out, "run.json")), "summary": summary}


def _locate_rows(a: argparse.Namespace):
    """Which data the localizer is fitted on, and a sentence saying so (never the classifier's training data
    when we can tell)."""
    from . import workflows

    if a.data:
        return None, "the test split", "--data (taken as data the classifier did not train on)"
    if a.split != "auto":
        return None, a.split, f"the {a.split} split of {a.dataset}" + (
            " (the classifier may have trained on it)" if a.split == "train" else "")
    hold = workflows.holdout_of(a.model, a.dataset)
    if hold is not None:
        return (hold["rows"], "train",
                f"the {len(hold['rows'])} validation rows of {a.dataset}'s train split that `trustmap train` set "
                "aside (never trained on)")
    return None, "test", f"the test split of {a.dataset} (not the classifier's training data)"


def _cmd_locate(a: argparse.Namespace) -> dict:
    from .localizer import distributed

    _need_data(a, "locate")
    stream = _streaming(a, "locate")
    if stream and (a.nproc > 1 or (distributed.env_world() or (0, 1))[1] > 1):
        raise SystemExit(_usage("locate", "a streamed locate runs in one process (drop --nproc / torchrun)"))
    if a.nproc > 1:  # start the processes through torchrun; rank 0 answers in JSON on its stdout
        for flag, path in (("--model", a.model), ("--data", a.data)):
            if path and not os.path.exists(path):
                raise SystemExit(_usage("locate", f"{flag} {path}: no such file"))
        argv = [w for act in a.locate_parser._actions
                if act.option_strings and act.dest not in ("help", "nproc", "json")
                for w in _as_flags(act, getattr(a, act.dest))]
        proc = distributed.launch(["-m", "trustmap.cli", "locate", *argv, "--json"], a.nproc, capture=True)
        res = distributed.last_json(proc.stdout or "")
        if proc.returncode != 0 or res is None:
            raise SystemExit(_usage("locate", f"the {a.nproc} processes failed (exit code {proc.returncode})"))
        return {**res, "summary": _locate_summary(res)}
    from .jobs.commands import locate

    rows, split, fit_on = _locate_rows(a)
    res = locate(a.model, a.data, a.out, dataset=a.dataset, split=split, rows=rows,
                 engine="stream" if stream else "memory", chunk_rows=a.chunk_rows, format=a.format,
                 fit_samples=a.fit_samples, layout=a.layout, labels=a.labels, classes=a.classes, seed=a.seed,
                 progress=not a.quiet, overwrite=a.overwrite, safe_mode=not a.unsafe, fit_note=fit_on,
                 epochs=a.epochs, target_r2=_number(a.target_r2, "target_r2"), tau=_taus(a.tau),
                 r_metric=a.r_metric, mode=a.mode, device=None if a.device == "cpu" else a.device, refine=a.refine,
                 **{k: v for k, v in (("objective", a.objective), ("backbone", a.backbone)) if v is not None})
    if res["rank"] != 0:  # under torchrun only rank 0 prints
        raise SystemExit(0)
    out = {k: v for k, v in res.items() if k != "record"}
    out.update(fit_on=fit_on, engine="stream" if stream else "memory", run=str(os.path.join(a.out, "run.json")))
    return {**out, "summary": _locate_summary(out)}


def _number(value, name):
    from .localizer.runner import parse_number

    return parse_number(value, name)


def _taus(value):
    from .localizer.runner import parse_taus

    return parse_taus(value)


def _locate_summary(res: dict) -> str:
    r2 = res.get("r2") or {"estimate": float("nan"), "low": float("nan"), "high": float("nan")}
    return (f"{res.get('n', '?')} samples located; tau = {res['tau']:.4g}; held-out R² = {r2['estimate']:.3f} "
            f"[{r2['low']:.3f}, {r2['high']:.3f}] (target {res['target_r2']:.3f}, "
            f"{'reached' if res['target_reached'] else 'NOT reached'} on the calibration split); "
            f"labels: {res.get('labels', '?')}"
            + (f"; masks refined per sample ({res['refine']} steps)" if res.get("refine") else "")
            + (f"; fitted on {res['fit_on']}" if res.get("fit_on") else ""))


def _as_flags(action: argparse.Action, value) -> list[str]:
    """The command-line words that give ``action`` the parsed ``value`` (to pass arguments on to torchrun)."""
    if value is None or value is False or value == action.default:
        return []
    if value is True and action.nargs == 0:
        return [action.option_strings[-1]]
    if isinstance(value, list):
        return [w for v in value for w in (action.option_strings[-1], str(v))]
    return [action.option_strings[-1], str(value)]


def _cmd_demo(a: argparse.Namespace) -> dict:
    from . import workflows

    if a.test_data and not a.data:
        raise SystemExit(_usage("demo", "--test-data needs --data"))
    dataset = a.dataset if (a.dataset or a.data) else "mnist1d"
    res = workflows.demo(out_dir=a.out, dataset=dataset, model=a.model, data=a.data, test_data=a.test_data,
                         layout=a.layout, methods=a.methods, quick=a.quick, n_explain=a.n, epochs=a.epochs,
                         localizer_epochs=a.localizer_epochs, seed=a.seed, progress=not a.quiet,
                         retrain=a.retrain, labels=a.labels, classes=a.classes, params=_method_params(a))
    return {**res.to_dict(), "run": str(os.path.join(a.out, "run.json")), "summary": res.summary(),
            "files": [str(res.report_path)] if res.report_path else []}


def _cmd_counterfactual(a: argparse.Namespace) -> dict:
    from .jobs.commands import counterfactual

    _need_data(a, "counterfactual")
    res = counterfactual(a.model, a.data, a.reference, a.out, dataset=a.dataset, split=a.split,
                         reference_labels=a.reference_labels, target=a.target, importance=a.importance,
                         layout=a.layout, reference_layout=a.reference_layout, labels=a.labels, classes=a.classes,
                         n=a.n, plots=a.plots, seed=a.seed, progress=not a.quiet, safe_mode=not a.unsafe)
    cf = res["result"]
    summary = (f"{res['n']} counterfactual(s): {int(cf.success.sum())} reach their target "
               f"({100 * (res['success_rate'] or 0):.0f} %), mean window {res['mean_window'] or 0:.1f} positions; "
               f"reference labels: {res['reference_labels']}")
    return {"n": res["n"], "success_rate": res["success_rate"], "mean_window": res["mean_window"],
            "original_prediction": cf.original_prediction, "new_prediction": cf.new_prediction,
            "new_probability": cf.new_probability, "target": cf.target, "success": cf.success,
            "labels": res["labels"], "reference_labels": res["reference_labels"],
            "files": [str(f) for f in res["files"]], "run": str(os.path.join(a.out, "run.json")), "summary": summary}


def _cmd_report(a: argparse.Namespace) -> dict:
    from .jobs import progress_bar
    from .report import build_report

    bar = progress_bar(1, f"report of {len(a.run_dir)} folder(s)", not a.quiet, unit="report")
    try:
        path = build_report(a.run_dir if len(a.run_dir) > 1 else a.run_dir[0], out=a.output)
    finally:
        if bar is not None:
            bar.update(1)
            bar.close()
    return {"report": str(path), "runs": list(a.run_dir), "files": [str(path)], "summary": f"report: {path}"}


def _usage(cmd: str, message: str) -> int:
    sys.stderr.write(f"trustmap {cmd}: error: {message} (see 'trustmap {cmd} --help')\n")
    _LAST_USAGE[:] = [message]
    return 2


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="trustmap", description="Which parts of an input a fitted CNN classifier relies on, "
                                                  "and how much they matter.")
    parser.add_argument("--version", action="version", version=f"trustmap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a reference CNN and write its model report",
                       description="Train a zoo network on a built-in dataset or a data file; writes "
                                   "model.safetensors + model.json, report.json/.txt, history.json, figures.")
    _data_args(p, dataset_default="mnist1d")
    p.add_argument("--test-data", help="labeled test file (with --data); default: report on the training data")
    p.add_argument("--arch", help="zoo architecture (default: chosen from the data's shape)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the architecture's recipe)")
    p.add_argument("--batch-size", type=int, help="default: the architecture's recipe")
    p.add_argument("--lr", type=float, help="learning rate (default: the architecture's recipe)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (default: the recipe)")
    _common(p, out_default="runs/train")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="model report: accuracy, class-wise accuracy, ROC-AUC, confusion, P/R/F1",
                       description="Evaluate a model (.keras, .h5, .onnx, .safetensors) on labeled data.")
    p.add_argument("--model", required=True, help="model file")
    p.add_argument("--unsafe", action="store_true", help="allow Keras Lambda layers (runs code from the file)")
    p.add_argument("--split", default="test", help="split of a built-in dataset (default: test)")
    p.add_argument("--explanations", metavar="DIR", nargs="+",
                   help="also score the maps in DIR(s) (folders of `trustmap explain` / `locate`, in memory or "
                        "streamed); without labels the model's predictions are the targets")
    p.add_argument("--metrics", help="comma-separated metric names (default: all that apply)")
    p.add_argument("--frac", type=float, default=0.3, help="share of the map kept for drop/increase (default 0.3)")
    p.add_argument("--score-samples", type=int, default=2000,
                   help="when streaming: score the explanations on this many random samples (default 2000)")
    _data_args(p, dataset_default=None)
    _stream_args(p, maps=False)
    _common(p, out_default=None)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("explain", help="explain a model's predictions with one or more methods",
                       description="Write one Attribution (NPZ + JSON) per method and PNG overlays.")
    p.add_argument("--model", required=True, help="model file (.keras, .h5, .onnx, .safetensors)")
    from .explain import list_methods

    p.add_argument("--method", default="gradcam",
                   help="comma-separated method names: " + ", ".join(list_methods()))
    p.add_argument("--target", help="'predicted' (default), 'label', a class index, or a file of one class index "
                                    "per sample (.npy or one per line)")
    p.add_argument("--n", type=int, help="explain only the first N samples")
    p.add_argument("--plots", type=int, default=4, help="PNG overlays per method (default 4)")
    p.add_argument("--split", default="test", help="split of a built-in dataset (default: test)")
    p.add_argument("--unsafe", action="store_true", help="allow Keras Lambda layers (runs code from the file)")
    _param_args(p)
    _data_args(p, dataset_default=None)
    _stream_args(p)
    g = p.add_argument_group("Ray (many workers or machines)")
    g.add_argument("--engine", choices=["local", "ray", "auto"], default="local",
                   help="'ray': explain --data on a pool of Ray workers, each loading the model once; writes "
                        "METHOD.parquet folders whatever --format says. 'auto': Ray only where it pays (rows x "
                        "the measured cost per row against Ray's start-up; the rule and the choice on one line "
                        "of stderr, and in run.json). Default: local")
    g.add_argument("--address", help="Ray cluster to join ('auto', host:port, ray://host:10001); default: start a "
                                     "local Ray for this run")
    g.add_argument("--workers", type=int, default=2, help="Ray workers (default 2)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs per Ray worker (fractions share a GPU; default 0: CPU workers)")
    _common(p, out_default="runs/explain")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("locate", help="fit the TRUST localizer (dnn-locate) and locate the features",
                       description="Fit the TRUST localizer on data the classifier did not train on (the "
                                   "validation rows `trustmap train` set aside, else the test split of a built-in "
                                   "dataset, or --data) and write the localizer, the masks and the R² path. "
                                   "Without labels the model's predictions stand in for them.")
    p.add_argument("--model", required=True, help="model file (.keras, .h5, .onnx, .safetensors)")
    p.add_argument("--target-r2", default="auto", help="'auto' or a number in (0, 1] (default: auto)")
    p.add_argument("--tau", default="auto", help="'auto' or comma-separated τ values")
    p.add_argument("--r-metric", default="auto", choices=["auto", "prob", "acc", "loss"],
                   help="risk behind R²: 'prob' (1 - p of the label; the default of --mode trust), 'acc' (0/1 error; the paper's), 'loss' (cross-entropy); 'auto' picks the mode's default")
    p.add_argument("--split", default="auto",
                   help="built-in dataset: 'auto' (the validation rows recorded by `trustmap train`, else the "
                        "test split), 'test' or 'train'")
    p.add_argument("--mode", default="trust", help="'trust' (default) or 'paper' (the original procedure)")
    p.add_argument("--objective", default=None, choices=["remove", "preserve", "prior", "paper"],
                   help="what the mask is trained for: 'remove' (necessity: removing the region spoils the "
                        "prediction; the default) or 'preserve' (sufficiency: keeping the region alone keeps it; "
                        "the drop/increase protocol's sense); default: the mode's")
    p.add_argument("--backbone", default=None, choices=["unet", "strided", "dilated", "paper"],
                   help="the mask network: 'unet' (default), 'strided' (about 6x faster masks, as good on the "
                        "distractor task, weaker with --objective preserve on short signals), 'dilated', "
                        "'paper'; default: the mode's")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--refine", type=int, default=0,
                   help="refine each sample's mask by N gradient steps after the mask network (Localizer.locate("
                        "refine=N); costs N forward+backward passes of the model per sample); default 0")
    p.add_argument("--unsafe", action="store_true", help="allow Keras Lambda layers (runs code from the file)")
    p.add_argument("--fit-samples", type=int, default=20000,
                   help="fit the localizer on at most this many random samples, then locate all (default 20000)")
    p.add_argument("--nproc", type=int, default=1,
                   help="train data-parallel in N processes on this machine, started through torchrun (or start "
                        "`torchrun --nproc-per-node N -m trustmap.cli locate ...` yourself); default 1")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where the model trains (cuda under torchrun: cuda:LOCAL_RANK with nccl; default: cpu)")
    _data_args(p, dataset_default=None)
    _stream_args(p)
    _common(p, out_default="runs/locate")
    p.set_defaults(func=_cmd_locate, locate_parser=p)

    p = sub.add_parser("demo", help="the main job: train, localize, explain, score, write the HTML report",
                       description="Train (or reuse) a reference CNN on a built-in dataset (default: MNIST-1D), "
                                   "fit the TRUST localizer, run every registered explainer on test samples, "
                                   "score them and write RUN_DIR/report.html. With --model and --data: your own "
                                   "model and data files.")
    _data_args(p, dataset_default="mnist1d")
    p.add_argument("--model", help="your model file (.keras, .h5, .onnx, .safetensors) instead of training one")
    p.add_argument("--test-data", help="labeled file of samples to explain (with --data; default: 30%% of --data)")
    p.add_argument("--methods", help="comma-separated explainers (default: every registered one)")
    p.add_argument("--quick", action="store_true", help="the smallest setting (seconds; for tests and CI)")
    p.add_argument("--n", type=int, help="test samples to explain and score (default 200; --quick: 24)")
    p.add_argument("--epochs", type=int, help="maximum training epochs (default: the architecture's recipe)")
    p.add_argument("--localizer-epochs", type=int, help="localizer training epochs (default 20; --quick: 2)")
    p.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    _param_args(p)
    _common(p, out_default="runs/demo")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("counterfactual", help="Native-Guide counterfactuals: the smallest window, copied from a real "
                                              "sample of another class, that flips the prediction",
                       description="For each sample, copy the window with the most evidence from its nearest "
                                   "unlike neighbour in --reference (real samples, e.g. the training data) until "
                                   "the model predicts the target class. Writes counterfactuals.npz (+ .json), "
                                   "PNG overlays, samples.npz and run.json; `trustmap report OUT` shows them.")
    p.add_argument("--model", required=True, help="model file (.keras, .h5, .onnx, .safetensors)")
    p.add_argument("--reference", required=True, help="data file of real samples the neighbours come from "
                                                      "(e.g. the training data; same sample shape as --data)")
    p.add_argument("--reference-labels", help="labels of --reference (.npy or one per line); default: the file's "
                                              "own labels, else the model's predictions on it")
    p.add_argument("--reference-layout", help="layout of --reference's arrays (default: --layout)")
    p.add_argument("--target", help="the class to reach: a class index, 'label', or a file of one class index per "
                                    "sample (default: each sample's second most probable class)")
    p.add_argument("--importance", default="saliency",
                   help="explainer giving the neighbour's evidence that picks the window (default: saliency)")
    p.add_argument("--n", type=int, help="only the first N samples")
    p.add_argument("--plots", type=int, default=4, help="PNG overlays (default 4)")
    p.add_argument("--split", default="test", help="split of a built-in dataset (default: test)")
    p.add_argument("--unsafe", action="store_true", help="allow Keras Lambda layers (runs code from the file)")
    _data_args(p, dataset_default=None)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("-o", "--out", default="runs/counterfactual",
                   help="output directory (default: runs/counterfactual)")
    p.set_defaults(func=_cmd_counterfactual)

    p = sub.add_parser("report", help="build the self-contained HTML report of one or more run folders",
                       description="Build one self-contained HTML report (figures and CSS inline, no external "
                                   "requests) from run folders written by any trustmap command: a demo folder, "
                                   "or explain + locate + evaluate folders of the same model and data. Sections "
                                   "appear for what the folders hold.")
    p.add_argument("run_dir", nargs="+", help="run folder(s), e.g. runs/explain runs/locate runs/evaluate")
    p.add_argument("-o", "--output", help="where to write the HTML (default: FIRST_DIR/report.html)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_report)
    _harden(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    with _one_line_warnings():
        return _guarded(argv)


def _run(args: argparse.Namespace) -> int:
    func: Callable[[argparse.Namespace], dict] = args.func
    result = func(args)
    if args.json:
        from ._io import to_jsonable

        result = {k: v for k, v in result.items() if k != "summary"}
        sys.stdout.write(json.dumps(to_jsonable(result), indent=2) + "\n")
    else:
        if "summary" in result:
            sys.stdout.write(result["summary"] + "\n")
        for f in result.get("files", []):
            sys.stdout.write(f"wrote {f}\n")
    return 0


# ---- the error wrapper: typed errors, usage errors, Ctrl-C, warnings --------------------------------
#: the last usage-error message (for the --json error object)
_LAST_USAGE: list[str] = []


def _guarded(argv: list[str]) -> int:
    """Parse and run; every typed error becomes one line on stderr and exit 2 (with ``--json`` also
    ``{"error": {...}}`` on stdout), Ctrl-C one line and exit 130, never a traceback."""
    from .errors import TrustmapError

    want_json = "--json" in argv
    cmd = next((a for a in argv if not a.startswith("-")), "")
    _LAST_USAGE.clear()
    args = None
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors, --help, --version: argparse's own exit, kept as a SystemExit
        if exc.code == 2 and want_json and _LAST_USAGE:
            _json_error("UsageError", _LAST_USAGE[-1], None, None, None, f"see 'trustmap {cmd} --help'")
        raise
    try:
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        cmd = args.command
        _check_out(args)
        return _run(args)
    except TrustmapError as exc:
        sys.stderr.write(f"trustmap {cmd}: error: {_one_line(str(exc))}\n")
        if want_json:
            _json_error(type(exc).__name__, str(exc), exc.parameter, exc.expected, exc.got, exc.fix)
        return 2
    except KeyboardInterrupt:
        resumes = args is not None and (getattr(args, "command", "") == "locate" or getattr(args, "stream", False)
                                        or getattr(args, "engine", "local") == "ray")
        sys.stderr.write(f"trustmap {cmd}: interrupted" + ("; rerun to resume\n" if resumes else "\n"))
        if want_json:
            _json_error("KeyboardInterrupt", "interrupted", None, None, None,
                        "rerun the same command to resume" if resumes else "rerun the command")
        return 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code == 2 and want_json and _LAST_USAGE:
            _json_error("UsageError", _LAST_USAGE[-1], None, None, None,
                        f"see 'trustmap {cmd} --help'" if cmd else "see 'trustmap --help'")
        return code
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        sys.stderr.write(f"trustmap {cmd}: error: {type(exc).__name__}: {_one_line(str(exc))}\n")
        if want_json:
            _json_error(type(exc).__name__, str(exc), "--out", "a writable output location", exc.filename,
                        "check the path and its permissions")
        return 2


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _json_error(kind: str, message: str, parameter, expected, got, fix) -> None:
    from .errors import _short

    err = {"type": kind, "parameter": parameter, "expected": expected,
           "got": None if got is None else _short(got), "fix": fix, "message": _one_line(message)}
    sys.stdout.write(json.dumps({"error": err}, indent=2) + "\n")


class _one_line_warnings:
    """Inside ``main()``, a Python warning prints as one ``warning: ...`` line on stderr."""

    def __enter__(self):
        import warnings

        self._saved = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            (file or sys.stderr).write(f"warning: {_one_line(str(message))}\n")

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        import warnings

        warnings.showwarning = self._saved


def _bounded(cast, minimum, what: str):
    """An argparse type: ``cast(text)``, finite and ``>= minimum``, else a usage error saying ``what``."""
    import math

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(v) or v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    parse.__name__ = f"{cast.__name__} >= {minimum}"
    return parse


positive_int = _bounded(int, 1, "a positive integer")
nonnegative_int = _bounded(int, 0, "an integer >= 0")
nonnegative_float = _bounded(float, 0, "a finite number >= 0")


#: counts that must be >= 1 / >= 0, by argparse dest
_POSITIVE = {"n", "chunk_rows", "workers", "epochs", "batch_size", "score_samples", "fit_samples", "nproc",
             "localizer_epochs"}
_NONNEGATIVE = {"plots", "patience", "seed"}


def _harden(parser: argparse.ArgumentParser) -> None:
    """Give every count option a checking type (non-positive ``--n`` etc. are usage errors), on the
    parser and all its sub-commands."""
    for act in parser._actions:
        if isinstance(act, argparse._SubParsersAction):
            for sub in act.choices.values():
                _harden(sub)
        elif act.dest in _POSITIVE and act.type is int:
            act.type = positive_int
        elif act.dest in _NONNEGATIVE and act.type is int:
            act.type = nonnegative_int
        elif act.dest == "gpus_per_worker" and act.type is float:
            act.type = nonnegative_float


def _check_out(args: argparse.Namespace) -> None:
    """``--out`` must be a folder we can create or write into: not a file, not under a file, writable."""
    from pathlib import Path

    from .errors import InputError

    out = getattr(args, "out", None)
    if not out:
        return
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError("is a file, not a folder", parameter="--out", expected="a folder (new or existing)",
                         got=str(p), fix="pass a folder path, e.g. --out runs/x (or remove the file)")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError("lies under a file", parameter="--out", expected="a folder path",
                         got=f"{p} ({probe} is a file)", fix="pick a folder path that is not inside a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise InputError("is not writable", parameter="--out", expected="a folder you can write to",
                         got=str(probe), fix="pick another --out, or fix the folder's permissions")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
