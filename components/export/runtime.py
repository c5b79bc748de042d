"""Load any exported file as a predict function (float32 rows in, logits out).

One loader per :class:`ExportFormat`, each importing only its own runtime, so
measuring an ONNX file never imports TensorFlow and a TorchScript file never
imports onnxruntime. The compress step measures variants with these loaders,
the fresh-process check (:mod:`components.export.verify`) reloads with them and
the model server (:mod:`components.serve.model`) serves with them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.errors import DataError
from components.export.manifest import ExportFormat
from components.export.pyfunc_model import tflite_interpreter
from components.tasks import Outputs

Predict = Callable[[np.ndarray], np.ndarray]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (exports output logits): what a multiclass export's
    answers are, defined once in :class:`components.tasks.Outputs`."""
    return Outputs.LOGITS.answers(logits)


def load_predictor(fmt: ExportFormat | str, path: Path, threads: int | None = None) -> Predict:
    """A function mapping a float32 matrix to the model's output (logits) for ``path``.

    ``threads`` caps the runtime's intra-op threads (None = its default). The
    compress step measures with one thread: on a shared CPU, runtimes that each
    grab every core (and onnxruntime's spinning workers) distort each other.
    """
    loaders: dict[ExportFormat, Callable[[Path, int | None], Predict]] = {
        ExportFormat.ONNX: _onnx, ExportFormat.TORCHSCRIPT: _torchscript,
        ExportFormat.SAVEDMODEL: _savedmodel, ExportFormat.TFLITE: _tflite,
    }
    if not path.exists():
        raise DataError(f"{path}: exported {fmt} model not found")
    return loaders[ExportFormat(fmt)](path, threads)


def _onnx(path: Path, threads: int | None) -> Predict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0])

    return predict


def _torchscript(path: Path, threads: int | None) -> Predict:
    import torch

    if threads:
        torch.set_num_threads(threads)  # process-wide: torch has no per-module setting
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    return predict


def _savedmodel(path: Path, threads: int | None) -> Predict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads:
        with contextlib.suppress(RuntimeError):  # only possible before TF's first op here
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise DataError(f"{path}: SavedModel has no 'serving_default' signature")
    signature = loaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise DataError(f"{path}: serving_default takes {sorted(inputs)}, expected one input")
    arg = next(iter(inputs))
    outputs = sorted(signature.structured_outputs)
    key = next((k for k in ("logits", "output", "probabilities") if k in outputs), outputs[0])

    def predict(x: np.ndarray) -> np.ndarray:
        out = signature(**{arg: tf.constant(np.ascontiguousarray(x, np.float32))})
        return np.asarray(out[key], dtype=np.float32)

    predict.keepalive = loaded  # type: ignore[attr-defined]  # the signature needs its object
    return predict


def _tflite(path: Path, threads: int | None) -> Predict:
    interpreter = tflite_interpreter(path, threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    shape: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if list(x.shape) != shape:  # re-allocate only when the batch size changes
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[:] = list(x.shape)
        interpreter.set_tensor(inp["index"], _quantize(x, inp))
        interpreter.invoke()
        return _dequantize(np.array(interpreter.get_tensor(out["index"])), out)

    return predict


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float rows to a TFLite model's integer input (a file converted with int8 I/O)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if y.dtype == np.float32:
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
