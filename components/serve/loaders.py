"""One loader per export format behind one small interface: rows in, scores out.

Each runner takes a float32 matrix (rows x features) and returns a float32
matrix (rows x classes) of what the export computes (logits or probabilities).
Frameworks are imported inside the runner that needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from components.errors import DataError
from components.export.manifest import ExportFormat

log = logging.getLogger(__name__)


class Runner(Protocol):
    """A loaded model: ``runner(x)`` maps float32 rows to float32 scores per class."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class OnnxRunner:
    """onnxruntime on CPU; external weights (``.onnx.data``) are found beside the file."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._output = self._session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run([self._output], {self._input: x})[0],
                          dtype=np.float32)


class TorchScriptRunner:
    """``torch.jit.load`` on CPU, called under inference mode."""

    def __init__(self, path: Path) -> None:
        import torch

        self._torch = torch
        self._module = torch.jit.load(str(path), map_location="cpu").eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            out = self._module(self._torch.from_numpy(x))
        return np.asarray(out.float().numpy(), dtype=np.float32)


class SavedModelRunner:
    """The SavedModel's ``serving_default`` signature (one input tensor)."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))  # keeps the variables alive
        if "serving_default" not in self._loaded.signatures:
            raise DataError(f"{path}: SavedModel has no 'serving_default' signature")
        self._fn = self._loaded.signatures["serving_default"]
        _, inputs = self._fn.structured_input_signature
        if len(inputs) != 1:
            raise DataError(f"{path}: serving_default takes {sorted(inputs)}, expected one input")
        self._input = next(iter(inputs))
        outputs = sorted(self._fn.structured_outputs)
        self._output = next((k for k in ("logits", "probabilities") if k in outputs), outputs[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self._fn(**{self._input: self._tf.constant(x)})[self._output]
        return np.asarray(out.numpy(), dtype=np.float32)


class TFLiteRunner:
    """``tf.lite.Interpreter``, resized to each batch; int8 inputs/outputs (de)quantized."""

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        self._interpreter = tf.lite.Interpreter(model_path=str(path))
        self._interpreter.allocate_tensors()
        self._in = self._interpreter.get_input_details()[0]
        self._out = self._interpreter.get_output_details()[0]
        self._shape: tuple[int, ...] = tuple(self._in["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            self._interpreter.resize_tensor_input(self._in["index"], list(x.shape))
            self._interpreter.allocate_tensors()
            self._shape = x.shape
        self._interpreter.set_tensor(self._in["index"], _quantize(x, self._in))
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(self._out["index"]), self._out)


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
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


LOADERS: dict[ExportFormat, Callable[[Path], Runner]] = {
    ExportFormat.ONNX: OnnxRunner,
    ExportFormat.TORCHSCRIPT: TorchScriptRunner,
    ExportFormat.SAVEDMODEL: SavedModelRunner,
    ExportFormat.TFLITE: TFLiteRunner,
}


def load_runner(path: Path, fmt: ExportFormat) -> Runner:
    """Load the exported model at ``path`` with the loader of ``fmt``."""
    log.info("loading %s export %s", fmt.value, path)
    return LOADERS[fmt](path)
