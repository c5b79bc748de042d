"""A third framework is one adapter and one registry line: a scikit-learn MLP "framework",
defined here, trains through the real train step and exports through the real compress
step (ONNX written from its weights, ONNX Runtime int8 variants, the gate, the
fresh-process check), with no change to any step."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from sklearn.metrics import log_loss
from sklearn.neural_network import MLPClassifier

from components.compress.core import run_compress
from components.compress.onnx_variants import onnx_candidates
from components.config import CompressConfig, TrainConfig
from components.data.dataset import ArraySplit, Split, read_arrays, read_metadata
from components.export.candidates import Built, Candidate
from components.export.manifest import ExportFormat, ExportManifest
from components.export.runtime import load_predictor
from components.frameworks import framework_names, register_adapter, unregister_adapter
from components.frameworks.base import (
    EpochCallback,
    EpochMetrics,
    FrameworkAdapter,
    ModelSpec,
    TrainContext,
)
from components.train.core import run_train

MODEL_FILE = "mlp.pkl"


def _logits(model: MLPClassifier, x: np.ndarray) -> np.ndarray:
    """The network's last layer before softmax (what the exports return)."""
    h = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        h = h @ w + b
        if i < len(model.coefs_) - 1:
            h = np.maximum(h, 0.0)
    return h


def _write_onnx(model: MLPClassifier, n_features: int, path: Path) -> Path:
    """Gemm + Relu layers from the fitted weights: the network as standard ONNX."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights, x = [], [], "input"
    for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        weights += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                    numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < len(model.coefs_) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["output"]))
    n_out = model.coefs_[-1].shape[1]
    graph = helper.make_graph(
        nodes, "sklearn_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, n_out])], weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


class SklearnAdapter(FrameworkAdapter):
    """scikit-learn's MLPClassifier, one ``partial_fit`` pass per epoch, one process."""

    name = "sklearn"
    image = "base"
    forward_before_training = False  # an unfitted MLPClassifier cannot predict

    def build_model(self, spec: ModelSpec, seed: int) -> MLPClassifier:
        return MLPClassifier(hidden_layer_sizes=(int(spec.options.get("width", 128)),),
                             random_state=seed)

    def train(self, spec: ModelSpec, train: ArraySplit, val: ArraySplit, config: TrainConfig,
              ctx: TrainContext, on_epoch: EpochCallback) -> MLPClassifier:
        model = self.build_model(spec, config.seed)
        model.set_params(learning_rate_init=config.learning_rate,
                         batch_size=config.batch_size)
        classes = np.arange(spec.n_classes)
        for epoch in range(1, config.epochs + 1):
            model.partial_fit(train.x, train.y, classes=classes)
            proba = model.predict_proba(val.x)
            on_epoch(EpochMetrics(epoch, float(model.loss_), float(model.score(train.x, train.y)),
                                  float(log_loss(val.y, proba, labels=classes)),
                                  float((proba.argmax(1) == val.y).mean()), 0.0))
        return model

    def device_count(self) -> int:
        return 0

    def count_params(self, model: Any) -> int:
        return sum(w.size for w in [*getattr(model, "coefs_", []),
                                    *getattr(model, "intercepts_", [])])

    def forward(self, model: Any, x: np.ndarray) -> np.ndarray:
        # log-probabilities are logits: their softmax is the classifier's probabilities
        return np.log(np.clip(np.asarray(model.predict_proba(x)), 1e-12, None))

    def save_model(self, model: Any, spec: ModelSpec, model_dir: Path) -> None:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / MODEL_FILE).write_bytes(pickle.dumps(model))
        spec.save(model_dir)

    def load_model(self, model_dir: Path) -> Any:
        return pickle.loads((model_dir / MODEL_FILE).read_bytes())

    def log_model(self, model: Any, name: str, sample: np.ndarray) -> str:
        info = mlflow.sklearn.log_model(model, name=name, input_example=sample)
        return str(info.model_uri)

    def build_variants(self, model: Any, spec: ModelSpec, train: ArraySplit,
                       config: CompressConfig, out_dir: Path, work: Path) -> Built:
        onnx = Candidate("onnx", ExportFormat.ONNX,
                         _write_onnx(model, spec.n_features, out_dir / "model.onnx"))
        calibration = train.x[:config.calibration_rows]
        return Built([onnx, *onnx_candidates(onnx, calibration, work)],
                     reference=lambda x: _logits(model, x),
                     skipped={"pruned": "no pruning for scikit-learn here"})


@pytest.fixture
def sklearn_framework() -> Iterator[str]:
    """The one registry line, undone after the test."""
    register_adapter(SklearnAdapter())
    yield "sklearn"
    unregister_adapter("sklearn")


def test_a_third_framework_trains_and_exports_through_the_real_steps(
        sklearn_framework: str, transformed: tuple[Path, Path], tmp_path: Path,
        store: str) -> None:
    assert sklearn_framework in framework_names()
    data, model_dir, exports = transformed[0], tmp_path / "model", tmp_path / "exports"
    with mlflow.start_run() as run:
        result = run_train(TrainConfig(framework=sklearn_framework, epochs=8,
                                       show_progress=False), data, model_dir)
    assert result.last_epoch.epoch == 8 and result.last_epoch.val_score > 0.85
    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.params["framework"] == "sklearn"
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")) == 8
    assert (model_dir / MODEL_FILE).is_file() and not (model_dir / "raw").exists()

    with mlflow.start_run():
        compressed = run_compress(CompressConfig(framework=sklearn_framework,
                                                 latency_calls=20), data, model_dir, exports)
    manifest = ExportManifest.load(exports)
    assert manifest.framework == "sklearn" and "onnx" in manifest.entries
    assert {r.name for r in compressed.results} == {"onnx", "onnx_int8_dynamic",
                                                    "onnx_int8_static"}
    test = read_arrays(data, Split.TEST, read_metadata(data))
    served = load_predictor(ExportFormat.ONNX, exports / manifest.entries["onnx"].path)(test.x)
    in_memory = SklearnAdapter().predict(SklearnAdapter().load_model(model_dir), test.x)
    assert (served.argmax(1) == in_memory.argmax(1)).mean() > 0.99
    assert (served.argmax(1) == test.y).mean() > 0.85
