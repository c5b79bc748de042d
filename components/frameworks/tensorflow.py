"""TensorFlow adapter: the shared model spec as a Keras model, trained with ``fit``."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import mlflow
import numpy as np
import tensorflow as tf

from components.config import TrainConfig
from components.data.dataset import ArraySplit
from components.frameworks.base import (
    EpochCallback,
    EpochMetrics,
    EpochProgress,
    ModelSpec,
    softmax,
)

NAME = "tensorflow"
MODEL_FILE = "model.keras"


def build_model(spec: ModelSpec, seed: int) -> keras.Model:
    """The spec's network, initialised from ``seed``."""
    keras.utils.set_random_seed(seed)
    layers: list[Any] = [keras.Input((spec.n_features,))]
    if spec.kind == "cnn":
        assert spec.image_shape is not None
        layers += [
            keras.layers.Reshape(spec.image_shape),
            keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(), keras.layers.Dense(spec.hidden, activation="relu"),
        ]
    else:
        layers += [keras.layers.Dense(spec.hidden, activation="relu"),
                   keras.layers.Dense(spec.hidden, activation="relu")]
    layers.append(keras.layers.Dense(spec.n_classes))
    return keras.Sequential(layers)


class _Reporter(keras.callbacks.Callback):
    """Bridges Keras callbacks to the shared progress bar and epoch callback."""

    def __init__(self, progress: EpochProgress, on_epoch: EpochCallback) -> None:
        super().__init__()
        self.progress, self.on_epoch = progress, on_epoch
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._start = time.perf_counter()
        self.progress.start(epoch + 1)

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        self.progress.step(float((logs or {}).get("loss", float("nan"))))

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        metrics = EpochMetrics(epoch + 1, float(logs["loss"]), float(logs["accuracy"]),
                               float(logs["val_loss"]), float(logs["val_accuracy"]),
                               time.perf_counter() - self._start)
        self.progress.end(metrics)
        self.on_epoch(metrics)


def fit(model: keras.Model, train: ArraySplit, val: ArraySplit, config: TrainConfig,
        on_epoch: EpochCallback) -> None:
    """Adam + sparse cross-entropy on logits, the same loop shape as the torch adapter."""
    keras.utils.set_random_seed(config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    batches = -(-len(train) // config.batch_size)
    progress = EpochProgress(config.epochs, batches, config.show_progress)
    model.fit(train.x, train.y, batch_size=config.batch_size, epochs=config.epochs,
              validation_data=(val.x, val.y), shuffle=True, verbose=0,
              callbacks=[_Reporter(progress, on_epoch)])


def predict_proba(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Class probabilities for a float32 feature matrix."""
    return softmax(np.asarray(model(np.asarray(x, np.float32), training=False)))


def save_model(model: keras.Model, spec: ModelSpec, model_dir: Path) -> None:
    """The native ``.keras`` file plus the spec."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / MODEL_FILE)
    spec.save(model_dir)


def load_model(model_dir: Path) -> keras.Model:
    """Load the ``.keras`` file written by :func:`save_model`."""
    return keras.models.load_model(model_dir / MODEL_FILE)


def quantize(model: keras.Model, spec: ModelSpec, sample: np.ndarray,
             out_dir: Path) -> tuple[Path, Path]:
    """TFLite with default optimisation (dynamic-range int8); fp32 TFLite for comparison."""
    del spec, sample  # dynamic-range quantisation needs no representative data
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "model_fp32.tflite", out_dir / "model_int8.tflite"
    for path, optimise in zip(paths, (False, True), strict=True):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if optimise:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path.write_bytes(converter.convert())
    return paths


def load_quantized(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A predict-probabilities function over a TFLite file (batch resized per call)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return softmax(interpreter.get_tensor(out["index"]))

    return predict


def log_model(model: keras.Model, name: str, sample: np.ndarray) -> str:
    """Log with MLflow's tensorflow flavor; return the model URI (requirements given, not
    inferred, which would reload the model in a subprocess)."""
    info = mlflow.tensorflow.log_model(
        model, name=name, input_example=sample.astype(np.float32),
        pip_requirements=mlflow.tensorflow.get_default_pip_requirements())
    return str(info.model_uri)
