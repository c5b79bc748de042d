"""PyTorch adapter: the shared model spec as torch modules, trained with a plain loop."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from components.config import TrainConfig
from components.data.dataset import ArraySplit
from components.frameworks.base import (
    EpochCallback,
    EpochMetrics,
    EpochProgress,
    ModelSpec,
    softmax,
)

NAME = "torch"
MODEL_FILE = "model.pt"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


class ChannelsFirst(nn.Module):
    """Reshape flat rows (N, H*W*C, channels-last order) to (N, C, H, W)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, c = self.shape
        return x.reshape(-1, h, w, c).permute(0, 3, 1, 2)


def build_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The spec's network, initialised from ``seed``."""
    torch.manual_seed(seed)
    if spec.kind == "cnn":
        assert spec.image_shape is not None
        h, w, c = spec.image_shape
        flat = 32 * ((h - 2) // 2) * ((w - 2) // 2)
        return nn.Sequential(
            ChannelsFirst(spec.image_shape),
            nn.Conv2d(c, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(flat, spec.hidden), nn.ReLU(),
            nn.Linear(spec.hidden, spec.n_classes),
        )
    return nn.Sequential(
        nn.Linear(spec.n_features, spec.hidden), nn.ReLU(),
        nn.Linear(spec.hidden, spec.hidden), nn.ReLU(),
        nn.Linear(spec.hidden, spec.n_classes),
    )


def fit(model: nn.Module, train: ArraySplit, val: ArraySplit, config: TrainConfig,
        on_epoch: EpochCallback) -> None:
    """Adam + cross-entropy, shuffled mini-batches; reports running loss/accuracy per epoch."""
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)),
                        batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    progress = EpochProgress(config.epochs, len(loader), config.show_progress)
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        progress.start(epoch)
        model.train()
        total_loss, correct = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            logits = model(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            optimizer.step()
            batch_loss = loss.item()
            total_loss += batch_loss * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            progress.step(batch_loss)
        val_loss, val_acc = _evaluate(model, val, loss_fn)
        metrics = EpochMetrics(epoch, total_loss / len(train), correct / len(train),
                               val_loss, val_acc, time.perf_counter() - start)
        progress.end(metrics)
        on_epoch(metrics)


@torch.no_grad()
def _evaluate(model: nn.Module, split: ArraySplit, loss_fn: nn.Module) -> tuple[float, float]:
    model.eval()
    logits = model(torch.from_numpy(split.x))
    y = torch.from_numpy(split.y)
    return float(loss_fn(logits, y)), float((logits.argmax(1) == y).float().mean())


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Class probabilities for a float32 feature matrix."""
    model.eval()
    return softmax(model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy())


def save_model(model: nn.Module, spec: ModelSpec, model_dir: Path) -> None:
    """Weights (state dict) plus the spec they belong to."""
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / MODEL_FILE)
    spec.save(model_dir)


def load_model(model_dir: Path) -> nn.Module:
    """Rebuild the network from its spec and load the weights."""
    spec = ModelSpec.load(model_dir)
    model = build_model(spec, seed=0)
    model.load_state_dict(torch.load(model_dir / MODEL_FILE, weights_only=True))
    return model.eval()


def quantize(model: nn.Module, spec: ModelSpec, sample: np.ndarray,
             out_dir: Path) -> tuple[Path, Path]:
    """Dynamic int8 quantisation of the dense layers; TorchScript fp32 and int8 files."""
    del spec, sample  # dynamic quantisation needs no calibration data
    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice
        qmodel = torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear},
                                                        dtype=torch.qint8)
        fp32_path, int8_path = out_dir / "model_fp32.ts", out_dir / "model_int8.ts"
        torch.jit.script(model).save(str(fp32_path))
        torch.jit.script(qmodel).save(str(int8_path))
    return fp32_path, int8_path


def load_quantized(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A predict-probabilities function over a saved TorchScript model."""
    module = torch.jit.load(str(path)).eval()

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return softmax(module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy())

    return predict


def log_model(model: nn.Module, name: str, sample: np.ndarray) -> str:
    """Log with MLflow's pytorch flavor (pickled module, project code bundled); return the URI.

    Requirements are given, not inferred: inference reloads the model in a
    subprocess and took most of the push step's time.
    """
    info = mlflow.pytorch.log_model(
        model.eval(), name=name, input_example=sample.astype(np.float32),
        code_paths=[str(_PACKAGE_DIR)], serialization_format="pickle",
        pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
    )
    return str(info.model_uri)
