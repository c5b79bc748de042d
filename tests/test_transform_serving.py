"""No train/serve skew: the exported raw-input model (transform + network), reloaded,
predicts on raw rows what the trained network predicts on the transformed rows."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from components.config import Framework, TrainConfig
from components.data.dataset import Split, read_frame, read_metadata
from components.export.raw_runtime import load_raw_predictor
from components.frameworks import get_adapter
from components.train.core import run_train
from components.transform.core import run_transform
from components.transform.fitted import TransformConfig
from tests.test_transform_fit import ingest_mixed, mixed_frame

OPTIONS = {"features": {"weight": {"scale": "bucketize", "buckets": 5, "impute": "median"},
                        "shape": {"encoding": "index"}}}


@pytest.mark.parametrize("fw", [Framework.TORCH, Framework.TENSORFLOW], ids=["torch", "tensorflow"])
def test_exported_raw_model_matches_training_predictions(
        tmp_path: Path, active_run: mlflow.ActiveRun, fw: Framework) -> None:
    raw = ingest_mixed(tmp_path)
    fitted = run_transform(raw, tmp_path / "t", tmp_path / "p.json",
                           TransformConfig.model_validate(OPTIONS))
    with mlflow.start_run(nested=True):
        run_train(TrainConfig(framework=fw, epochs=3, show_progress=False), tmp_path / "t",
                  tmp_path / "model")
    adapter = get_adapter(fw)
    model = adapter.load_model(tmp_path / "model")
    meta = read_metadata(tmp_path / "t")
    test_raw = read_frame(raw, Split.TEST)
    x = read_frame(tmp_path / "t", Split.TEST)[meta.features].to_numpy(np.float32)
    expected = adapter.predict(model, x)  # what training-time code predicts

    # raw rows as a client sends them: NaN / None gaps, an unseen category, shuffled columns
    rows = test_raw.drop(columns=["label"]).sample(frac=1.0, axis=1, random_state=0)
    rows = pd.concat([rows, pd.DataFrame({"size": [np.nan], "weight": [None], "colour": ["teal"],
                                          "shape": [None]})], ignore_index=True)
    extra = adapter.predict(model, fitted.apply(rows.tail(1)))
    raw_model = adapter.raw_model(tmp_path / "export")
    assert raw_model is not None
    path = adapter.export_raw_model(model, fitted, raw_model.path)
    assert adapter.raw_format is not None
    served = load_raw_predictor(adapter.raw_format, path)(rows)
    assert served.shape == (len(test_raw) + 1, meta.n_classes)
    assert np.allclose(served[:-1], expected, atol=1e-5)
    assert np.allclose(served[-1:], extra, atol=1e-5)
    assert (served[:-1].argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("fw", [Framework.TORCH, Framework.TENSORFLOW], ids=["torch", "tensorflow"])
def test_train_step_writes_raw_input_model(tmp_path: Path, active_run: mlflow.ActiveRun,
                                           fw: Framework) -> None:
    """The train step exports the raw-input model next to the network."""
    raw = ingest_mixed(tmp_path, mixed_frame(120, seed=3))
    run_transform(raw, tmp_path / "t", tmp_path / "p.json")
    with mlflow.start_run(nested=True):
        run_train(TrainConfig(framework=fw, epochs=1, show_progress=False), tmp_path / "t",
                  tmp_path / "model")
    raw_model = get_adapter(fw).raw_model(tmp_path / "model")
    assert raw_model is not None and raw_model.path.exists()
    predict = load_raw_predictor(raw_model.format, raw_model.path)
    rows = read_frame(raw, Split.VAL)
    probs = predict(rows)
    assert probs.shape == (len(rows), 2) and np.allclose(probs.sum(axis=1), 1.0)


@pytest.mark.parametrize("opset", [17, 18])
def test_onnx_transform_graph_equals_the_numpy_transform(
        tmp_path: Path, active_run: mlflow.ActiveRun, opset: int) -> None:
    """The transform as ONNX operators (components.export.onnx_raw) computes exactly what
    FittedTransform.apply does: imputation, scaling, buckets, vocabularies, index codes."""
    import onnxruntime as ort

    from components.export.onnx_raw import transform_model
    from components.export.raw import probe_rows

    raw = ingest_mixed(tmp_path)
    fitted = run_transform(raw, tmp_path / "t", tmp_path / "p.json",
                           TransformConfig.model_validate(OPTIONS))
    assert fitted.bucketized and any(c.encoding == "index" for c in fitted.categorical)
    session = ort.InferenceSession(transform_model(fitted, opset, 8).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    rows = pd.concat([read_frame(raw, Split.TEST).drop(columns=["label"]),
                      probe_rows(fitted, rows=200, seed=1)], ignore_index=True)
    num, cat = fitted.raw_arrays(rows)
    [got] = session.run(None, {"numeric": num, "categorical": cat.astype(str).astype(object)})
    want = fitted.apply(rows)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kinds", ["both", "numeric", "categorical"])
def test_tflite_transform_graph_equals_the_numpy_transform(
        tmp_path: Path, active_run: mlflow.ActiveRun, kinds: str) -> None:
    """The transform in TFLite builtin ops (the TensorFlow package's tflite_raw), in front of an
    identity network, computes what FittedTransform.apply does, up to float32 rounding of
    the scaled inputs; one-hots, buckets and index codes exactly."""
    import tensorflow as tf
    import tf_keras as keras

    from components.export.raw import probe_rows
    from components.frameworks.tensorflow.tflite_raw import export_raw_tflite

    raw = ingest_mixed(tmp_path)
    fitted = run_transform(raw, tmp_path / "t", tmp_path / "p.json",
                           TransformConfig.model_validate(OPTIONS))
    if kinds != "both":
        fitted = fitted.model_copy(update={"categorical" if kinds == "numeric" else "numeric": []})
    width = len(fitted.output_columns())
    identity = keras.Sequential([keras.Input((width,)), keras.layers.Lambda(lambda t: t * 1.0)])
    path = export_raw_tflite(identity, fitted, tmp_path / "raw.tflite")
    rows = pd.concat([read_frame(raw, Split.TEST).drop(columns=["label"]),
                      probe_rows(fitted, rows=200, seed=1)], ignore_index=True)
    num, cat = fitted.raw_arrays(rows)
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()
    inputs = {"numeric": num.astype(np.float32),
              "categorical": np.char.encode(cat.astype(str), "utf-8")}
    got = runner(**{k: v for k, v in inputs.items() if k in runner.get_input_details()})["output"]
    want = fitted.apply(rows)
    assert got.shape == want.shape
    exact = [i for i, c in enumerate(fitted.output_columns()) if "__" in c or "=" in c
             or c in {c.name for c in fitted.categorical}]
    np.testing.assert_array_equal(got[:, exact], want[:, exact])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
