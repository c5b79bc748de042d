"""TensorFlow training: the shared model spec as a Keras model, trained with ``fit``.

It uses tf-keras (Keras 2, the `tf.keras` of TF_USE_LEGACY_KERAS=1): Keras 3's
``fit`` fails under MultiWorkerMirroredStrategy in TF 2.21 ("PerReplica ...
unsupported type"), and tensorflow-model-optimization works only on tf-keras
models. Both measured here; see the README.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import logging

import mlflow
import numpy as np
import tensorflow as tf
import tf_keras as keras

from components.config import Precision, RegressionLoss, TrainConfig
from components.data.dataset import ArraySplit
from components.frameworks.base import (
    EpochCallback,
    EpochMetrics,
    EpochProgress,
    ModelSpec,
    TrainContext,
)
from components.frameworks.tensorflow.zoo import ZOO
from components.models.user import call_builder, pick_builder
from components.tasks import Outputs

_POLICIES = {Precision.FP32: "float32", Precision.BF16: "mixed_bfloat16",
             Precision.FP16: "mixed_float16"}
MODEL_FILE = "model.weights.h5"  # weights: a user's custom layers need no registry
# Batches per call of Keras' compiled train function. Why: with one batch per call, fit
# returns to Python after every batch, which for small networks on a CPU is a quarter
# of the step (32 measured 1.35x one on the bench's residual MLP, bench/RESULTS.md).
# Callbacks still run every epoch; the batch bar advances 32 batches at a time.
STEPS_PER_EXECUTION = 32
logging.getLogger("tensorflow").setLevel(logging.WARNING)  # its INFO lines flood step logs


def build_model(spec: ModelSpec, seed: int) -> keras.Model:
    """The spec's network (a zoo architecture or the user's), initialised from ``seed``.

    A user's builder must return a tf-keras model (``import tf_keras as keras``, or
    ``tf.keras`` with TF_USE_LEGACY_KERAS=1): the Keras this adapter trains with.
    """
    keras.utils.set_random_seed(seed)
    ref = spec.ref
    builder = pick_builder(ref, "tensorflow", ZOO)
    return call_builder(builder, ref, spec, spec.options, keras.Model,
                        "a tf_keras Model (Keras 2: import tf_keras as keras)")


def with_head(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """The trained network as it is saved: regression gets a fixed float32 last layer
    (label units from the standardised ones the network learnt)."""
    if not spec.rescales:
        return model
    inputs = keras.Input(shape=(spec.n_features,), dtype="float32")
    rescale = keras.layers.Rescaling(spec.label_scale, offset=spec.label_shift,
                                     dtype="float32", name="rescale")
    return keras.Model(inputs, rescale(model(inputs)), name="rescaled")


@dataclass(frozen=True)
class _Objective:
    """Loss, epoch metric and targets of one output kind (components.tasks.Outputs)."""

    loss: keras.losses.Loss
    metric: keras.metrics.Metric
    shift: float = 0.0
    scale: float = 1.0  # the score in the label's units: the metric times this
    column: bool = False  # targets as (n, 1), the outputs' shape

    def target(self, y: np.ndarray) -> np.ndarray:
        out = (y - self.shift) / self.scale if self.scale != 1.0 or self.shift else y
        return out.reshape(-1, 1) if self.column else out


def _objective(spec: ModelSpec, config: TrainConfig | None) -> _Objective:
    kind = spec.output_kind
    if kind is Outputs.VALUES:
        huber = config is not None and config.regression_loss is RegressionLoss.HUBER
        return _Objective(keras.losses.Huber() if huber else keras.losses.MeanSquaredError(),
                          keras.metrics.RootMeanSquaredError(name="score"),
                          spec.label_shift, spec.label_scale, column=True)
    if kind is Outputs.LOGIT:
        return _Objective(keras.losses.BinaryCrossentropy(from_logits=True),
                          keras.metrics.BinaryAccuracy(name="score", threshold=0.0),
                          column=True)
    return _Objective(keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      keras.metrics.SparseCategoricalAccuracy(name="score"))


def objective(spec: ModelSpec) -> _Objective:
    """The task's loss, metric and targets for the network without its head (what
    fine-tuning a pruned copy trains)."""
    return _objective(spec, None)


def network_of(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """The trained network without the regression head of :func:`with_head`."""
    return model.get_layer(index=1) if spec.rescales else model


class _Reporter(keras.callbacks.Callback):
    """Bridges Keras callbacks to the shared progress bar and epoch callback."""

    def __init__(self, progress: EpochProgress, on_epoch: EpochCallback, metric: str,
                 scale: float) -> None:
        super().__init__()
        self.progress, self.on_epoch = progress, on_epoch
        self.metric, self.scale = metric, scale
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._start = time.perf_counter()
        self.progress.start(epoch + 1)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        metrics = EpochMetrics(epoch + 1, float(logs["loss"]),
                               float(logs["score"]) * self.scale, float(logs["val_loss"]),
                               float(logs["val_score"]) * self.scale,
                               time.perf_counter() - self._start, self.metric)
        self.progress.end(metrics)
        self.on_epoch(metrics)


class _BatchReporter(_Reporter):
    """:class:`_Reporter` plus the per-batch progress bar. A separate class because Keras
    calls back into Python after every batch (and converts its logs) as soon as any
    callback overrides ``on_train_batch_end``: measured 0.70x the plain loop's
    throughput with the bar off (bench/RESULTS.md, issue 14)."""

    _done = 0  # batches of this epoch already on the bar

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._done = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        # ``batch`` is the last batch of the execution (STEPS_PER_EXECUTION at a time)
        self.progress.step(float((logs or {}).get("loss", float("nan"))), batch + 1 - self._done)
        self._done = batch + 1


def train(spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
          ctx: TrainContext, on_epoch: EpochCallback) -> keras.Model:
    """Adam + the task's loss; MultiWorkerMirroredStrategy when distributed.

    The strategy reads TF_CONFIG; each worker takes its share of every global
    batch (auto-shard by DATA), so the global batch stays ``config.batch_size``.
    Checkpoints are Keras' BackupAndRestore, which restores whatever it finds:
    callers empty ``ctx.checkpoint_dir`` unless resuming (``run_train`` does).
    """
    keras.mixed_precision.set_global_policy(_POLICIES[config.precision])
    strategy = _strategy(ctx)
    with strategy.scope():
        model = build_model(spec, config.seed)
        goal = _objective(spec, config)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=goal.loss,
                      metrics=[goal.metric], steps_per_execution=STEPS_PER_EXECUTION)
    batches = len(train) // config.batch_size
    progress = EpochProgress(config.epochs, batches, config.show_progress and ctx.is_chief)
    callbacks: list[keras.callbacks.Callback] = []
    if ctx.checkpoint_dir is not None:  # first: an epoch is reported only once it is saved
        callbacks.append(keras.callbacks.BackupAndRestore(str(ctx.checkpoint_dir),
                                                          delete_checkpoint=False))
    if config.early_stopping_patience:  # before the reporter: it sees the stopping epoch
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.early_stopping_patience,
            restore_best_weights=True))
    reporter = _BatchReporter if progress.enabled else _Reporter
    callbacks.append(reporter(progress, on_epoch if ctx.is_chief else lambda _m: None,
                              spec.task_object.epoch_metric, goal.scale))
    model.fit(_dataset(train, goal, config.batch_size, config.seed, shuffle=True),
              validation_data=_dataset(val, goal, config.batch_size, config.seed,
                                       shuffle=False),
              epochs=config.epochs, verbose=0, callbacks=callbacks)
    keras.mixed_precision.set_global_policy("float32")
    return with_head(model, spec)


def _strategy(ctx: TrainContext) -> tf.distribute.Strategy:
    """MultiWorkerMirrored across processes; Mirrored across the GPUs of one process."""
    if ctx.distributed:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if device_count() > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def device_count() -> int:
    """Visible GPUs."""
    return len(tf.config.list_physical_devices("GPU"))


def _dataset(split: ArraySplit, goal: _Objective, batch_size: int, seed: int,
             shuffle: bool) -> tf.data.Dataset:
    """A seeded tf.data pipeline, sharded by data across workers."""
    ds = tf.data.Dataset.from_tensor_slices((split.x, goal.target(split.y)))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # Full batches only when training: MultiWorkerMirroredStrategy scales each replica's
    # loss by (local batch x replicas), which mis-weights an uneven last batch.
    # prefetch: the next batch is made while this one trains (as Keras does for arrays)
    return (ds.batch(batch_size, drop_remainder=shuffle).prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The network's outputs (logits, or values) for a float32 feature matrix."""
    return np.asarray(model(np.asarray(x, np.float32), training=False))


def count_params(model: keras.Model) -> int:
    """Trainable parameters (not BatchNormalization's moving statistics)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def save_model(model: keras.Model, spec: ModelSpec, model_dir: Path) -> None:
    """The weights plus the spec (the builder rebuilds the architecture)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(model_dir / MODEL_FILE))
    spec.save(model_dir)


def load_model(model_dir: Path) -> keras.Model:
    """Rebuild the network from its spec and load the weights of :func:`save_model`."""
    spec = ModelSpec.load(model_dir)
    model = with_head(build_model(spec, seed=0), spec)
    model.load_weights(str(model_dir / MODEL_FILE))
    return model


def log_model(model: keras.Model, name: str, sample: np.ndarray) -> str:
    """Log with MLflow's tensorflow flavor; return the model URI (requirements given, not
    inferred, which would reload the model in a subprocess)."""
    info = mlflow.tensorflow.log_model(
        model, name=name, input_example=sample.astype(np.float32),
        pip_requirements=mlflow.tensorflow.get_default_pip_requirements())
    return str(info.model_uri)
