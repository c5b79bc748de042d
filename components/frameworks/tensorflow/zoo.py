"""The built-in architectures as tf-keras models, the same as the PyTorch package's
``zoo`` (same layers, same parameter counts; tests/test_zoo.py checks).

Every builder takes the spec and keyword options and returns a model mapping
flat float32 rows (``spec.n_features``; images channels-last) to
``spec.n_outputs`` float32 logits (float32 even under a mixed-precision policy).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras as keras

from components.errors import ConfigError
from components.frameworks.base import ModelSpec


def _logits(spec: ModelSpec) -> Any:
    return keras.layers.Dense(spec.n_outputs, dtype="float32")


def linear(spec: ModelSpec) -> keras.Model:
    """A linear model (logistic regression): the baseline."""
    return keras.Sequential([keras.Input((spec.n_features,)), _logits(spec)])


def mlp(spec: ModelSpec, depth: int = 2, width: int = 128, dropout: float = 0.0) -> keras.Model:
    """``depth`` hidden dense layers of ``width`` with ReLU (and dropout after each)."""
    layers: list[Any] = [keras.Input((spec.n_features,))]
    for _ in range(depth):
        layers.append(keras.layers.Dense(width, activation="relu"))
        layers += [keras.layers.Dropout(dropout)] if dropout else []
    return keras.Sequential([*layers, _logits(spec)])


def cnn(spec: ModelSpec, filters: int = 32, hidden: int = 128) -> keras.Model:
    """The background articles' network: conv 3x3, max-pool 2, dense, dense."""
    _image(spec)
    return keras.Sequential([
        keras.Input((spec.n_features,)), keras.layers.Reshape(spec.input_shape),
        keras.layers.Conv2D(filters, 3, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(hidden, activation="relu"), _logits(spec)])


def _block(x: Any, width: int, stride: int) -> Any:
    """conv-BN-ReLU-conv-BN plus the input (a 1x1 strided projection when the shape
    changes), then ReLU."""
    y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
    y = keras.layers.ReLU()(keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(y))
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(y)
    if stride != 1 or x.shape[-1] != width:
        x = keras.layers.Conv2D(width, 1, strides=stride, use_bias=False)(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
    return keras.layers.ReLU()(keras.layers.Add()([y, x]))


def resnet(spec: ModelSpec, width: int = 16, depth: int = 2, stages: int = 2) -> keras.Model:
    """A small residual CNN for images of any size: a 3x3 stem, ``stages`` stages of
    ``depth`` blocks (width doubling, stride 2 from the second), global average
    pooling, a dense head."""
    _image(spec)
    inputs = keras.Input((spec.n_features,))
    x = keras.layers.Reshape(spec.input_shape)(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x))
    for stage in range(stages):
        for block in range(depth):
            x = _block(x, width * 2 ** stage, 2 if stage and not block else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _logits(spec)(x), name="resnet")


def _image(spec: ModelSpec) -> None:
    if spec.image_shape is None or len(spec.image_shape) != 3:
        raise ConfigError(f"model {spec.kind}: needs images (height, width, channels)")


ZOO: dict[str, Callable[..., Any]] = {"linear": linear, "mlp": mlp, "cnn": cnn,
                                      "resnet": resnet}
