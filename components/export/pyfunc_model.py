"""The registered model as MLflow users load it: raw rows in, labels and probabilities out.

Push logs this very file as the registered version's MLflow model ("models from
code": MLflow executes the file when it loads the model, so nothing is
unpickled). That is why it imports nothing from twinflow, only the standard
library, numpy, pandas and mlflow, plus the runtime of the one export it serves
(onnxruntime, torch or tensorflow, imported when the model loads): a user who
loads ``models:/NAME@champion`` with ``mlflow.pyfunc``, ``mlflow models serve``
or ``spark_udf`` needs no twinflow checkout. Its artifact is a small exports
directory (``export.json`` with one raw-input entry, the entry's file and the
fitted transform's JSON); the transform runs inside the exported model, so the
answers are those of ``twinflow serve`` for the same rows.

Twinflow's own code imports the pieces it shares with the model from here (the
raw-array loaders, the column conversion, how outputs become answers), so the
registered model and the model server cannot drift apart.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: The artifact key of the exports directory inside the MLflow model.
EXPORTS_ARTIFACT = "exports"
#: Output columns: the answer, and one probability column per class.
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
#: What an exported network returns (the values of components.tasks.Outputs).
LOGITS, LOGIT, VALUES = "logits", "logit", "values"

PredictArrays = Callable[[np.ndarray, np.ndarray], np.ndarray]


def answers(output: str, outputs: np.ndarray) -> np.ndarray:
    """Class probabilities (rows x classes) or values (rows,), in float64, from a
    network's ``output`` kind: softmax of logits, sigmoid of one logit answered as
    [1 - p, p], or the values themselves."""
    z = np.asarray(outputs, dtype=np.float64)
    if output == VALUES:
        return z.reshape(len(z), -1)[:, 0]
    if output == LOGIT:
        p = 1.0 / (1.0 + np.exp(-z.reshape(len(z), -1)[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def raw_arrays(frame: pd.DataFrame, numeric: Sequence[str],
               categorical: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(float64 numeric matrix with NaN for missing, object matrix of strings with ''
    for missing): what a raw-input export takes, columns by name, extra ones ignored."""
    absent = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if absent:
        raise ValueError(f"raw rows lack feature columns {absent[:10]}")
    num = frame[list(numeric)].to_numpy(dtype=np.float64, na_value=np.nan)
    cat = frame[list(categorical)].astype(object)
    cat = cat.where(cat.notna(), "").astype(str).to_numpy(dtype=object)
    return num.reshape(len(frame), -1), cat.reshape(len(frame), -1)


def answer_frame(values: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """The answers as MLflow returns them: ``prediction`` (the class name, or the value)
    and, for a classifier, ``probability_<class>`` per class."""
    if not classes:
        return pd.DataFrame({PREDICTION_COLUMN: values.astype(np.float64)})
    names = np.asarray(list(classes), dtype=object)
    frame = pd.DataFrame({PREDICTION_COLUMN: names[values.argmax(axis=1)]})
    for j, name in enumerate(classes):
        frame[f"{PROBABILITY_PREFIX}{name}"] = values[:, j]
    return frame


def load_raw_arrays(fmt: str, path: Path) -> PredictArrays:
    """The network's outputs (logits, or values) on raw arrays for a raw-input export
    of format ``fmt`` (an ExportFormat value)."""
    loaders: dict[str, Callable[[Path], PredictArrays]] = {
        "onnx": _onnx, "tflite": _tflite, "torchscript": _torchscript,
        "savedmodel": _savedmodel,
    }
    return loaders[str(fmt)](path)


def tflite_interpreter(path: Path, threads: int | None = None) -> Any:
    """A ``tf.lite.Interpreter`` for ``path``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter deprecation notice
        return tf.lite.Interpreter(model_path=str(path), num_threads=threads)


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


class RawRows:
    """An exports directory's raw-input entry as a DataFrame -> DataFrame predictor: what
    the MLflow model wraps (and what batch scoring can use without MLflow)."""

    def __init__(self, root: Path) -> None:
        manifest = json.loads((root / "export.json").read_text(encoding="utf-8"))
        entry = manifest["entries"][manifest["preferred"]]
        raw = manifest["raw_features"]
        self.numeric: list[str] = raw["numeric"]
        self.categorical: list[str] = raw["categorical"]
        self.classes: list[str] = manifest["classes"]
        self.output: str = manifest["output"]
        self._predict = load_raw_arrays(entry["format"], root / entry["path"])

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Answers for raw rows, in :func:`answer_frame`'s columns."""
        num, cat = raw_arrays(frame, self.numeric, self.categorical)
        return answer_frame(answers(self.output, self._predict(num, cat)), self.classes)


# MLflow executes this file under a generated module name to load the model (and once
# when logging it); twinflow imports it as components.export.pyfunc_model, which must
# neither import mlflow (a second of start-up for the model server) nor set MLflow's
# global model.
if not __name__.startswith("components."):
    import mlflow

    class RawRowsModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
        """The pyfunc over :class:`RawRows` (MLflow checks the input against the
        signature first: columns by name, their types, extra columns dropped)."""

        def load_context(self, context: Any) -> None:
            self.model = RawRows(Path(context.artifacts[EXPORTS_ARTIFACT]))

        def predict(self, context: Any, model_input: pd.DataFrame,
                    params: dict[str, Any] | None = None) -> pd.DataFrame:
            if not isinstance(model_input, pd.DataFrame):
                model_input = pd.DataFrame(model_input)
            return self.model.predict(model_input)

    mlflow.models.set_model(RawRowsModel())
