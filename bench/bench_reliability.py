"""Issue 17 figures: how long a lost tracking server takes to fail a run.

1. ``request``: one MLflow request (``MlflowClient.search_experiments``) to a port where
   nothing listens, with MLflow's own retry settings (7 retries, backoff factor 2)
   against twinflow's bound (``components.tracking.bound_retries``, the default
   ``TWINFLOW_TRACKING_RETRY_SECONDS=60``), each in a fresh process.
2. ``run``: a real ``mlflow server`` on loopback, ``twinflow run --tracking-uri`` on
   digits (torch, 500 epochs so that train is running), the server's process group
   SIGKILLed 3 s into train; the seconds from the kill to the CLI's exit, and its last
   line.

Usage: .venv/bin/python bench/bench_reliability.py [--sections request run]
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from mlflow.tracking import MlflowClient

from components.net import free_port

ROOT = Path(__file__).resolve().parent.parent
ONE_REQUEST = """
import sys, time
from mlflow.tracking import MlflowClient
if sys.argv[2] == "twinflow":
    from components.tracking import bound_retries
    bound_retries()
start = time.perf_counter()
try:
    MlflowClient(tracking_uri=sys.argv[1]).search_experiments()
except Exception as err:
    print(f"{time.perf_counter() - start:.1f} {type(err).__name__}")
"""


def request_figures() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    print("| retry settings | seconds until one request fails | error |\n|---|---|---|")
    for side in ("mlflow", "twinflow"):
        out = subprocess.run([sys.executable, "-c", ONE_REQUEST, dead, side], env=env,
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
        seconds, error = out.split()
        label = ("MLflow's defaults (7 retries, backoff 2)" if side == "mlflow" else
                 "twinflow's bound (60 s budget: 5 retries, backoff 1)")
        print(f"| {label} | {seconds} | {error} |", flush=True)


def start_mlflow_server(folder: Path, port: int, backend: str = "") -> subprocess.Popen[bytes]:
    """A real `mlflow server` on loopback over ``backend`` (default: SQLite in ``folder``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", backend or f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        cwd=folder, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return proc
        except requests.RequestException:  # not up yet, or slow to answer
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # not left running after a failed start
    raise RuntimeError("mlflow server did not start")


def run_figure() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        server = start_mlflow_server(folder, port)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
        env.update(TWINFLOW_HOME=str(folder / ".twinflow"), PYTHONPATH=str(ROOT))
        cli = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--framework",
                                "torch", "--data", "sklearn:digits", "--epochs", "500",
                                "--tracking-uri", uri], cwd=folder, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        client = MlflowClient(tracking_uri=uri)
        while cli.poll() is None and not client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                filter_string="tags.`twinflow.step` = 'train' and attributes.status = 'RUNNING'"):
            time.sleep(1)
        time.sleep(3)
        os.killpg(server.pid, signal.SIGKILL)
        killed = time.perf_counter()
        _, stderr = cli.communicate()
        seconds = time.perf_counter() - killed
        server.wait()
        last = stderr.strip().splitlines()[-1]
        print(f"\n| server killed during train | CLI exit code | seconds to exit | last line |\n"
              f"|---|---|---|---|\n| `twinflow run --tracking-uri {uri}` | {cli.returncode} | "
              f"{seconds:.1f} | `{last}` |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["request", "run"],
                        choices=["request", "run"])
    args = parser.parse_args()
    if "request" in args.sections:
        request_figures()
    if "run" in args.sections:
        run_figure()


if __name__ == "__main__":
    main()
