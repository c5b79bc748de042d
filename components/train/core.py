"""Train: fit the framework's network on the transformed train split.

The step is framework-agnostic: everything framework-specific is behind the
adapter, imported lazily so a torch run never imports TensorFlow.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow

from components.config import TrainConfig
from components.data.dataset import Split, head_features, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, ModelSpec, TrainContext
from components.models.package import archive_bytes, is_package, top_level
from components.settings import get_settings
from components.tags import HARDWARE_TAG, MODEL_DIGEST_TAG, MODEL_TAG, TASK_TAG
from components.train.cluster import train_on_cluster, wants_cluster
from components.train.launch import TrainingError, launch_workers
from components.train.model import CHECK_ROWS, check_model, model_spec
from components.train.worker import read_history, train_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """The last epoch's metrics and the throughput of the whole fit."""

    last_epoch: EpochMetrics
    seconds: float
    samples_per_second: float


def run_train(config: TrainConfig, data_dir: Path, model_dir: Path,
              checkpoint_dir: Path | None = None) -> TrainResult:
    """Train (in this process, or ``config.workers`` local processes), save the model.

    Checkpoints go to ``checkpoint_dir`` (default: ``checkpoints/`` in the model
    artifact) every epoch; without ``config.resume`` old ones are cleared first.
    """
    meta = read_metadata(data_dir)
    spec = model_spec(config, meta)
    adapter = get_adapter(config.framework)
    sample = head_features(data_dir, Split.TRAIN, meta, CHECK_ROWS)  # not the whole split
    n_params = check_model(adapter, spec, sample, config.seed)
    run = mlflow.active_run()
    run_id = run.info.run_id if run else None
    if checkpoint_dir is None:
        ckpt = model_dir / "checkpoints"
        if not config.resume and ckpt.exists():
            shutil.rmtree(ckpt)
    else:
        ckpt = run_checkpoints(checkpoint_dir, config.resume, run_id)
    log_model_choice(config, spec, n_params)
    config = resolve_workers(config)
    start = time.perf_counter()
    settings = get_settings()
    on_cluster = bool(run_id) and wants_cluster(config, settings)
    mlflow.set_tag(HARDWARE_TAG, _hardware(config, on_cluster))
    if on_cluster and run_id:
        history = train_on_cluster(config, data_dir, model_dir, run_id, settings)
    elif config.workers == 1:
        ctx = TrainContext(checkpoint_dir=ckpt, resume=config.resume)
        history = train_worker(config, data_dir, model_dir, ctx, run_id)
    else:
        launch_workers(config, data_dir, model_dir, ckpt, run_id)
        history = read_history(model_dir)
    seconds = time.perf_counter() - start
    if not history:
        raise TrainingError(f"nothing to train: the checkpoint in {ckpt} is already at "
                            f"epoch {config.epochs}")
    epochs_run = len(history)
    mlflow.log_param("workers_used", config.workers)
    result = TrainResult(history[-1], seconds, meta.rows["train"] * epochs_run / seconds)
    mlflow.log_metrics({"train_seconds": seconds,
                        "train_samples_per_second": result.samples_per_second,
                        "peak_rss_mb": peak_rss_mb()})
    last = result.last_epoch
    log.info("trained %s %s with %d worker(s) in %.1fs: val_%s %.4f", config.framework,
             spec.kind, config.workers, seconds, last.metric, last.val_score)
    return result


#: How many earlier runs' checkpoint folders are kept beside a new one.
KEPT_CHECKPOINTS = 3


def run_checkpoints(shared: Path, resume: bool, run_id: str | None) -> Path:
    """This run's checkpoint folder under ``shared`` (one per data set and framework,
    outliving runs): with ``resume`` the newest earlier run's, which it continues;
    else a folder of its own, so that runs at once never write or clear each other's
    (the oldest beyond ``KEPT_CHECKPOINTS`` are removed)."""
    shared.mkdir(parents=True, exist_ok=True)
    earlier = sorted((d for d in shared.iterdir() if d.is_dir()),
                     key=lambda d: d.stat().st_mtime, reverse=True)
    if resume and earlier:
        return earlier[0]
    for old in earlier[KEPT_CHECKPOINTS:]:
        shutil.rmtree(old, ignore_errors=True)
    own = shared / (run_id or uuid.uuid4().hex)
    own.mkdir()
    return own


def _hardware(config: TrainConfig, on_cluster: bool) -> str:
    """One line on what trains (the model card's "hardware")."""
    workers = f"{config.workers} worker process(es)"
    if on_cluster:
        return f"Kubernetes cluster job, {workers}"
    gpus = get_adapter(config.framework).device_count()
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU(s), "
            f"{gpus} GPU(s), {workers}")


def log_model_choice(config: TrainConfig, spec: ModelSpec, n_params: int) -> None:
    """The run's parameters (the builder's options one by one too), the model's size, and
    for user code its digest as a tag and its source as an artifact."""
    params = config.model_dump(mode="json", exclude={"model_code"})
    options = {f"model_option.{k}": v for k, v in spec.options.items()}
    mlflow.log_params({**params, **options, "model_kind": spec.kind,
                       "n_classes": spec.n_classes, "n_outputs": spec.n_outputs})
    mlflow.set_tag(TASK_TAG, spec.task)
    mlflow.log_metric("model_parameters", n_params)
    mlflow.set_tag(MODEL_TAG, spec.kind)
    if spec.source:
        mlflow.set_tag(MODEL_DIGEST_TAG, spec.digest)
        if is_package(spec.source):  # a module:function builder's package, zipped
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{top_level(spec.kind)}.zip"
                path.write_bytes(archive_bytes(spec.source))
                mlflow.log_artifact(str(path), "model_code")
        else:
            mlflow.log_text(spec.source, f"model_code/{spec.kind}")


def resolve_workers(config: TrainConfig) -> TrainConfig:
    """``workers=0``: one process per visible GPU where the framework trains that way
    (PyTorch DDP), else one process using every GPU (TensorFlow's MirroredStrategy);
    one CPU process without GPUs."""
    if config.workers:
        return config
    adapter = get_adapter(config.framework)
    gpus = adapter.device_count() if adapter.per_gpu_processes else 0
    return config.model_copy(update={"workers": max(1, gpus)})


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children (workers), MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # Linux reports KiB
