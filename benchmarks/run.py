"""Run every benchmarks/bench_*.py and write their sections into one results file.

    make bench                       # all benchmarks, peers included, writes benchmarks/RESULTS.md
    python benchmarks/run.py --only floor --out /tmp/r.md

Each bench module has ``run(quick: bool) -> str`` returning a markdown section.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def machine() -> str:
    import torch

    try:
        import numpy as np
        np_v = np.__version__
    except ImportError:  # pragma: no cover
        np_v = "?"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, numpy {np_v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--only", nargs="*", help="bench names without the bench_ prefix")
    ap.add_argument("--quick", action="store_true", help="fewer inputs and repeats (smoke run)")
    a = ap.parse_args(argv)
    names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    if a.only:
        names = [n for n in names if n in a.only]
    sections = []
    for name in names:
        t0 = time.perf_counter()
        mod = importlib.import_module(f"bench_{name}")
        sections.append(mod.run(quick=a.quick).rstrip() + f"\n\n_(bench_{name} took {time.perf_counter() - t0:.0f} s)_\n")
        print(f"bench_{name}: done", file=sys.stderr)
    cmd = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    head = (f"# Benchmark results\n\nProduced by `make bench` (here: `{cmd.strip()}`) on "
            f"{dt.date.today().isoformat()}.\n\nMachine: {machine()}.\n\n"
            "Ratios are wall time over the *physical floor*: the batched forward (or forward+backward) "
            "passes the method needs, timed in the same process. Peers run in the same process, with `.venv`'s "
            "torch, from `.venv-bench/site` (installed without dependencies: benchmarks/requirements-peers.txt)."
            "\n\n")
    Path(a.out).write_text(head + "\n".join(sections))
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
