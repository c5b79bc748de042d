"""The fitted transform inside a TFLite model: raw rows in, for TensorFlow's TFLite exports.

The Keras preprocessing layers of the ``raw`` SavedModel
(components.frameworks.tensorflow.raw_layer) do not convert to TFLite builtins: their
string gathers and selects, broadcasts and bincounts need the Flex delegate,
which the stock ``tf.lite`` interpreter lacks. Here the transform is written
with ops the builtin runtime has: ``NOT_EQUAL(x, x)`` + ``SELECT_V2``
imputation, ``SUB``/``DIV`` scaling, bucket counts by ``GREATER_EQUAL`` +
``SUM`` then ``ONE_HOT``, and vocabularies as one string ``EQUAL`` against the
whole vocabulary (rows x words; the out-of-vocabulary bucket is what matches
none; a missing word takes the fill word's row, a float select), and the
network behind it is converted in the same graph with the converter options of
the variant it stands for (fp32, dynamic range, float16). Full-int8 variants
are not offered: their calibration ran on transformed rows and a conversion of
this graph would calibrate again, so the result would not be the measured file.

Inputs are ``numeric`` (float32, rows x numeric features, NaN = missing) and
``categorical`` (UTF-8 bytes, rows x string features, b'' = missing), each
only when the transform has such features; float32 because the builtin
comparisons and selects have no float64 kernels (a value within float32
rounding of a bucket boundary may land in the neighbouring bucket).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.transform.fitted import FittedTransform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

Configure = Callable[[Any], None]  # sets a tf.lite.TFLiteConverter's options


def export_raw_tflite(model: Any, fitted: FittedTransform, path: Path,
                      configure: Configure | None = None) -> Path:
    """Convert transform + ``model`` (a tf_keras network over transformed rows) to ``path``."""
    import tensorflow as tf

    specs = []
    if fitted.numeric:
        specs.append(tf.TensorSpec([None, len(fitted.numeric)], tf.float32, "numeric"))
    if fitted.categorical:
        specs.append(tf.TensorSpec([None, len(fitted.categorical)], tf.string, "categorical"))

    @tf.function(input_signature=specs)
    def serve(*inputs: Any) -> dict[str, Any]:
        features = _transform(fitted, *inputs)
        return {"output": model(features, training=False)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model)
    if configure is not None:
        configure(converter)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(converter.convert())
    return path


def _transform(fitted: FittedTransform, *inputs: Any) -> Any:
    """The transformed float32 matrix, in the shared output order (see fitted.py)."""
    import tensorflow as tf

    given = list(inputs)
    num = given.pop(0) if fitted.numeric else None
    cat = given.pop(0) if fitted.categorical else None
    blocks = []
    if num is not None:
        fill = tf.constant([[f.fill for f in fitted.numeric]], tf.float32)
        num = tf.where(tf.math.not_equal(num, num), fill, num)  # NaN != NaN
        idx = {f.name: i for i, f in enumerate(fitted.numeric)}
        if fitted.scaled:
            shift = tf.constant([[f.shift for f in fitted.scaled]], tf.float32)
            scale = tf.constant([[f.scale for f in fitted.scaled]], tf.float32)
            columns = tf.gather(num, [idx[f.name] for f in fitted.scaled], axis=1)
            blocks.append((columns - shift) / scale)
        for f in fitted.bucketized:
            column = tf.gather(num, [idx[f.name]], axis=1)
            above = tf.cast(column >= tf.constant([f.boundaries], tf.float32), tf.int32)
            blocks.append(tf.one_hot(tf.reduce_sum(above, axis=1), len(f.boundaries) + 1))
    for j, c in enumerate(fitted.categorical):
        column = cat[:, j:j + 1]  # type: ignore[index]  # present: there are categoricals
        hits = tf.cast(tf.equal(column, tf.constant([c.vocabulary])), tf.float32)
        fill = tf.constant([[float(word == c.fill) for word in c.vocabulary]], tf.float32)
        hits = tf.where(tf.equal(column, ""), fill, hits)
        if c.encoding == "onehot":
            blocks.append(tf.concat([1.0 - tf.reduce_max(hits, axis=1, keepdims=True), hits], 1))
        else:
            codes = tf.constant([[float(i + 1) for i in range(len(c.vocabulary))]])
            blocks.append(tf.reduce_sum(hits * codes, axis=1, keepdims=True))
    return blocks[0] if len(blocks) == 1 else tf.concat(blocks, axis=1)
