"""`twinflow ui` starts a real `mlflow server` on the pipeline's store, on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import requests
from mlflow.tracking import MlflowClient

from components.tracking import experiment_id
from tests.conftest import cli_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ui_serves_the_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}"
    (tmp_path / ".twinflow").mkdir()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id("ui-check"), run_name="visible"):
            mlflow.log_metric("answer", 42)
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", "--port", str(port)],
                            cwd=tmp_path, env=cli_env(tmp_path), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            raise AssertionError("mlflow server did not become ready in 90 s")
        client = MlflowClient(tracking_uri=base)
        exp = client.get_experiment_by_name("ui-check")
        assert exp is not None
        [run] = client.search_runs([exp.experiment_id])
        assert run.info.run_name == "visible" and run.data.metrics["answer"] == 42
        assert requests.get(base, timeout=5).status_code == 200  # the UI's page itself
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
