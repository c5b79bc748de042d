"""The fitted transform as Keras preprocessing layers in front of the TF model.

The raw-input model takes two inputs, as the torch one does: ``numeric``
(float64, rows x numeric features, NaN = missing) and ``categorical``
(string, rows x string features, '' = missing), in the order of
``FittedTransform.numeric`` / ``.categorical``. Imputation is a small layer
(Keras has none); scaling is ``Normalization`` (min-max is a normalisation
by min and range), bucketising ``Discretization`` and vocabularies
``StringLookup`` with one out-of-vocabulary index, all with the fitted
values, so nothing is re-adapted. Exported as a SavedModel whose
``serving_default`` signature takes raw rows. Same function names as the
PyTorch package's raw_layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf
import tf_keras as keras

from components.transform.fitted import FITTED_FILE, FittedTransform


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


def build_raw_model(model: keras.Model, fitted: FittedTransform) -> keras.Model:
    """The network with the preprocessing layers in front (outputs logits)."""
    inputs, features = preprocessing(fitted)
    return keras.Model(inputs, model(features), name="raw_input_model")


def export_raw_model(model: keras.Model, fitted: FittedTransform, path: Path) -> Path:
    """Save the raw-input model as a SavedModel directory ``path`` (the transform JSON
    beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = build_raw_model(model, fitted)
    raw.save(str(path), save_format="tf", include_optimizer=False)
    fitted.save(path.parent / FITTED_FILE)
    return path
