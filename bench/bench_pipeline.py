"""Issue 2 figures: end-to-end `twinflow run` per framework, and the local
pipeline's orchestration overhead against the same step functions called
directly in one process, both measured in this run.

Usage: .venv/bin/python bench/bench_pipeline.py [--repeats N]

"cold" is the same run with TWINFLOW_WARM_STEPS=0 (a new interpreter per task).
Prints a Markdown table (copy it into bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = 8  # start-run, ingest, transform, train, evaluate, compress, push, finish-run


def _env(workdir: Path, warm: bool = True) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    env["TWINFLOW_HOME"] = str(workdir / ".twinflow")
    env["PYTHONPATH"] = str(ROOT)
    env["TWINFLOW_WARM_STEPS"] = "1" if warm else "0"
    return env


def pipeline_seconds(framework: str, warm: bool = True) -> float:
    """Wall time of `twinflow run -q` (a fresh store) as the user runs it.

    ``warm=False`` starts every task in a cold interpreter (TWINFLOW_WARM_STEPS=0).
    """
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", "-f", framework],
                       cwd=tmp, env=_env(Path(tmp), warm), check=True, capture_output=True)
        return time.perf_counter() - start


def inprocess_seconds(framework: str) -> float:
    """Wall time of the same step functions in one fresh process (imports included)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "bench" / "inprocess.py"), framework, tmp],
                       cwd=tmp, env=_env(Path(tmp)), check=True, capture_output=True)
        return time.perf_counter() - start


def bake_off(repeats: int) -> None:
    """`--framework both` against `torch` then `tensorflow` back to back, same run."""
    print("| `--framework both` s (median) | torch + tensorflow back to back s (median) | "
          "ratio |")
    print("|---|---|---|")
    both, pair = [], []
    for _ in range(repeats):  # interleaved
        both.append(pipeline_seconds("both"))
        pair.append(pipeline_seconds("torch") + pipeline_seconds("tensorflow"))
    b, p = statistics.median(both), statistics.median(pair)
    print(f"| {b:.1f} | {p:.1f} | {b / p:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frameworks", nargs="+", default=["torch", "tensorflow"])
    parser.add_argument("--both", action="store_true",
                        help="issue 7: --framework both against the two runs back to back")
    args = parser.parse_args()
    if args.both:
        bake_off(args.repeats)
        return
    print("| framework | `twinflow run` s | in-process s | ratio | overhead s/task | "
          "cold-task `twinflow run` s | cold overhead s/task |")
    print("|---|---|---|---|---|---|---|")
    for fw in args.frameworks:
        warm, cold, base = [], [], []
        for _ in range(args.repeats):  # interleaved, medians
            warm.append(pipeline_seconds(fw))
            base.append(inprocess_seconds(fw))
            cold.append(pipeline_seconds(fw, warm=False))
        w, c, b = (statistics.median(v) for v in (warm, cold, base))
        print(f"| {fw} | {w:.1f} | {b:.1f} | {w / b:.2f}x | {(w - b) / TASKS:.2f} | "
              f"{c:.1f} | {(c - b) / TASKS:.2f} |", flush=True)


if __name__ == "__main__":
    main()
