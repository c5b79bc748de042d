"""What both framework adapters share: the model spec, the interface, progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from components.config import TrainConfig
from components.data.dataset import ArraySplit, DatasetMetadata

SPEC_FILE = "spec.json"


@dataclass(frozen=True)
class ModelSpec:
    """Architecture choice, identical for both frameworks.

    ``cnn`` is the background articles' network (conv 32 3x3, max-pool, dense)
    for image data; ``mlp`` two hidden dense layers for tabular data.
    """

    kind: str
    n_features: int
    n_classes: int
    image_shape: tuple[int, ...] | None = None
    hidden: int = 128

    @classmethod
    def for_dataset(cls, meta: DatasetMetadata) -> ModelSpec:
        """CNN for image data, MLP otherwise."""
        shape = tuple(meta.image_shape) if meta.image_shape else None
        return cls(kind="cnn" if shape else "mlp", n_features=len(meta.features),
                   n_classes=meta.n_classes, image_shape=shape)

    def save(self, model_dir: Path) -> None:
        """Write the spec next to the weights so the model can be rebuilt."""
        (model_dir / SPEC_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> ModelSpec:
        """Read a spec written by :meth:`save`."""
        data = json.loads((model_dir / SPEC_FILE).read_text(encoding="utf-8"))
        if data.get("image_shape") is not None:
            data["image_shape"] = tuple(data["image_shape"])
        return cls(**data)


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch reports, identically for both frameworks."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def as_metrics(self) -> dict[str, float]:
        """Metric names as logged to MLflow."""
        return {k: float(v) for k, v in asdict(self).items() if k != "epoch"}


EpochCallback = Callable[[EpochMetrics], None]


@dataclass(frozen=True)
class TrainContext:
    """Where this process stands in a (possibly multi-process) training run.

    Only the chief (rank 0) reports metrics and writes the model and checkpoints;
    every rank trains on its slice of each global batch.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    checkpoint_dir: Path | None = None
    resume: bool = False

    @property
    def is_chief(self) -> bool:
        """Rank 0 logs, saves and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one training process."""
        return self.world_size > 1


class FrameworkAdapter(Protocol):
    """The functions every adapter module defines."""

    NAME: str
    MODEL_FILE: str

    def build_model(self, spec: ModelSpec, seed: int) -> Any: ...

    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> Any: ...

    def device_count(self) -> int: ...

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray: ...

    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None: ...

    def load_model(self, model_dir: Path) -> Any: ...

    def quantize(self, model: Any, spec: ModelSpec, sample: np.ndarray,
                 out_dir: Path) -> tuple[Path, Path]: ...

    def load_quantized(self, path: Path) -> Callable[[np.ndarray], np.ndarray]: ...

    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str: ...


class EpochProgress:
    """A tqdm bar per epoch over batches, with loss/accuracy in the postfix.

    One bar per epoch (rather than one for the run) means each finished epoch
    leaves a line behind even when the output is a pipe, as under KFP.
    """

    def __init__(self, epochs: int, batches: int, enabled: bool) -> None:
        self.epochs, self.batches, self.enabled = epochs, batches, enabled
        self._bar: tqdm | None = None

    def start(self, epoch: int) -> None:
        """Open the bar of ``epoch`` (1-based)."""
        if self.enabled:
            self._bar = tqdm(total=self.batches, desc=f"epoch {epoch}/{self.epochs}",
                             unit="batch", leave=True, mininterval=0.5)

    def step(self, loss: float) -> None:
        """Advance by one batch."""
        if self._bar is not None:
            self._bar.update(1)
            if self._bar.n % 10 == 0:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end(self, metrics: EpochMetrics) -> None:
        """Close the bar with the epoch's metrics."""
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{metrics.loss:.4f}", acc=f"{metrics.accuracy:.3f}",
                                  val_acc=f"{metrics.val_accuracy:.3f}")
            self._bar.close()
            self._bar = None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 for stable probabilities."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
