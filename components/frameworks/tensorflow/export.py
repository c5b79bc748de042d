"""TensorFlow exports: SavedModel, TFLite and ONNX (tf2onnx) of an in-memory tf_keras model.

The TFLite converter also produces the compressed TFLite variants; its options
are passed in by the compress step (see ``.variants``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
import tf_keras as keras

INPUT_NAME, OUTPUT_NAME = "input", "output"
OPSET = 17


def _serving_fn(model: keras.Model, n_features: int) -> Any:
    """A concrete function float32[batch, n_features] -> {output: logits}."""
    @tf.function(input_signature=[tf.TensorSpec([None, n_features], tf.float32, INPUT_NAME)])
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(x, training=False)}

    return serve


def export_savedmodel(model: keras.Model, n_features: int, path: Path) -> Path:
    """A SavedModel directory whose ``serving_default`` takes ``input`` and returns ``output``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    serve = _serving_fn(model, n_features)
    tf.saved_model.save(model, str(path), signatures={"serving_default": serve})
    return path


def export_tflite(model: keras.Model, n_features: int, path: Path,
                  configure: Callable[[tf.lite.TFLiteConverter], None] | None = None) -> Path:
    """A TFLite flatbuffer; ``configure`` sets optimisations (none = plain fp32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    serve = _serving_fn(model, n_features).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve], model)
    if configure is not None:
        configure(converter)
    path.write_bytes(converter.convert())
    return path


def export_onnx(model: keras.Model, n_features: int, path: Path) -> Path:
    """ONNX through tf2onnx with a dynamic batch dimension."""
    import tf2onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    spec = (tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME),)
    model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    path.write_bytes(model_proto.SerializeToString())
    return path
