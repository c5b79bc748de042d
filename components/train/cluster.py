"""The train step on a cluster: multi-worker or GPU training as a training job.

The job's pods cannot see the step's local artifact paths, so data and model go
through the MLflow run the step logs to (the tracking server proxies artifacts
to its store): the step publishes the transformed data, every worker downloads
it, the chief uploads the trained model, and the step downloads that into its
model artifact. MLflow is already the store every pod can reach.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from components.config import Framework, TrainConfig
from components.frameworks.base import EpochMetrics
from components.images import image
from components.settings import Settings
from components.train.k8s.spec import DistributedJobConfig, JobKind
from components.train.worker import HISTORY_FILE

log = logging.getLogger(__name__)
INPUT_PATH = "cluster/train-input"
OUTPUT_PATH = "cluster/trained-model"


def wants_cluster(config: TrainConfig, settings: Settings) -> bool:
    """Cluster runs launch a job for more than one worker or any GPU."""
    return settings.train_backend == "kubernetes" and (
        config.workers > 1 or config.gpus_per_worker > 0)


def job_config(config: TrainConfig, run_id: str, settings: Settings) -> DistributedJobConfig:
    """The job for this step: image, worker command, placement, tracking URI."""
    kind = JobKind(config.cluster.job_kind) if config.cluster.job_kind else None
    torchrun = config.framework is Framework.TORCH and kind in (None, JobKind.TRAINJOB)
    launcher = ["torchrun"] if torchrun else ["python"]
    command = [*launcher, "-m", "components.train.worker", "--config",
               config.model_copy(update={"resume": False}).model_dump_json(),
               "--data", "/tmp/twinflow/data", "--model", "/tmp/twinflow/model",
               "--run-id", run_id, "--via-mlflow"]
    return DistributedJobConfig(
        framework=config.framework, kind=kind, name=f"twinflow-{run_id[:12]}-train",
        namespace=settings.namespace, image=image(config.framework.value), command=command,
        workers=max(1, config.workers), gpus_per_worker=config.gpus_per_worker,
        cpu=config.cluster.cpu, memory=config.cluster.memory,
        node_selector=config.cluster.node_selector, tolerations=config.cluster.tolerations,
        env={"MLFLOW_TRACKING_URI": settings.resolved_tracking_uri()})


def train_on_cluster(config: TrainConfig, data_dir: Path, model_dir: Path, run_id: str,
                     settings: Settings) -> list[EpochMetrics]:
    """Publish the data, run the job to completion, fetch the model; return the history."""
    from components.train.k8s.launcher import run_job

    publish_input(run_id, data_dir)
    run_job(job_config(config, run_id, settings))
    fetch_output(run_id, model_dir)
    return [EpochMetrics(**m) for m in json.loads((model_dir / HISTORY_FILE).read_text())]


def publish_input(run_id: str, data_dir: Path) -> None:
    """Make the transformed data reachable by the job's pods."""
    MlflowClient().log_artifacts(run_id, str(data_dir), INPUT_PATH)


def download_input(run_id: str, dst: Path) -> Path:
    """Worker side: the data published by :func:`publish_input`."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=INPUT_PATH,
                                                    dst_path=str(dst)))


def upload_output(run_id: str, model_dir: Path) -> None:
    """Chief side: hand the trained model back (checkpoints stay on the pod)."""
    with tempfile.TemporaryDirectory() as tmp:
        for item in model_dir.iterdir():
            if item.is_file() and not item.name.endswith(".pid"):
                (Path(tmp) / item.name).write_bytes(item.read_bytes())
        MlflowClient().log_artifacts(run_id, tmp, OUTPUT_PATH)


def fetch_output(run_id: str, model_dir: Path) -> None:
    """Step side: the model the chief uploaded, into the step's model artifact."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        got = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=OUTPUT_PATH,
                                                       dst_path=tmp))
        for item in got.iterdir():
            (model_dir / item.name).write_bytes(item.read_bytes())
