"""Load a raw-input export (the fitted transform inside) as a predict function, by format.

The counterpart of :mod:`components.export.runtime` for models that take raw
rows: two arrays, ``numeric`` (float64, NaN = missing) and ``categorical``
(object strings, '' = missing), columns in ``RawFeatures`` order. One loader
per file format, each importing only its own runtime: the model server and the
fresh-process check need no framework adapter (and no training code) to run a
shipped file, whichever framework wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from components.export.manifest import ExportFormat
from components.export.runtime import tflite_interpreter
from components.tasks import Outputs
from components.transform.fitted import FITTED_FILE, FittedTransform

PredictArrays = Callable[[np.ndarray, np.ndarray], np.ndarray]
PredictRaw = Callable[[pd.DataFrame], np.ndarray]


def load_raw_arrays(fmt: ExportFormat | str, path: Path) -> PredictArrays:
    """The network's outputs (logits, or values) on raw arrays for a shipped raw-input
    model of format ``fmt``."""
    loaders: dict[ExportFormat, Callable[[Path], PredictArrays]] = {
        ExportFormat.ONNX: _onnx, ExportFormat.TFLITE: _tflite,
        ExportFormat.TORCHSCRIPT: _torchscript, ExportFormat.SAVEDMODEL: _savedmodel,
    }
    return loaders[ExportFormat(fmt)](path)


def load_raw_predictor(fmt: ExportFormat | str, path: Path,
                       outputs: Outputs = Outputs.LOGITS) -> PredictRaw:
    """Answers on raw rows (a DataFrame): class probabilities, or values; the transform
    JSON sits beside ``path`` and only orders the columns (the transform itself runs
    inside the model)."""
    predict = load_raw_arrays(fmt, path)
    fitted = FittedTransform.load(path.parent / FITTED_FILE)
    return lambda frame: outputs.answers(predict(*fitted.raw_arrays(frame)))


def _onnx(path: Path) -> PredictArrays:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        logits = session.run(None, {"numeric": np.ascontiguousarray(num, np.float64),
                                    "categorical": cat.astype(str).astype(object)})[0]
        return np.asarray(logits)

    return predict


def _tflite(path: Path) -> PredictArrays:
    """Through the interpreter's signature; inputs exist only for the kinds of features
    the transform has (float32 numerics: see the TensorFlow package's tflite_raw)."""
    interpreter = tflite_interpreter(path)
    runner = interpreter.get_signature_runner()
    names = set(runner.get_input_details())

    def predict(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        inputs: dict[str, np.ndarray] = {}
        if "numeric" in names:
            inputs["numeric"] = np.ascontiguousarray(num, np.float32)
        if "categorical" in names:
            inputs["categorical"] = np.char.encode(cat.astype(str), "utf-8")
        return np.asarray(runner(**inputs)["output"])

    predict.keepalive = interpreter  # type: ignore[attr-defined]
    return predict


def _torchscript(path: Path) -> PredictArrays:
    """A scripted module taking (float64 tensor, List[List[str]])."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()

    def predict(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        rows: list[list[str]] = cat.tolist()
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(num, np.float64)), rows)
        return np.asarray(out.numpy())

    return predict


def _savedmodel(path: Path) -> PredictArrays:
    """A SavedModel whose ``serving_default`` takes ``numeric`` and ``categorical``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def predict(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        out = serve(numeric=tf.constant(num, tf.float64),
                    categorical=tf.constant(cat.astype(str).reshape(len(num), -1)))
        return np.asarray(next(iter(out.values())))

    predict.keepalive = loaded  # type: ignore[attr-defined]  # the signature needs its object
    return predict
