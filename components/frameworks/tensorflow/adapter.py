"""The TensorFlow adapter: TensorFlow's quirks as attributes, its code imported when called."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from components.config import CompressConfig, TrainConfig
from components.data.dataset import ArraySplit
from components.export.candidates import Built
from components.export.manifest import ExportFormat
from components.frameworks.base import (
    EpochCallback,
    FrameworkAdapter,
    ModelSpec,
    TrainContext,
    WorkerProcess,
)
from components.net import free_port
from components.train.k8s.kinds import JobKind
from components.transform.fitted import FittedTransform

_PACKAGE = "components.frameworks.tensorflow"


class TensorFlowAdapter(FrameworkAdapter):
    """TensorFlow (tf-keras): ``fit``, MultiWorkerMirroredStrategy, SavedModel raw models."""

    name = "tensorflow"
    image = "tensorflow"
    raw_format = ExportFormat.SAVEDMODEL
    raw_model_name = "saved_model_raw"
    every_rank_saves = True  # MultiWorkerMirroredStrategy: saving is a collective
    job_kinds = (JobKind.TFJOB,)
    export_formats = "Keras .keras, TFLite fp32/int8, MLflow tensorflow flavor"
    preload = ("tensorflow", "tf_keras", "mlflow.tensorflow", "tf2onnx",
               "tensorflow_model_optimization", f"{_PACKAGE}.training", f"{_PACKAGE}.variants",
               f"{_PACKAGE}.export", f"{_PACKAGE}.raw_layer", f"{_PACKAGE}.tflite_raw")
    noisy_loggers = ("tensorflow",)

    def build_model(self, spec: ModelSpec, seed: int) -> Any:
        from components.frameworks.tensorflow import training

        return training.build_model(spec, seed)

    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> Any:
        from components.frameworks.tensorflow import training

        return training.train(spec, train, val, config, ctx, on_epoch)

    def device_count(self) -> int:
        from components.frameworks.tensorflow import training

        return training.device_count()

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        from components.frameworks.tensorflow import training

        return training.predict_proba(model, x)

    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None:
        from components.frameworks.tensorflow import training

        training.save_model(model, spec, model_dir)

    def load_model(self, model_dir: Path) -> Any:
        from components.frameworks.tensorflow import training

        return training.load_model(model_dir)

    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str:
        from components.frameworks.tensorflow import training

        return training.log_model(model, name, sample)

    def build_variants(self, model: Any, spec: ModelSpec, train: ArraySplit,
                       config: CompressConfig, out_dir: Path, work: Path) -> Built:
        from components.frameworks.tensorflow import variants

        return variants.build_variants(model, spec, train, config, out_dir, work)

    def export_raw_model(self, model: Any, fitted: FittedTransform, out_dir: Path) -> Path:
        from components.frameworks.tensorflow import raw_layer

        return raw_layer.export_raw_model(model, fitted, out_dir)

    def context_from_env(self, checkpoint_dir: Path | None, resume: bool) -> TrainContext:
        """TF_CONFIG's worker list and task index (worker 0 is the chief)."""
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        world = len(tf_config.get("cluster", {}).get("worker", [])) or 1
        rank = int(tf_config.get("task", {}).get("index", 0))
        return TrainContext(rank, world, rank, checkpoint_dir, resume)

    def local_launch(self, workers: int, worker_argv: list[str]) -> list[WorkerProcess]:
        """One process per worker, each with a TF_CONFIG naming free loopback ports."""
        cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(workers)]}
        return [WorkerProcess(f"worker {index}", worker_argv, {"TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}})})
                for index in range(workers)]
