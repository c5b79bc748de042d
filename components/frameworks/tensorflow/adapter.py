"""The TensorFlow adapter: TensorFlow's quirks as attributes, its code imported when called."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from components.export.manifest import ExportFormat
from components.frameworks.base import (
    PackageAdapter,
    RawLayerModule,
    TrainContext,
    TrainingModule,
    VariantsModule,
    WorkerProcess,
)
from components.net import free_port
from components.train.k8s.kinds import JobKind

_PACKAGE = "components.frameworks.tensorflow"

if TYPE_CHECKING:  # mypy checks the package's modules against the adapter's interface
    from components.frameworks.tensorflow import raw_layer, training, variants

    _MODULES: tuple[TrainingModule, VariantsModule, RawLayerModule] = (training, variants,
                                                                       raw_layer)


class TensorFlowAdapter(PackageAdapter):
    """TensorFlow (tf-keras): ``fit``, MultiWorkerMirroredStrategy, SavedModel raw models."""

    package = _PACKAGE
    name = "tensorflow"
    image = "tensorflow"
    raw_format = ExportFormat.SAVEDMODEL
    raw_model_name = "saved_model_raw"
    every_rank_saves = True  # MultiWorkerMirroredStrategy: saving is a collective
    job_kinds = (JobKind.TFJOB,)
    export_formats = "Keras weights (.h5), TFLite fp32/int8, MLflow tensorflow flavor"
    preload = ("tensorflow", "tf_keras", "mlflow.tensorflow", "tf2onnx",
               "tensorflow_model_optimization", f"{_PACKAGE}.training", f"{_PACKAGE}.variants",
               f"{_PACKAGE}.export", f"{_PACKAGE}.raw_layer", f"{_PACKAGE}.tflite_raw",
               f"{_PACKAGE}.zoo")

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
