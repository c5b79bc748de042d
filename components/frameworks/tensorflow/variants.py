"""TensorFlow compression variants: fp32 SavedModel/TFLite/ONNX exports, TFLite dynamic
range, full int8 and float16, tfmot pruning, and ONNX Runtime int8 of the ONNX export."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from components.compress.onnx_variants import onnx_candidates
from components.config import CompressConfig
from components.data.dataset import ArraySplit
from components.export.candidates import Built, Candidate, VariantSet
from components.export.manifest import ExportFormat
from components.frameworks.base import ModelSpec
from components.frameworks.tensorflow.export import export_onnx, export_savedmodel, export_tflite
from components.frameworks.tensorflow.tflite_raw import Configure, export_raw_tflite
from components.frameworks.tensorflow.training import network_of, objective, with_head

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
import tf_keras as keras

log = logging.getLogger(__name__)


def build_variants(model: keras.Model, spec: ModelSpec, train: ArraySplit,
                   config: CompressConfig, out_dir: Path, work: Path) -> Built:
    """fp32 exports into ``out_dir`` (they ship), compressed candidates into ``work``; a
    variant the model does not support is skipped with the reason (VariantSet)."""
    n = spec.n_features
    found = VariantSet()
    found.add("savedmodel", lambda: Candidate(
        "savedmodel", ExportFormat.SAVEDMODEL, export_savedmodel(model, n, out_dir / "savedmodel")),
        required=True)
    # Each TFLite file but full int8 and float16 comes with the writer of its raw-input
    # twin: the transform converted with the same network and options (full int8 would
    # calibrate again, see .tflite_raw; float16 would round the transform's constants,
    # e.g. a mean of 9.873 to 9.875, and the twin would not answer like the file).
    lite = found.add("tflite", lambda: Candidate(
        "tflite", ExportFormat.TFLITE, export_tflite(model, n, out_dir / "model.tflite"),
        raw_exporter=partial(export_raw_tflite, model)))
    onnx = found.add("onnx", lambda: Candidate(
        "onnx", ExportFormat.ONNX, export_onnx(model, n, out_dir / "model.onnx")))
    calibration = train.x[:config.calibration_rows]

    def dynamic_range(c: tf.lite.TFLiteConverter) -> None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]

    def full_int8(c: tf.lite.TFLiteConverter) -> None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = lambda: _representative(calibration)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # float32 in/out

    def float16(c: tf.lite.TFLiteConverter) -> None:
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.target_spec.supported_types = [tf.float16]

    def variant(name: str, net: keras.Model, configure: Configure | None, kind: str,
                note: str, raw: bool = True) -> Candidate:
        path = export_tflite(net, n, work / f"{name}.tflite", configure)
        exporter = partial(export_raw_tflite, net, configure=configure) if raw else None
        return Candidate(name, ExportFormat.TFLITE, path, kind, "tflite", note, exporter)

    def pruned() -> Candidate:
        net, zeros = pruned_copy(model, spec, train, config)
        return variant("tflite_pruned", net, None, "pruned",
                       f"{zeros:.0%} zero weights, dense storage "
                       f"({config.finetune_epochs} fine-tune epochs)")

    if lite is not None:
        found.add("tflite_dynamic_int8", lambda: variant(
            "tflite_dynamic_int8", model, dynamic_range, "dynamic_int8",
            "dynamic-range: int8 weights, float activations"))
        found.add("tflite_int8", lambda: variant(
            "tflite_int8", model, full_int8, "static_int8",
            f"full int8, {len(calibration)} representative rows, float32 I/O", raw=False))
        found.add("tflite_float16", lambda: variant(
            "tflite_float16", model, float16, "float16", "float16 weights", raw=False))
        found.add("tflite_pruned", pruned)
    if onnx is not None:
        found.add("onnx_int8", lambda: onnx_candidates(onnx, calibration, work))
    return found.built(lambda x: logits(model, x))


def logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The in-memory model's output."""
    return np.asarray(model(np.ascontiguousarray(x, np.float32), training=False))


def _representative(rows: np.ndarray) -> Iterator[list[np.ndarray]]:
    for row in rows:
        yield [row[None, :].astype(np.float32)]


def pruned_copy(model: keras.Model, spec: ModelSpec, train: ArraySplit,
                config: CompressConfig) -> tuple[keras.Model, float]:
    """tfmot magnitude pruning at constant ``pruning_sparsity`` with a short fine-tune, then
    ``strip_pruning``; returns the model and its fraction of zero kernel weights."""
    import tensorflow_model_optimization as tfmot

    network = network_of(model, spec)  # pruned and fine-tuned without the regression head
    clone = keras.models.clone_model(network)
    clone.set_weights(network.get_weights())
    schedule = tfmot.sparsity.keras.ConstantSparsity(config.pruning_sparsity, begin_step=0,
                                                     frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(clone, pruning_schedule=schedule)
    goal = objective(spec)
    pruned.compile(optimizer=keras.optimizers.Adam(config.finetune_learning_rate),
                   loss=goal.loss)
    # One step applies the masks even with no fine-tune epochs.
    epochs = max(config.finetune_epochs, 1)
    steps = None if config.finetune_epochs else 1
    pruned.fit(train.x, goal.target(train.y), batch_size=config.finetune_batch_size, epochs=epochs,
               steps_per_epoch=steps, verbose=0, shuffle=True,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernels = [w for layer in stripped.layers for w in layer.get_weights()[:1] if w.ndim > 1]
    zeros = sum(int((k == 0).sum()) for k in kernels) / max(sum(k.size for k in kernels), 1)
    return with_head(stripped, spec), float(zeros)
