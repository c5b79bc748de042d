"""Small exports directories built with plain framework calls, for the serving tests.

They follow the contract of components/export/manifest.py but do not use the
export step's code, so the server is tested against the format, not against its
producer. Each model maps ``N_FEATURES`` float32 features to ``N_CLASSES`` logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from components.export.manifest import ExportEntry, ExportFormat, ExportManifest, path_bytes

N_FEATURES = 8
N_CLASSES = 3
CLASSES = ["setosa", "versicolor", "virginica"]


def sample(rows: int, seed: int = 0, n_features: int = N_FEATURES) -> np.ndarray:
    """Float32 input rows."""
    return np.random.default_rng(seed).normal(size=(rows, n_features)).astype(np.float32)


def _manifest(framework: str, entries: dict[str, ExportEntry], preferred: str,
              n_features: int, classes: list[str]) -> ExportManifest:
    return ExportManifest(framework=framework,  # type: ignore[arg-type]
                          features=[f"f{i}" for i in range(n_features)], classes=classes,
                          entries=entries, preferred=preferred)


def _entries(directory: Path, files: dict[str, tuple[ExportFormat, str]]
             ) -> dict[str, ExportEntry]:
    """Manifest entries of files written under ``directory``: name -> (format, path)."""
    return {name: ExportEntry(format=fmt, path=path, bytes=path_bytes(directory / path))
            for name, (fmt, path) in files.items()}


def torch_model(n_features: int = N_FEATURES, n_classes: int = N_CLASSES, seed: int = 0):  # type: ignore[no-untyped-def]
    """A tiny MLP in eval mode."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_features, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, n_classes)).eval()


def torch_exports(directory: Path, n_features: int = N_FEATURES,
                  classes: list[str] | None = None) -> tuple[ExportManifest, object]:
    """ONNX (dynamo exporter) and TorchScript exports of one torch model: (manifest, model)."""
    import torch
    from torch.export import Dim

    classes = classes or CLASSES[:N_CLASSES]
    model = torch_model(n_features, len(classes))
    directory.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(directory / "model.ts"))
    example = (torch.from_numpy(sample(2, n_features=n_features)),)
    torch.onnx.export(model, example, str(directory / "model.onnx"), dynamo=True,
                      input_names=["input"], output_names=["logits"],
                      dynamic_shapes=({0: Dim("batch")},))
    entries = _entries(directory, {"onnx": (ExportFormat.ONNX, "model.onnx"),
                                   "torchscript": (ExportFormat.TORCHSCRIPT, "model.ts")})
    manifest = _manifest("torch", entries, "onnx", n_features, classes)
    manifest.save(directory)
    return manifest, model


def torch_logits(model: object, x: np.ndarray) -> np.ndarray:
    """In-process logits of a torch module."""
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()  # type: ignore[operator, no-any-return]


def tf_exports(directory: Path, n_features: int = N_FEATURES,
               classes: list[str] | None = None) -> tuple[ExportManifest, object]:
    """SavedModel, TFLite and ONNX (tf2onnx) exports of one tf_keras model."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf_keras

    classes = classes or CLASSES[:N_CLASSES]
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Input((n_features,), name="features"),
                                 tf_keras.layers.Dense(16, activation="relu"),
                                 tf_keras.layers.Dense(len(classes))])
    directory.mkdir(parents=True, exist_ok=True)
    spec = tf.TensorSpec([None, n_features], tf.float32, name="features")
    serve = tf.function(lambda x: {"logits": model(x, training=False)}, input_signature=[spec])
    module = tf.Module()
    module.model, module.serve = model, serve
    tf.saved_model.save(module, str(directory / "savedmodel"),
                        signatures={"serving_default": serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(directory / "savedmodel"))
    (directory / "model.tflite").write_bytes(converter.convert())
    import tf2onnx

    tf2onnx.convert.from_keras(model, input_signature=[spec], opset=17,
                               output_path=str(directory / "model.onnx"))
    entries = _entries(directory, {"savedmodel": (ExportFormat.SAVEDMODEL, "savedmodel"),
                                   "tflite": (ExportFormat.TFLITE, "model.tflite"),
                                   "onnx": (ExportFormat.ONNX, "model.onnx")})
    manifest = _manifest("tensorflow", entries, "savedmodel", n_features, classes)
    manifest.save(directory)
    return manifest, model


def tf_logits(model: object, x: np.ndarray) -> np.ndarray:
    """In-process logits of a tf_keras model."""
    return np.asarray(model(x, training=False))  # type: ignore[operator]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
