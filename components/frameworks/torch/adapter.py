"""The PyTorch adapter: torch's quirks as attributes, its code imported when called."""

from __future__ import annotations

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

_PACKAGE = "components.frameworks.torch"


class TorchAdapter(FrameworkAdapter):
    """PyTorch: a plain loop, DDP over gloo/nccl, TorchScript raw-input models."""

    name = "torch"
    image = "torch"
    raw_format = ExportFormat.TORCHSCRIPT
    raw_model_name = "model_raw.ts"
    per_gpu_processes = True  # DDP: one process per GPU
    job_kinds = (JobKind.TRAINJOB, JobKind.PYTORCHJOB)
    export_formats = "state dict, TorchScript fp32/int8, MLflow pytorch flavor"
    preload = ("torch", "mlflow.pytorch", "torch.onnx", "onnxscript", f"{_PACKAGE}.training",
               f"{_PACKAGE}.variants", f"{_PACKAGE}.export", f"{_PACKAGE}.raw_layer")

    def build_model(self, spec: ModelSpec, seed: int) -> Any:
        from components.frameworks.torch import training

        return training.build_model(spec, seed)

    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> Any:
        from components.frameworks.torch import training

        return training.train(spec, train, val, config, ctx, on_epoch)

    def device_count(self) -> int:
        import torch

        return int(torch.cuda.device_count())

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        from components.frameworks.torch import training

        return training.predict_proba(model, x)

    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None:
        from components.frameworks.torch import training

        training.save_model(model, spec, model_dir)

    def load_model(self, model_dir: Path) -> Any:
        from components.frameworks.torch import training

        return training.load_model(model_dir)

    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str:
        from components.frameworks.torch import training

        return training.log_model(model, name, sample)

    def build_variants(self, model: Any, spec: ModelSpec, train: ArraySplit,
                       config: CompressConfig, out_dir: Path, work: Path) -> Built:
        from components.frameworks.torch import variants

        return variants.build_variants(model, spec, train, config, out_dir, work)

    def export_raw_model(self, model: Any, fitted: FittedTransform, out_dir: Path) -> Path:
        from components.frameworks.torch import raw_layer

        return raw_layer.export_raw_model(model, fitted, out_dir)

    def context_from_env(self, checkpoint_dir: Path | None, resume: bool) -> TrainContext:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK."""
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        return TrainContext(rank, world, local, checkpoint_dir, resume)

    def local_launch(self, workers: int, worker_argv: list[str]) -> list[WorkerProcess]:
        """torch's own elastic launcher: c10d rendezvous on loopback, no restarts, a fast
        monitor so that a dead worker fails the run promptly."""
        argv = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={workers}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
                "--max-restarts=0", "--monitor-interval=0.5", *worker_argv]
        return [WorkerProcess("torch.distributed.run", argv)]

    def cluster_launcher(self, kind: JobKind) -> list[str]:
        """A TrainJob's runtime (torch-distributed) expects torchrun; v1 sets the env."""
        return ["torchrun"] if kind is JobKind.TRAINJOB else ["python"]
