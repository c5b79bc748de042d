"""The train step on a cluster: multi-worker or GPU training as a training job.

The job's pods get the data from, and return the model to, the step's MLflow
run (:mod:`components.train.exchange`): MLflow is already the store every pod
can reach. The framework adapter names the job kinds it runs on and the
launcher a pod starts the worker with.
"""

from __future__ import annotations

import logging
from pathlib import Path

from components.config import TrainConfig
from components.errors import ConfigError
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics
from components.images import image
from components.settings import Settings
from components.train.exchange import fetch_output, publish_input
from components.train.k8s.spec import DistributedJobConfig, JobKind
from components.train.worker import WORKER_MODULE, read_history

log = logging.getLogger(__name__)


def wants_cluster(config: TrainConfig, settings: Settings) -> bool:
    """Cluster runs launch a job for more than one worker or any GPU."""
    return settings.train_backend == "kubernetes" and (
        config.workers > 1 or config.gpus_per_worker > 0)


def job_config(config: TrainConfig, run_id: str, settings: Settings) -> DistributedJobConfig:
    """The job for this step: image, worker command, placement, tracking URI."""
    adapter = get_adapter(config.framework)
    if not adapter.job_kinds:
        raise ConfigError(f"{config.framework} has no cluster training job; train it with "
                          "one worker and no GPUs")
    kind = JobKind(config.cluster.job_kind) if config.cluster.job_kind else None
    launcher = adapter.cluster_launcher(kind or adapter.job_kinds[0])
    command = [*launcher, "-m", WORKER_MODULE, "--config",
               config.model_copy(update={"resume": False}).model_dump_json(),
               "--data", "/tmp/twinflow/data", "--model", "/tmp/twinflow/model",
               "--run-id", run_id, "--via-mlflow"]
    return DistributedJobConfig(
        framework=config.framework, kind=kind, name=f"twinflow-{run_id[:12]}-train",
        namespace=settings.namespace, image=image(adapter.image), command=command,
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
    return read_history(model_dir)
