"""`twinflow ui` starts a real `mlflow server` on the pipeline's store, on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import requests
from mlflow.tracking import MlflowClient

from components.tracking import experiment_id
from tests.browser import UiServer


def test_ui_serves_the_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}"
    (tmp_path / ".twinflow").mkdir()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id("ui-check"), run_name="visible"):
            mlflow.log_metric("answer", 42)
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with UiServer(tmp_path) as server:
        base = server.base
        client = MlflowClient(tracking_uri=base)
        exp = client.get_experiment_by_name("ui-check")
        assert exp is not None
        [run] = client.search_runs([exp.experiment_id])
        assert run.info.run_name == "visible" and run.data.metrics["answer"] == 42
        assert requests.get(base, timeout=5).status_code == 200  # the UI's page itself
