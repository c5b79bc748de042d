"""Issue 15 figure: `twinflow run --runner docker` against the subprocess runner.

Per framework, in one benchmark run and each in a fresh folder: `twinflow run -q
--framework FW --data sklearn:digits --epochs 2` with the subprocess runner (warm
interpreters, the default) and with `--runner docker` (every task a container of its
image, a run-scoped mlflow server), alternating, ``--rounds`` times. Printed: the
median wall time of each, the ratio, and the overhead per task, (docker - subprocess)
/ tasks, where the tasks are the pipeline's KFP tasks (start-run, the steps that ran,
finish-run). The images must be built (`twinflow images build`).

Usage: .venv/bin/python bench/bench_docker_runner.py [--frameworks torch tensorflow]
       [--rounds 2]
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent


def _once(framework: str, runner: str) -> tuple[float, int]:
    """Wall seconds of one run, and its number of KFP tasks."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
        env.update(TWINFLOW_HOME=str(folder / ".twinflow"), PYTHONPATH=str(ROOT))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework",
                        framework, "--data", "sklearn:digits", "--epochs", "2", "--runner",
                        runner], cwd=folder, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        client = MlflowClient(tracking_uri=f"sqlite:///{folder / '.twinflow' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("twinflow")
        assert exp is not None
        steps = [r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("mlflow.parentRunId")]
        return seconds, len(steps) + 2  # + start-run and finish-run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frameworks", nargs="+", default=["torch", "tensorflow"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| framework | subprocess s (median) | docker s (median) | ratio | tasks | "
          "overhead per task s |\n|---|---|---|---|---|---|")
    for framework in args.frameworks:
        walls: dict[str, list[float]] = {"subprocess": [], "docker": []}
        tasks = 0
        for _ in range(args.rounds):
            for runner in walls:
                seconds, tasks = _once(framework, runner)
                walls[runner].append(seconds)
        sub, dock = (statistics.median(walls[r]) for r in ("subprocess", "docker"))
        print(f"| {framework} | {sub:.1f} ({', '.join(f'{s:.1f}' for s in walls['subprocess'])})"
              f" | {dock:.1f} ({', '.join(f'{s:.1f}' for s in walls['docker'])}) | "
              f"{dock / sub:.2f} | {tasks} | {(dock - sub) / tasks:.1f} |", flush=True)


if __name__ == "__main__":
    main()
