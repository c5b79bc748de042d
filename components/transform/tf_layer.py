"""The fitted transform as Keras preprocessing layers in front of the TF model.

The raw-input model takes two inputs, as the torch one does: ``numeric``
(float64, rows x numeric features, NaN = missing) and ``categorical``
(string, rows x string features, '' = missing), in the order of
``FittedTransform.numeric`` / ``.categorical``. Imputation is a small layer
(Keras has none); scaling is ``Normalization`` (min-max is a normalisation
by min and range), bucketising ``Discretization`` and vocabularies
``StringLookup`` with one out-of-vocabulary index, all with the fitted
values, so nothing is re-adapted. Exported as a SavedModel whose
``serving_default`` signature takes raw rows. Same function names as
components.transform.torch_layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from components.frameworks.base import softmax
from components.transform.fitted import FittedTransform

RAW_SUBDIR = "raw"
RAW_MODEL_DIR = "saved_model_raw"


class Impute(keras.layers.Layer):
    """Replace missing values: NaN in numeric columns, '' in string columns."""

    def __init__(self, fill: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill = list(fill)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        fill = tf.broadcast_to(tf.constant(self.fill, dtype=x.dtype), tf.shape(x))
        missing = tf.math.is_nan(x) if x.dtype.is_floating else tf.equal(x, "")
        return tf.where(missing, fill, x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill": self.fill}


class Columns(keras.layers.Layer):
    """Select columns by position (a block of the shared output order)."""

    def __init__(self, index: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.index = list(index)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.gather(x, self.index, axis=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "index": self.index}


def preprocessing(fitted: FittedTransform) -> tuple[list[Any], Any]:
    """(the two raw inputs, the transformed float32 tensor) as Keras tensors."""
    numeric = keras.Input((len(fitted.numeric),), dtype="float64", name="numeric")
    categorical = keras.Input((len(fitted.categorical),), dtype="string", name="categorical")
    idx = {f.name: i for i, f in enumerate(fitted.numeric)}
    blocks: list[Any] = []
    if fitted.numeric:
        x = Impute([f.fill for f in fitted.numeric], name="impute_numeric")(numeric)
        if fitted.scaled:
            cols = Columns([idx[f.name] for f in fitted.scaled], name="scaled_columns")(x)
            blocks.append(keras.layers.Normalization(
                mean=[f.shift for f in fitted.scaled],
                variance=[f.scale ** 2 for f in fitted.scaled], name="normalize")(cols))
        for f in fitted.bucketized:
            col = Columns([idx[f.name]], name=f"column_{idx[f.name]}")(x)
            blocks.append(keras.layers.Discretization(
                bin_boundaries=f.boundaries, output_mode="one_hot",
                name=f"bucketize_{idx[f.name]}")(col))
    if fitted.categorical:
        s = Impute([c.fill for c in fitted.categorical], name="impute_categorical")(categorical)
        for j, c in enumerate(fitted.categorical):
            lookup = keras.layers.StringLookup(
                vocabulary=c.vocabulary, num_oov_indices=1,
                output_mode="one_hot" if c.encoding == "onehot" else "int",
                name=f"vocabulary_{j}")
            out = lookup(Columns([j], name=f"string_column_{j}")(s))
            blocks.append(out if c.encoding == "onehot"
                          else keras.layers.Lambda(lambda t: tf.cast(t, tf.float32))(out))
    merged = blocks[0] if len(blocks) == 1 else keras.layers.Concatenate(name="features")(blocks)
    return [numeric, categorical], merged


def raw_model_path(model_dir: Path) -> Path:
    """Where the train step puts the raw-input model inside a model artifact."""
    return model_dir / RAW_SUBDIR / RAW_MODEL_DIR


def build_raw_model(model: keras.Model, fitted: FittedTransform) -> keras.Model:
    """The network with the preprocessing layers in front (outputs logits)."""
    inputs, features = preprocessing(fitted)
    return keras.Model(inputs, model(features), name="raw_input_model")


def export_raw_model(model: keras.Model, fitted: FittedTransform, out_dir: Path) -> Path:
    """Save the raw-input model as a SavedModel (plus the transform JSON)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RAW_MODEL_DIR
    raw = build_raw_model(model, fitted)
    raw.save(str(path), save_format="tf", include_optimizer=False)
    fitted.save(out_dir / "transform.json")
    return path


def load_raw_arrays(path: Path) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A predict-probabilities function over raw arrays (float64 numeric with NaN, object
    strings with ''), through the serving signature."""
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def predict(num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        out = serve(numeric=tf.constant(num, tf.float64),
                    categorical=tf.constant(cat.astype(str).reshape(len(num), -1)))
        return softmax(np.asarray(next(iter(out.values()))))

    predict.keepalive = loaded  # type: ignore[attr-defined]  # the signature needs its object
    return predict


def load_raw_model(path: Path) -> Callable[[pd.DataFrame], np.ndarray]:
    """A predict-probabilities function over raw rows, through the serving signature."""
    predict = load_raw_arrays(path)
    fitted = FittedTransform.load(path.parent / "transform.json")
    return lambda frame: predict(*fitted.raw_arrays(frame))
