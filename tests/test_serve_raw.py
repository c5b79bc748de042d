"""Serving raw rows: the raw-input entries (fitted transform inside the model: TorchScript
or SavedModel, ONNX with the transform as ONNX operators, TFLite with it in builtin ops)
behind a real KServe server on 127.0.0.1 answer V1 and V2 requests of raw rows (strings,
gaps, unseen words) with what the trained network predicts at training time on the
transformed rows, for both frameworks. Malformed raw rows get 400 naming the column and
row."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from components.config import Framework, TrainConfig
from components.data.dataset import Split, read_frame
from components.export.manifest import ExportEntry, ExportFormat, ExportManifest
from components.export.raw import RAW_ENTRY, probe_rows, raw_exports
from components.frameworks import get_adapter
from components.train.core import run_train
from components.transform.core import run_transform
from components.transform.fitted import FittedTransform
from tests.test_serve import Server, serve_module
from tests.test_transform_fit import ingest_mixed, mixed_frame

FEATURES = ["size", "weight", "colour", "shape"]


@dataclass
class Served:
    server: Server
    fitted: FittedTransform
    expected: Any  # raw rows (DataFrame) -> training-time probabilities
    rows: pd.DataFrame


@dataclass
class Trained:
    exports: Path
    fitted: FittedTransform
    expected: Any
    rows: pd.DataFrame


def _train_and_export(fw: Framework, root: Path) -> Trained:
    """Train on mixed tabular data; ship the raw entries as compress does: the framework's
    raw model, the ONNX network with the transform in front (``raw_onnx``) and, for
    TensorFlow, the TFLite conversion with the transform inside (``raw_tflite``)."""
    with mlflow.start_run():
        raw = ingest_mixed(root, mixed_frame(300, seed=11))
        fitted = run_transform(raw, root / "t", root / "t.json")
        with mlflow.start_run(nested=True):
            run_train(TrainConfig(framework=fw, epochs=3, show_progress=False), root / "t",
                      root / "model")
    adapter = get_adapter(fw)
    model = adapter.load_model(root / "model")
    exports = root / "exports"
    width = len(fitted.output_columns())
    package = f"components.frameworks.{fw}"  # each package exposes the same names
    importlib.import_module(f"{package}.export").export_onnx(model, width,
                                                            exports / "model.onnx")
    entries = {"onnx": ExportEntry(format=ExportFormat.ONNX, path="model.onnx")}
    exporters: dict[str, Any] = {}
    if fw is Framework.TENSORFLOW:  # TFLite: the transform converted with the network
        from components.frameworks.tensorflow.export import export_tflite
        from components.frameworks.tensorflow.tflite_raw import export_raw_tflite

        export_tflite(model, width, exports / "model.tflite")
        entries["tflite"] = ExportEntry(format=ExportFormat.TFLITE, path="model.tflite")
        exporters["tflite"] = partial(export_raw_tflite, model)
    shipped = raw_exports(adapter.raw_model(root / "model"), exports, entries, exporters)
    assert shipped is not None, "the train step wrote no raw-input model"
    assert set(shipped.entries) == {RAW_ENTRY, *(f"raw_{n}" for n in entries)}
    ExportManifest(framework=str(fw), features=fitted.output_columns(), classes=fitted.classes,
                   entries={**entries, **shipped.entries}, preferred="onnx",
                   raw_features=shipped.features).save(exports)
    return Trained(exports, fitted, lambda rows: adapter.predict(model, fitted.apply(rows)),
                   read_frame(raw, Split.TEST).head(12))


CASES = [(Framework.TORCH, RAW_ENTRY), (Framework.TORCH, "raw_onnx"),
         (Framework.TENSORFLOW, RAW_ENTRY), (Framework.TENSORFLOW, "raw_onnx"),
         (Framework.TENSORFLOW, "raw_tflite")]


@pytest.fixture(scope="module")
def trained_torch(store: str, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train_and_export(Framework.TORCH, tmp_path_factory.mktemp("raw-torch"))


@pytest.fixture(scope="module")
def trained_tensorflow(store: str, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train_and_export(Framework.TENSORFLOW, tmp_path_factory.mktemp("raw-tensorflow"))


@pytest.fixture(scope="module", params=CASES, ids=[f"{fw.value}-{e}" for fw, e in CASES])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """A server of one raw-input entry (``raw_onnx`` is the default of these exports)."""
    fw, export = request.param
    t: Trained = request.getfixturevalue(f"trained_{fw.value}")
    assert ExportManifest.load(t.exports).serving_default == "raw_onnx"
    args = ["--model-dir", str(t.exports)] + ([] if export == "raw_onnx"
                                              else ["--export", export])
    server = Server(serve_module(*args))
    try:
        server.wait_ready()
        yield Served(server, t.fitted, t.expected, t.rows)
    finally:
        server.stop()


def _client_rows(served: Served) -> pd.DataFrame:
    """Test rows plus a row of gaps and an unseen word, as a client would send them."""
    gaps = pd.DataFrame({"size": [np.nan], "weight": [None], "colour": ["teal"],
                         "shape": [None], "label": ["no"]})
    return pd.concat([served.rows, gaps], ignore_index=True)


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows: NaN as null (JSON has no NaN); the label stays in as an extra key."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in rows.astype(object).to_dict(orient="records")]


def test_v1_objects_of_raw_rows_match_training_time(served: Served) -> None:
    rows = _client_rows(served)
    response = served.server.v1(_records(rows))
    assert response.status_code == 200, response.text
    got = np.array([p["probabilities"] for p in response.json()["predictions"]])
    np.testing.assert_allclose(got, served.expected(rows), atol=1e-5)
    classes = [p["class"] for p in response.json()["predictions"]]
    assert classes == [served.fitted.classes[i] for i in got.argmax(axis=1)]


def test_v1_list_rows_in_column_order(served: Served) -> None:
    rows = _client_rows(served)
    lists = [[r[n] for n in served.fitted.raw_features] for r in _records(rows)]
    response = served.server.v1(lists)
    assert response.status_code == 200, response.text
    got = np.array([p["probabilities"] for p in response.json()["predictions"]])
    np.testing.assert_allclose(got, served.expected(rows), atol=1e-5)


def test_v2_one_tensor_per_column(served: Served) -> None:
    rows = served.rows
    inputs = [{"name": n, "shape": [len(rows)], "datatype": "FP64",
               "data": [None if np.isnan(v) else v for v in rows[n].astype(float)]}
              for n in ("size", "weight")]
    inputs += [{"name": n, "shape": [len(rows), 1], "datatype": "BYTES",
                "data": ["" if v is None or v != v else v for v in rows[n]]}
               for n in ("colour", "shape")]
    response = served.server.v2({"id": "raw-1", "inputs": inputs})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    got = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
    np.testing.assert_allclose(got, served.expected(rows), atol=1e-5)


def test_metadata_lists_the_raw_columns(served: Served) -> None:
    meta = requests.get(f"{served.server.url}/v2/models/{served.server.name}", timeout=10).json()
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("size", "FP64"), ("weight", "FP64"), ("colour", "BYTES"), ("shape", "BYTES")]


BAD_V1 = {
    "missing column": ([{"size": 1.0, "weight": 2.0, "colour": "red"}],
                       r"row 0: missing column\(s\) \['shape'\]"),
    "string in a numeric column": (
        [{"size": 1.0, "weight": 2.0, "colour": "red", "shape": "round"},
         {"size": "big", "weight": 2.0, "colour": "red", "shape": "round"}],
        r"column 'size' row 1: expected a number or null, got 'big'"),
    "object in a string column": ([{"size": 1.0, "weight": 2.0, "colour": {"r": 1},
                                    "shape": "round"}],
                                  r"column 'colour' row 0: expected a string or null"),
    "short list row": ([[1.0, 2.0, "red"]], r"row 0: expected an object with columns"),
}


@pytest.mark.parametrize("case", sorted(BAD_V1))
def test_malformed_raw_v1_gets_400_naming_column_and_row(served: Served, case: str) -> None:
    rows, message = BAD_V1[case]
    response = served.server.v1(rows)
    assert response.status_code == 400, response.text
    assert re.search(message, response.text), response.text


def test_malformed_raw_v2_gets_400(served: Served) -> None:
    size = {"name": "size", "shape": [1], "datatype": "FP64", "data": [1.0]}
    response = served.server.v2({"inputs": [size]})
    assert response.status_code == 400
    assert "missing input tensor(s) ['weight', 'colour', 'shape']" in response.text
    wrong = [size, {**size, "name": "weight"}, {**size, "name": "colour"},
             {"name": "shape", "shape": [1], "datatype": "BYTES", "data": ["round"]}]
    response = served.server.v2({"inputs": wrong})
    assert response.status_code == 400
    assert "input 'colour': datatype must be BYTES, got FP64" in response.text


def test_probe_rows_cover_gaps_and_unseen_words(served: Served) -> None:
    """The rows compress verifies raw exports on hit every transform path."""
    probe = probe_rows(served.fitted, rows=64)
    assert list(probe.columns) == FEATURES
    assert probe["size"].isna().any() and probe["weight"].isna().any()
    assert {"", "<unseen>"} <= set(probe["colour"]) and "red" in set(probe["colour"])
    np.testing.assert_allclose(served.expected(probe).sum(axis=1), 1.0, atol=1e-6)
