"""Shared fixtures: a real MLflow SQLite store and real ingested/transformed digits."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from components.config import Framework, IngestConfig, TrainConfig
from components.ingest.core import run_ingest
from components.tags import KIND_TAG, PIPELINE_KIND
from components.tracking import experiment_id
from components.train.core import run_train
from components.transform.core import run_transform
from pipelines.warm_launcher import STRICT_ENV

REPO = Path(__file__).resolve().parents[1]
# Session fixtures of real pipeline runs shared by several modules.
pytest_plugins = ["tests.registered_runs", "tests.postgres"]
SHARED = REPO.parent / "shared"
# A warm task interpreter that fails to preload fails its tasks instead of running them
# cold: in tests a broken preload list is a bug, not a slow run (pipelines/warm.py).
WARM_STRICT = {STRICT_ENV: "1"}
os.environ.update(WARM_STRICT)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite MLflow store for the session; tests use distinct model names."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("TWINFLOW_HOME", str(root / ".twinflow"))
        mlflow.set_tracking_uri(uri)
        # An experiment whose artifacts live beside the test store, not in ./mlruns.
        mlflow.set_experiment(experiment_id=experiment_id("tests"))
        yield uri


@pytest.fixture
def active_run(store: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run for a step function to log into."""
    with mlflow.start_run() as run:
        yield run


@pytest.fixture(scope="session")
def digits_dir(store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in digits data set, ingested."""
    out = tmp_path_factory.mktemp("ingest") / "dataset"
    with mlflow.start_run():
        run_ingest(IngestConfig(), out)
    return out


@pytest.fixture(scope="session")
def transformed(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Digits after transform: (dataset dir, params file)."""
    root = tmp_path_factory.mktemp("transform")
    with mlflow.start_run():
        run_transform(digits_dir, root / "data", root / "transform.json")
    return root / "data", root / "transform.json"


@pytest.fixture(scope="session", params=[Framework.TORCH, Framework.TENSORFLOW],
                ids=["torch", "tensorflow"])
def trained(request: pytest.FixtureRequest, transformed: tuple[Path, Path],
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Framework, Path]:
    """A model trained briefly with each framework: (framework, model dir)."""
    fw: Framework = request.param
    model_dir = tmp_path_factory.mktemp(f"model-{fw.value}") / "model"
    with mlflow.start_run():
        run_train(TrainConfig(framework=fw, epochs=4, show_progress=False),
                  transformed[0], model_dir)
    return fw, model_dir


def cli_env(tmp_path: Path, tracking_uri: str | None = None) -> dict[str, str]:
    """Environment for running the `twinflow` CLI in a subprocess with its own store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    env["TWINFLOW_HOME"] = str(tmp_path / ".twinflow")
    env.update(WARM_STRICT)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


def pipeline_runs(client: MlflowClient) -> list[Run]:
    """The parent runs of the pipeline runs in the CLI's experiment, oldest first."""
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    return client.search_runs([exp.experiment_id],
                              filter_string=f"tags.`{KIND_TAG}` = '{PIPELINE_KIND}'",
                              order_by=["attributes.start_time ASC"])
