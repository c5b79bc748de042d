"""Train: fit the framework's network on the transformed train split.

The step is framework-agnostic: everything framework-specific is behind the
adapter, imported lazily so a torch run never imports TensorFlow.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow

from components.config import TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, ModelSpec
from components.tracking import log_metrics_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """The last epoch's metrics and the throughput of the whole fit."""

    last_epoch: EpochMetrics
    seconds: float
    samples_per_second: float


def run_train(config: TrainConfig, data_dir: Path, model_dir: Path) -> TrainResult:
    """Train, log per-epoch metrics (one batch request per epoch), save the model."""
    meta = read_metadata(data_dir)
    train, val = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.VAL, meta)
    spec = ModelSpec.for_dataset(meta)
    adapter = get_adapter(config.framework)
    mlflow.log_params({**config.model_dump(mode="json"), "model_kind": spec.kind,
                       "n_classes": spec.n_classes})
    model = adapter.build_model(spec, config.seed)
    epochs: list[EpochMetrics] = []

    def on_epoch(m: EpochMetrics) -> None:
        epochs.append(m)
        log_metrics_batch(m.as_metrics(), step=m.epoch)

    start = time.perf_counter()
    adapter.fit(model, train, val, config, on_epoch)
    seconds = time.perf_counter() - start
    adapter.save_model(model, spec, model_dir)
    result = TrainResult(epochs[-1], seconds, len(train) * config.epochs / seconds)
    mlflow.log_metrics({"train_seconds": seconds,
                        "train_samples_per_second": result.samples_per_second})
    log.info("trained %s %s in %.1fs: val_accuracy %.4f", config.framework.value, spec.kind,
             seconds, result.last_epoch.val_accuracy)
    return result
