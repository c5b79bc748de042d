"""PyTorch training: the shared model spec as torch modules, trained with a plain loop."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from components.config import Precision, RegressionLoss, TrainConfig
from components.data.dataset import ArraySplit
from components.frameworks.base import (
    EpochCallback,
    EpochMetrics,
    EpochProgress,
    ModelSpec,
    TrainContext,
)
from components.frameworks.torch.zoo import ZOO
from components.models.user import call_builder, pick_builder, user_modules
from components.tasks import Outputs

log = logging.getLogger(__name__)
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "last.pt"
_COLLECTIVE_TIMEOUT_S = 60  # a dead peer fails the run in a minute, not the default 30
_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # components/


def build_model(spec: ModelSpec, seed: int) -> nn.Module:
    """The spec's network (a zoo architecture or the user's), initialised from ``seed``."""
    torch.manual_seed(seed)
    ref = spec.ref
    builder = pick_builder(ref, "torch", ZOO)
    return call_builder(builder, ref, spec, spec.options, nn.Module,
                        "a torch.nn.Module")


class Rescale(nn.Module):
    """The fixed last layer of a regression network: label units from standardised ones,
    in float32 whatever the autocast dtype (a bf16 shift of ~150 would lose the units)."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, shift: float, scale: float) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.scale + self.shift


class Rescaled(nn.Module):
    """A regression network followed by :class:`Rescale` (what is saved and exported)."""

    def __init__(self, network: nn.Module, shift: float, scale: float) -> None:
        super().__init__()
        self.network = network
        self.rescale = Rescale(shift, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rescale(self.network(x))


def with_head(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The trained network as it is saved: regression gets its fixed :class:`Rescale`."""
    return Rescaled(model, spec.label_shift, spec.label_scale) if spec.rescales else model


class _Objective:
    """Loss and epoch score of one output kind (components.tasks.Outputs): softmax
    cross-entropy and accuracy by default."""

    def target(self, y: torch.Tensor) -> torch.Tensor:
        """What the loss compares the outputs with."""
        return y

    def loss_sum(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(out, target, reduction="sum")

    def score_sum(self, out: torch.Tensor, target: torch.Tensor) -> float:
        """Summed over the batch: correct answers (or squared error in label units)."""
        return float((out.argmax(1) == target).sum())

    def score(self, total: float, n: float) -> float:
        """The epoch's score from the summed one."""
        return total / n


class _Sigmoid(_Objective):
    """One binary logit: binary cross-entropy."""

    def loss_sum(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            out[:, 0], target.float(), reduction="sum")

    def score_sum(self, out: torch.Tensor, target: torch.Tensor) -> float:
        return float(((out[:, 0] > 0).long() == target).sum())


class _Standardised(_Objective):
    """Regression: MSE (or Huber) on the standardised label; the score is RMSE in the
    label's units."""

    def __init__(self, spec: ModelSpec, huber: bool) -> None:
        self.shift, self.scale = spec.label_shift, spec.label_scale
        self.huber = huber

    def target(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.shift) / self.scale

    def loss_sum(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fn = nn.functional.huber_loss if self.huber else nn.functional.mse_loss
        return fn(out[:, 0], target, reduction="sum")

    def score_sum(self, out: torch.Tensor, target: torch.Tensor) -> float:
        return float(((out[:, 0] - target) ** 2).sum()) * self.scale ** 2

    def score(self, total: float, n: float) -> float:
        return math.sqrt(total / n)


def _objective(spec: ModelSpec, huber: bool = False) -> _Objective:
    kind = spec.output_kind
    if kind is Outputs.VALUES:
        return _Standardised(spec, huber)
    return _Sigmoid() if kind is Outputs.LOGIT else _Objective()


def network_of(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The trained network without the regression head of :func:`with_head` (what a
    fine-tune trains, on the standardised label, as in training)."""
    return model.network if spec.rescales and isinstance(model, Rescaled) else model


def finetune_loss(spec: ModelSpec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's mean training loss on :func:`network_of`'s outputs."""
    goal = _objective(spec)
    return lambda out, y: goal.loss_sum(out, goal.target(y)) / len(y)


def train(spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
          ctx: TrainContext, on_epoch: EpochCallback) -> nn.Module:
    """Adam + the task's loss over seeded global batches, DDP over gloo when distributed.

    Every rank draws the same permutation and takes its slice of each global
    batch; the loss is scaled so that DDP's gradient average equals the mean over
    the whole global batch, so N workers follow the 1-worker trajectory.
    """
    device = _device(ctx)
    if ctx.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=_COLLECTIVE_TIMEOUT_S))
    model = build_model(spec, config.seed).to(device)
    optimizer = _adam(model, config.learning_rate)
    first = _restore(model, optimizer, ctx)
    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    goal = _objective(spec, config.regression_loss is RegressionLoss.HUBER)
    x = torch.from_numpy(train.x).to(device)
    y = goal.target(torch.from_numpy(train.y).to(device))
    amp = _Amp(device, config.precision)
    n_batches = -(-len(train) // config.batch_size)
    progress = EpochProgress(config.epochs, n_batches, config.show_progress and ctx.is_chief)
    metric = spec.task_object.epoch_metric
    best = _Best(config.early_stopping_patience)
    for epoch in range(first, config.epochs + 1):
        start = time.perf_counter()
        progress.start(epoch)
        totals = _train_epoch(net, optimizer, amp, x, y, goal, config, ctx, epoch, progress)
        val_loss, val_score = _evaluate(model, val, amp, goal)
        metrics = EpochMetrics(epoch, totals[0] / totals[2], goal.score(totals[1], totals[2]),
                               val_loss, val_score, time.perf_counter() - start, metric)
        progress.end(metrics)
        if ctx.is_chief:
            _checkpoint(model, optimizer, epoch, ctx)
            on_epoch(metrics)
        if best.stop(epoch, val_loss, model):  # every rank sees the same val_loss
            log.info("early stopping after epoch %d: best val_loss %.4f at epoch %d", epoch,
                     best.loss, best.epoch)
            break
    best.restore(model)
    return with_head(model.cpu().eval(), spec).eval()


def _adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused (one kernel over all parameters) where torch has the kernel for them.

    Why: the default for-loop Adam launches several ops per parameter tensor, which
    for the small networks twinflow trains on a CPU is a third of each step
    (fused measured 1.4x the default on the bench's residual MLP). Falls back to the
    default for parameters the fused kernel does not take (dtype, device).
    """
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError) as err:
        log.debug("fused Adam unavailable (%s); using the default", err)
        return torch.optim.Adam(model.parameters(), lr=lr)


class _Best:
    """Early stopping on the validation loss, keeping the best epoch's weights (Keras'
    ``EarlyStopping(restore_best_weights=True)``); patience 0 is off. The count starts
    afresh when a run resumes."""

    def __init__(self, patience: int) -> None:
        self.patience, self.epoch, self.loss = patience, 0, math.inf
        self._state: dict[str, torch.Tensor] | None = None

    def stop(self, epoch: int, loss: float, model: nn.Module) -> bool:
        if not self.patience:
            return False
        if loss < self.loss:
            self.epoch, self.loss = epoch, loss
            self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return epoch - self.epoch >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self._state is not None:
            model.load_state_dict(self._state)


def device_count() -> int:
    """Visible GPUs."""
    return torch.cuda.device_count()


def _device(ctx: TrainContext) -> torch.device:
    """One GPU per process (by local rank) when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


class _Amp:
    """Mixed precision: autocast to bf16/fp16, with a gradient scaler for fp16."""

    def __init__(self, device: torch.device, precision: Precision) -> None:
        self.device = device
        self.dtype = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision is Precision.FP16)

    def autocast(self) -> torch.autocast:
        """The forward-pass context (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def _train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, amp: _Amp, x: torch.Tensor,
                 y: torch.Tensor, goal: _Objective, config: TrainConfig, ctx: TrainContext,
                 epoch: int, progress: EpochProgress) -> list[float]:
    """One epoch; returns [loss sum, score sum, samples] summed over all ranks."""
    net.train()
    totals = torch.zeros(3, dtype=torch.float64)
    for global_size, local in _global_batches(len(x), config.batch_size, ctx.world_size,
                                              config.seed + epoch, ctx.rank):
        local = local.to(x.device)
        optimizer.zero_grad()
        with amp.autocast():
            out = net(x[local]).float()
            loss_sum = goal.loss_sum(out, y[local])
        amp.scaler.scale(loss_sum * ctx.world_size / global_size).backward()
        amp.scaler.step(optimizer)
        amp.scaler.update()
        totals += torch.tensor([loss_sum.item(), goal.score_sum(out.detach(), y[local]),
                                len(local)], dtype=torch.float64)
        progress.step(loss_sum.item() / len(local))
    if ctx.distributed:
        totals = totals.to(x.device)
        dist.all_reduce(totals)
    return totals.cpu().tolist()


def _global_batches(n: int, batch_size: int, world: int, seed: int,
                    rank: int = 0) -> list[tuple[int, torch.Tensor]]:
    """(global batch size, this rank's indices) for each global batch of a seeded shuffle."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = []
    for chunk in order.split(batch_size):
        if len(chunk) >= world:  # every rank needs at least one sample
            out.append((len(chunk), chunk.tensor_split(world)[rank]))
    return out


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                ctx: TrainContext) -> None:
    """Write the epoch's state atomically (a kill mid-write leaves the previous one)."""
    if ctx.checkpoint_dir is None:
        return
    ctx.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    tmp = ctx.checkpoint_dir / "last.pt.tmp"
    torch.save({"epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, ctx.checkpoint_dir / CHECKPOINT_FILE)


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: TrainContext) -> int:
    """Load the last checkpoint when resuming; return the first epoch to run."""
    path = ctx.checkpoint_dir / CHECKPOINT_FILE if ctx.checkpoint_dir else None
    if not ctx.resume or path is None or not path.is_file():
        return 1
    state = torch.load(path, weights_only=True, map_location=next(model.parameters()).device)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return int(state["epoch"]) + 1


@torch.no_grad()
def _evaluate(model: nn.Module, split: ArraySplit, amp: _Amp,
              goal: _Objective) -> tuple[float, float]:
    """Mean loss and the score on a split (the network before its regression head)."""
    model.eval()
    with amp.autocast():
        out = model(torch.from_numpy(split.x).to(amp.device)).float().cpu()
    target = goal.target(torch.from_numpy(split.y))
    n = len(split)
    return float(goal.loss_sum(out, target)) / n, goal.score(goal.score_sum(out, target), n)


@torch.no_grad()
def forward(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The network's outputs (logits, or values) for a float32 feature matrix."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, spec: ModelSpec, model_dir: Path) -> None:
    """Weights (state dict) plus the spec they belong to."""
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), model_dir / MODEL_FILE)
    spec.save(model_dir)


def load_model(model_dir: Path) -> nn.Module:
    """Rebuild the network from its spec and load the weights."""
    spec = ModelSpec.load(model_dir)
    model = with_head(build_model(spec, seed=0), spec)
    model.load_state_dict(torch.load(model_dir / MODEL_FILE, weights_only=True))
    return model.eval()


def log_model(model: nn.Module, name: str, sample: np.ndarray) -> str:
    """Log with MLflow's pytorch flavor; return the URI.

    As a ``torch.export`` program (MLflow's "pt2": no pickle, no project code needed to
    load it) when the network exports; otherwise pickled, with the project's code
    bundled and a user's model classes pickled by value (their module exists only in
    twinflow's code cache). Requirements are given, not inferred: inference reloads
    the model in a subprocess and took most of the push step's time.
    """
    example = sample.astype(np.float32)
    requirements = mlflow.pytorch.get_default_pip_requirements()
    try:
        info = mlflow.pytorch.log_model(model.eval(), name=name, input_example=example,
                                        serialization_format="pt2",
                                        pip_requirements=requirements)
    except Exception as err:  # torch.export rejects some Python control flow
        log.warning("torch.export failed (%s: %s); logging the network pickled",
                    type(err).__name__, str(err)[:200])
        info = _log_pickled(model, name, example, requirements)
    return str(info.model_uri)


def _log_pickled(model: nn.Module, name: str, example: np.ndarray,
                 requirements: list[str]) -> Any:
    import cloudpickle

    for module in user_modules():
        cloudpickle.register_pickle_by_value(module)
    return mlflow.pytorch.log_model(
        model.eval(), name=name, input_example=example, code_paths=[str(_PACKAGE_DIR)],
        serialization_format="pickle", pip_requirements=requirements)
