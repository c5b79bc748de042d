"""The PyTorch adapter: torch's quirks as attributes, its code imported when called."""

from __future__ import annotations

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

_PACKAGE = "components.frameworks.torch"

if TYPE_CHECKING:  # mypy checks the package's modules against the adapter's interface
    from components.frameworks.torch import raw_layer, training, variants

    _MODULES: tuple[TrainingModule, VariantsModule, RawLayerModule] = (training, variants,
                                                                       raw_layer)


class TorchAdapter(PackageAdapter):
    """PyTorch: a plain loop, DDP over gloo/nccl, TorchScript raw-input models."""

    package = _PACKAGE
    name = "torch"
    image = "torch"
    cpu_wheel = "torch"  # PyPI's Linux torch is the CUDA build (GBs)
    raw_format = ExportFormat.TORCHSCRIPT
    raw_model_name = "model_raw.ts"
    per_gpu_processes = True  # DDP: one process per GPU
    job_kinds = (JobKind.TRAINJOB, JobKind.PYTORCHJOB)
    export_formats = "state dict, TorchScript fp32/int8, MLflow pytorch flavor"
    preload = ("torch", "mlflow.pytorch", "torch.onnx", "onnxscript", f"{_PACKAGE}.training",
               f"{_PACKAGE}.variants", f"{_PACKAGE}.export", f"{_PACKAGE}.raw_layer",
               f"{_PACKAGE}.zoo")

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
