"""Issue 17 figure: N `twinflow run` at once on one store, against N one after another.

For each store (the embedded SQLite file; a real ``mlflow server`` over PostgreSQL,
as the cluster's MLflow is), in a fresh folder:

1. one warm-up run (it creates the store; not counted);
2. ``--sequential`` runs one after another: the mean wall time of one run, ``t1``;
3. N runs started together, N = 2, 4, 8: their wall time until the last one exits,
   whether all succeeded, and the ratio against ``N x t1`` (what the same N runs take
   one after another, from the runs measured in step 2 of the same benchmark run).

Every run is `twinflow run -q --framework torch --data sklearn:iris --epochs 2`
(all features: ingest, statistics, transform, train, compress, evaluate, push).
The machine has 2 cores, so N runs at once cannot beat N/2 x t1 of CPU work.

Usage: .venv/bin/python bench/bench_concurrency.py [--stores sqlite postgresql]
       [--counts 2 4 8] [--sequential 2]
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_reliability import start_mlflow_server  # noqa: E402
from components.net import free_port  # noqa: E402
from tests.postgres import create_database, running_postgres  # noqa: E402

RUN = [sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework", "torch",
       "--data", "sklearn:iris", "--epochs", "2"]


def _env(folder: Path, uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    env.update(TWINFLOW_HOME=str(folder / ".twinflow"), PYTHONPATH=str(ROOT))
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    return env


def _at_once(folder: Path, uri: str, n: int) -> tuple[float, int]:
    """Seconds until all of ``n`` runs started together exit; how many succeeded."""
    start = time.perf_counter()
    procs = [subprocess.Popen(RUN, cwd=folder, env=_env(folder, uri),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - start
    for p, err in zip(procs, errors, strict=True):
        if p.returncode != 0:
            print(f"<!-- a run failed: {err.strip().splitlines()[-1:]} -->", flush=True)
    return seconds, sum(p.returncode == 0 for p in procs)


@contextlib.contextmanager
def _store(kind: str, folder: Path) -> Iterator[str]:
    """The tracking URI of a fresh store of ``kind`` ('' for the embedded SQLite one)."""
    if kind == "sqlite":
        yield ""
        return
    with running_postgres() as url:
        backend = create_database(url, f"mlflow_{uuid.uuid4().hex[:8]}")
        port = free_port()
        server = start_mlflow_server(folder, port, backend)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def measure(kind: str, counts: list[int], sequential: int) -> None:
    with tempfile.TemporaryDirectory() as name, _store(kind, Path(name)) as uri:
        folder = Path(name)
        _at_once(folder, uri, 1)  # creates the store
        singles = [_at_once(folder, uri, 1)[0] for _ in range(sequential)]
        t1 = statistics.mean(singles)
        print(f"\n**{kind}**: one run alone {t1:.1f} s (mean of {sequential}: "
              f"{', '.join(f'{s:.1f}' for s in singles)})\n\n"
              "| N at once | succeeded | wall s | N one after another (N x t1) s | ratio |\n"
              "|---|---|---|---|---|", flush=True)
        for n in counts:
            wall, ok = _at_once(folder, uri, n)
            print(f"| {n} | {ok}/{n} | {wall:.1f} | {n * t1:.1f} | {wall / (n * t1):.2f} |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    parser.add_argument("--counts", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--sequential", type=int, default=2)
    args = parser.parse_args()
    for kind in args.stores:
        measure(kind, args.counts, args.sequential)


if __name__ == "__main__":
    main()
