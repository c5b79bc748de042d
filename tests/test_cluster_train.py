"""The train step's cluster path: the job it would create, and the data/model
exchange through the MLflow run, which is exercised for real (a worker process
downloads the data from the run and uploads the model back) short of a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components.config import ClusterOptions, Framework, TrainConfig
from components.frameworks import get_adapter
from components.settings import Settings
from components.train.cluster import job_config, wants_cluster
from components.train.exchange import fetch_output, publish_input
from components.train.k8s.manifests import build
from tests.test_k8s_jobs import _schema, _unknown_fields

CLUSTER = Settings(TWINFLOW_TRAIN_BACKEND="kubernetes", TWINFLOW_NAMESPACE="ml",
                   MLFLOW_TRACKING_URI="http://mlflow.twinflow:5000")


def test_only_multi_worker_or_gpu_runs_go_to_the_cluster() -> None:
    one = TrainConfig(framework=Framework.TORCH)
    assert not wants_cluster(one, CLUSTER)
    assert wants_cluster(one.model_copy(update={"workers": 2}), CLUSTER)
    assert wants_cluster(one.model_copy(update={"gpus_per_worker": 1}), CLUSTER)
    assert not wants_cluster(one.model_copy(update={"workers": 2}), Settings())


@pytest.mark.parametrize(("framework", "kind", "launcher"), [
    (Framework.TORCH, "", "torchrun"), (Framework.TORCH, "pytorchjob", "python"),
    (Framework.TENSORFLOW, "", "python")])
def test_job_for_the_step_carries_config_placement_and_tracking(
        framework: Framework, kind: str, launcher: str) -> None:
    options = ClusterOptions(job_kind=kind, cpu="4", memory="8Gi",
                             node_selector={"pool": "train"})
    config = TrainConfig(framework=framework, workers=3, gpus_per_worker=1, cluster=options)
    cfg = job_config(config, "0123456789abcdef", CLUSTER)
    assert cfg.namespace == "ml" and cfg.workers == 3 and cfg.gpus_per_worker == 1
    assert cfg.command[0] == launcher and "--via-mlflow" in cfg.command
    assert cfg.command[cfg.command.index("--run-id") + 1] == "0123456789abcdef"
    assert cfg.env == {"MLFLOW_TRACKING_URI": "http://mlflow.twinflow:5000"}
    assert cfg.image.endswith(f"/step-{framework.value}:0.1.0")
    job = build(cfg)
    schema = _schema(cfg.job_kind)
    assert _unknown_fields(job, schema) == []


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` at any depth, by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("framework", [Framework.TORCH, Framework.TENSORFLOW],
                         ids=["torch", "tensorflow"])
def test_data_and_model_travel_through_the_mlflow_run(framework: Framework,
                                                      transformed: tuple[Path, Path],
                                                      tmp_path: Path, store: str) -> None:
    """A real worker process trains from the run's data and hands back the whole model
    directory: every file, the nested raw-input model included, byte for byte."""
    config = TrainConfig(framework=framework, epochs=2, show_progress=False)
    with mlflow.start_run() as run:
        publish_input(run.info.run_id, transformed[0])
        worker = subprocess.run(
            [sys.executable, "-m", "components.train.worker", "--config",
             config.model_dump_json(), "--data", str(tmp_path / "pod-data"),
             "--model", str(tmp_path / "pod-model"), "--run-id", run.info.run_id,
             "--via-mlflow"],
            env={**os.environ, "MLFLOW_TRACKING_URI": store}, capture_output=True, text=True,
            timeout=600)
        assert worker.returncode == 0, worker.stderr[-2000:]
        fetch_output(run.info.run_id, tmp_path / "step-model")
    written = {k: v for k, v in _files(tmp_path / "pod-model").items()
               if not k.endswith(".pid")}
    fetched = _files(tmp_path / "step-model")
    assert any(name.startswith("raw/") and name.count("/") >= 1 for name in written), (
        "the worker wrote no raw-input model: the nested case is not exercised")
    assert sorted(fetched) == sorted(written)
    assert all(fetched[name] == written[name] for name in written)
    adapter = get_adapter(framework)
    raw = adapter.raw_model(tmp_path / "step-model")
    assert raw is not None and raw.path.exists()
    assert adapter.load_model(tmp_path / "step-model") is not None
    history = MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
