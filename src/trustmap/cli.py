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
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _common(p: argparse.ArgumentParser, *, out_default: str | None) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default=out_default,
                   help=f"output directory (default: {out_default})" if out_default else
                   "output directory for the report files (default: print only)")


def _data_args(p: argparse.ArgumentParser, *, dataset_default: str | None) -> None:
    from .data import NAMES

    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", choices=NAMES, default=None,
                   help="built-in dataset" + (f" (default: {dataset_default})" if dataset_default else ""))
    g.add_argument("--data", help="data file: .npz, .npy, .csv (MIT-BIH Kaggle layout or a label column), "
                                  ".parquet, .h5")
    p.add_argument("--layout", help="layout of the data file's arrays, e.g. NLC or NCHW (when ambiguous)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _cmd_train(a: argparse.Namespace) -> dict:
    from . import workflows

    dataset = a.dataset if (a.dataset or a.data) else "mnist1d"
    res = workflows.train(dataset=dataset, data=a.data, test_data=a.test_data, arch=a.arch, out_dir=a.out,
                          epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, patience=a.patience, seed=a.seed,
                          layout=a.layout, progress=not a.quiet)
    return {**res.to_dict(), "summary": res.report.summary()}


def _cmd_evaluate(a: argparse.Namespace) -> dict:
    from . import workflows
    from .models import load_model

    if not (a.dataset or a.data):
        raise SystemExit(_usage("evaluate", "one of --dataset or --data is required"))
    model = load_model(a.model, safe_mode=not a.unsafe)
    report, files = workflows.evaluate(model, dataset=a.dataset, data=a.data, split=a.split, out_dir=a.out,
                                       layout=a.layout, seed=a.seed)
    return {"accuracy": report.accuracy, "report": report.to_dict(), "files": [str(f) for f in files],
            "summary": report.summary()}


def _cmd_demo(a: argparse.Namespace) -> dict:
    from . import workflows

    res = workflows.demo(out_dir=a.out, dataset=a.dataset or "mnist1d", epochs=a.epochs, seed=a.seed,
                         progress=not a.quiet, retrain=a.retrain)
    return {**res.to_dict(), "summary": res.report.summary()}


def _usage(cmd: str, message: str) -> int:
    sys.stderr.write(f"trustmap {cmd}: error: {message} (see 'trustmap {cmd} --help')\n")
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
    _data_args(p, dataset_default=None)
    _common(p, out_default=None)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("demo", help="the main job on built-in data (trains or reuses the reference CNN)",
                       description="Train (or reuse) the MNIST-1D reference CNN and write its report.")
    p.add_argument("--dataset", default="mnist1d", help="built-in dataset (default: mnist1d)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the architecture's recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")
    _common(p, out_default="runs/demo")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import TrustmapError

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], dict] = args.func
    try:
        result = func(args)
    except TrustmapError as exc:
        sys.stderr.write(f"trustmap {args.command}: error: {exc}\n")
        return 2
    except SystemExit as exc:
        return int(exc.code or 0)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
