"""Report build time: `trustmap report RUN_DIR` on the default demo's run directory.

    python benchmarks/bench_report.py --run-dir runs/demo                       # this checkout
    python benchmarks/bench_report.py --run-dir runs/demo --before-src OLD/src  # and another one

Each build is a fresh process (`python -m trustmap.cli report RUN_DIR -o OUT`), as a user runs it,
timed wall-clock, best of ``--repeat``; with one drawing process (``TRUSTMAP_REPORT_WORKERS=1``, the
default on up to 3 CPUs) and with two forked drawing processes. Without ``--run-dir`` the default demo (or the
quick one with ``--quick``) is run first into a temporary folder with ``report=False``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def build_time(run_dir: Path, src: Path, workers: str | None, repeat: int) -> float:
    best = float("inf")
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    if workers is None:
        env.pop("TRUSTMAP_REPORT_WORKERS", None)
    else:
        env["TRUSTMAP_REPORT_WORKERS"] = workers
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "trustmap.cli", "report", str(run_dir), "-o",
                            str(Path(tmp) / "report.html")], env=env, check=True, capture_output=True)
            best = min(best, time.perf_counter() - t0)
    return best


def section(run_dir: Path, before_src: Path | None, repeat: int, cmd: str) -> str:
    rows = []
    if before_src is not None:
        rows.append(("before (" + str(before_src) + ")", build_time(run_dir, before_src, None, repeat)))
    rows.append(("this checkout, 1 drawing process", build_time(run_dir, SRC, "1", repeat)))
    rows.append(("this checkout, 2 forked drawing processes", build_time(run_dir, SRC, "2", repeat)))
    n = len(list((run_dir / "attributions").glob("*.npz")))
    out = ["## Report build time (issue 15)", "",
           f"`{cmd}` — `trustmap report` on a run directory with {n} attributions, wall-clock seconds of a fresh "
           f"process, best of {repeat}. Shared 2-core machine (other jobs running): absolute seconds vary by "
           "±30 %.", "", "| build | seconds |", "|---|---:|"]
    out += [f"| {name} | {t:.1f} |" for name, t in rows]
    return "\n".join(out) + "\n"


def run(quick: bool = False) -> str:
    from trustmap import workflows

    with tempfile.TemporaryDirectory() as tmp:
        workflows.demo(out_dir=tmp, quick=quick, progress=False, report=False)
        return section(Path(tmp), None, 1 if quick else 2, "python benchmarks/run.py --only report")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--before-src", type=Path, help="the src/ folder of another checkout to compare with")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    cmd = "python benchmarks/bench_report.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.run_dir is None:
        print(run(a.quick))
    else:
        print(section(a.run_dir, a.before_src, a.repeat, cmd.strip()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
