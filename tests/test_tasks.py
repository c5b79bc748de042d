"""Tasks: auto detection, regression end to end (diabetes and a generated non-linear set,
both frameworks, served over HTTP), binary with one logit, and the bad-input messages.

The end-to-end tests are real `twinflow run` pipelines (KFP's local runner, MLflow
SQLite store) and are marked slow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from components.config import IngestConfig
from components.errors import DataError
from components.ingest.core import run_ingest
from components.tags import STEP_TAG, TASK_TAG, VERSION_TASK_TAG
from components.tasks import Outputs, TaskName, detect_task
from tests.conftest import cli_env


def test_auto_detection_and_its_reason() -> None:
    rng = np.random.default_rng(0)
    assert detect_task(rng.normal(size=200), True, "auto").task == TaskName.REGRESSION
    ints = rng.integers(25, 346, size=400).astype(float)  # like diabetes' target
    choice = detect_task(ints, True, "auto")
    assert choice.task == TaskName.REGRESSION and "distinct values" in choice.reason
    assert detect_task(rng.integers(0, 10, 500), True, "auto").task == TaskName.MULTICLASS
    assert detect_task(np.array(["a", "b"] * 50, dtype=object), False,
                       "auto").task == TaskName.BINARY
    assert detect_task(rng.normal(size=50), True, "multiclass").reason == "--task multiclass"


def test_outputs_answers() -> None:
    np.testing.assert_allclose(Outputs.LOGIT.answers(np.array([[0.0], [2.0]])),
                               [[0.5, 0.5], [1 - 0.880797, 0.880797]], atol=1e-6)
    np.testing.assert_allclose(Outputs.VALUES.answers(np.array([[3.5], [-1.0]])), [3.5, -1.0])
    assert Outputs.LOGITS.answers(np.array([[1.0, 1.0, 1.0]])).sum() == pytest.approx(1.0)


def test_bad_task_choices_are_named(tmp_path: Path, store: str) -> None:
    csv = tmp_path / "words.csv"
    pd.DataFrame({"x": np.arange(60.0), "y": ["a", "b", "c"] * 20}).to_csv(csv, index=False)
    with mlflow.start_run(), pytest.raises(DataError, match="'y' is not numeric; regression"):
        run_ingest(IngestConfig(source=str(csv), label="y", task="regression",
                                schema_source="none"), tmp_path / "out1")
    with mlflow.start_run(), pytest.raises(DataError, match="binary needs two classes"):
        run_ingest(IngestConfig(source=str(csv), label="y", task="binary",
                                schema_source="none"), tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_regression_split_is_binned_and_the_label_stays_numeric(tmp_path: Path,
                                                                store: str) -> None:
    with mlflow.start_run() as run:
        meta = run_ingest(IngestConfig(source="sklearn:diabetes", schema_source="none"),
                          tmp_path / "raw")
    assert meta.task == TaskName.REGRESSION and meta.classes == []
    assert MlflowClient().get_run(run.info.run_id).data.tags[TASK_TAG] == "regression"
    from components.data.dataset import Split, read_frame

    means = {s: float(read_frame(tmp_path / "raw", s)[meta.label].mean()) for s in Split}
    overall = np.mean(list(means.values()))
    # stratified by label bins: every split's mean label is close to the others'
    assert all(abs(m - overall) < 0.08 * overall for m in means.values()), means


def test_regression_evaluate_gates_and_slices(tmp_path: Path, store: str) -> None:
    """Train, evaluate with slices, register as champion, and evaluate a second, worse
    model against it: the gate compares RMSE, lower being better."""
    from components.config import EvaluateConfig, TrainConfig
    from components.evaluate.core import run_evaluate
    from components.train.core import run_train
    from components.transform.core import run_transform

    with mlflow.start_run():
        run_ingest(IngestConfig(source="sklearn:diabetes", schema_source="none"),
                   tmp_path / "raw")
        run_transform(tmp_path / "raw", tmp_path / "data", tmp_path / "t.json")
    for name, epochs in (("good", 100), ("poor", 1)):
        with mlflow.start_run():
            run_train(TrainConfig(framework="torch", epochs=epochs, model_ref="linear",
                                  learning_rate=0.01, show_progress=False),
                      tmp_path / "data", tmp_path / name)
    config = EvaluateConfig(framework="torch", model_name="reg-gate", slice_feature="bmi")
    with mlflow.start_run() as evaluated:
        good = run_evaluate(config, tmp_path / "data", tmp_path / "good", tmp_path / "raw")
    assert good.verdict.blessed and good.accuracy is None and good.metrics["test_r2"] > 0.4
    assert good.slices is not None and {"rmse", "mae", "rows"} <= set(good.slices.columns)
    logged = MlflowClient().get_run(evaluated.info.run_id).data.metrics
    assert any(k.startswith("slice_bmi_") and k.endswith("_rmse") for k in logged)
    with mlflow.start_run() as run:
        from components.frameworks import get_adapter

        adapter = get_adapter("torch")
        uri = adapter.log_model(adapter.load_model(tmp_path / "good"), "model",
                                np.zeros((2, 10), np.float32))
        version = mlflow.register_model(uri, "reg-gate")
        MlflowClient().set_registered_model_alias("reg-gate", "champion", version.version)
        del run
    with mlflow.start_run():
        poor = run_evaluate(config, tmp_path / "data", tmp_path / "poor")
    assert not poor.verdict.blessed, poor.verdict.reason
    assert poor.verdict.champion_value == pytest.approx(good.metrics["test_rmse"], rel=1e-4)
    assert "misses champion v1 rmse" in poor.verdict.reason and "lower is better" in \
        poor.verdict.reason


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", *args],
                          cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")


def _step_runs(client: MlflowClient, step: str) -> dict[str, mlflow.entities.Run]:
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{STEP_TAG}` = '{step}'")
    return {r.data.tags.get("twinflow.framework", ""): r for r in runs}


@pytest.mark.slow
def test_diabetes_regression_end_to_end_both_frameworks(tmp_path: Path) -> None:
    """Detected as regression; RMSE/MAE/R² from evaluate, residual plots, a registered
    version that MLflow's pyfunc loader answers in the label's units, and `twinflow
    serve` answering values over V1 and V2 that equal the exports' in-process answers."""
    done = _run(tmp_path, "--framework", "both", "--data", "sklearn:diabetes", "--epochs",
                "40", "--early-stopping-patience", "10")
    assert "rmse" in done.stdout
    client = _client(tmp_path)
    evaluations = _step_runs(client, "evaluate")
    for fw in ("torch", "tensorflow"):
        metrics = evaluations[fw].data.metrics
        assert metrics["test_r2"] > 0.3, metrics  # a linear model reaches ~0.45 here
        assert 30 < metrics["test_rmse"] < 70 and metrics["test_mae"] < metrics["test_rmse"]
        assert "test_root_mean_squared_error" in metrics  # mlflow.models.evaluate's own
        artifacts = {a.path for a in client.list_artifacts(evaluations[fw].info.run_id)}
        assert {"residuals.png", "predicted_vs_actual.png"} <= artifacts
    for fw in ("torch", "tensorflow"):  # each framework its own registered model
        [version] = client.search_model_versions(f"name='diabetes-{fw}'")
        assert version.tags[VERSION_TASK_TAG] == "regression"
        _registered_model_answers_label_units(tmp_path, f"diabetes-{fw}", version.version)
    _served_values(tmp_path, "diabetes-torch")


def _registered_model_answers_label_units(tmp_path: Path, name: str, version: str) -> None:
    """`mlflow.pyfunc.load_model(models:/...)` on raw rows as scikit-learn has them gives
    values close to the labels (not standardised ones)."""
    from components.export.pyfunc_model import PREDICTION_COLUMN

    values, columns = _diabetes()
    rows = pd.DataFrame(values, columns=columns)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    pred = model.predict(rows)[PREDICTION_COLUMN].to_numpy()
    y = _diabetes_target()
    assert np.sqrt(np.mean((pred - y) ** 2)) < 70 and abs(pred.mean() - y.mean()) < 25


def _served_values(tmp_path: Path, name: str) -> None:
    from components.export.manifest import ExportManifest
    from components.export.raw_runtime import load_raw_predictor
    from components.serve.protocol import PREDICTION
    from tests.test_serve import Server

    values, columns = _diabetes()
    rows = pd.DataFrame(values, columns=columns).head(20)
    env = cli_env(tmp_path, f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    server = Server([sys.executable, "-m", "pipelines.cli", "serve", "--model", name],
                    env=env, name=name)
    try:
        server.wait_ready()
        v1 = server.v1(rows.to_dict("records"))
        assert v1.status_code == 200, v1.text
        got = np.asarray(v1.json()["predictions"], dtype=np.float64)
        v2 = server.v2({"inputs": [{"name": n, "shape": [len(rows)], "datatype": "FP64",
                                    "data": rows[n].astype(float).tolist()}
                                   for n in rows.columns]})
        assert v2.status_code == 200, v2.text
        [out] = v2.json()["outputs"]
        assert out["name"] == PREDICTION and out["shape"] == [len(rows)]
    finally:
        server.stop()
    [exports] = (tmp_path / ".twinflow" / "serving" / name).glob("v*/exports")
    manifest = ExportManifest.load(exports)
    assert manifest.output is Outputs.VALUES and manifest.classes == []
    entry = manifest.entries[manifest.serving_default]
    want = load_raw_predictor(entry.format, exports / entry.path, manifest.output)(rows)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["data"], want, rtol=1e-4, atol=1e-3)
    assert got.min() > 0 and got.max() < 400  # label units (the target spans 25..346)


def _diabetes() -> tuple[np.ndarray, list[str]]:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(as_frame=True)
    return bunch.data.to_numpy(), list(bunch.data.columns)


def _diabetes_target() -> np.ndarray:
    from sklearn.datasets import load_diabetes

    return np.asarray(load_diabetes().target, dtype=np.float64)


def nonlinear_frame(rows: int, seed: int) -> pd.DataFrame:
    """y = 3 sin(2 a) + b² - a·c + noise: far from linear in the raw features."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(-2, 2, rows), rng.normal(size=rows), rng.uniform(0, 3, rows)
    y = 3 * np.sin(2 * a) + b ** 2 - a * c + rng.normal(scale=0.2, size=rows)
    return pd.DataFrame({"a": a, "b": b, "c": c, "target": 100 + 10 * y})


@pytest.mark.slow
def test_nonlinear_regression_beats_a_linear_fit(tmp_path: Path) -> None:
    """Both frameworks in one run (the bake-off), each far above a linear fit."""
    from sklearn.linear_model import LinearRegression

    csv = tmp_path / "curvy.csv"
    frame = nonlinear_frame(1500, seed=3)
    frame.to_csv(csv, index=False)
    _run(tmp_path, "--framework", "both", "--data", str(csv), "--label", "target",
         "--epochs", "60", "--model-options", '{"width": 64, "depth": 2}')
    linear = LinearRegression().fit(frame[["a", "b", "c"]], frame["target"])
    linear_r2 = linear.score(frame[["a", "b", "c"]], frame["target"])  # in-sample, generous
    evaluations = _step_runs(_client(tmp_path), "evaluate")
    for framework in ("torch", "tensorflow"):
        r2 = evaluations[framework].data.metrics["test_r2"]
        assert r2 > max(0.8, linear_r2 + 0.2), (framework, r2, linear_r2)


@pytest.mark.slow
def test_binary_with_one_logit(tmp_path: Path) -> None:
    _run(tmp_path, "--framework", "torch", "--data", "sklearn:breast_cancer", "--epochs", "15",
         "--binary-logits", "1", "--min-accuracy", "0.8")
    client = _client(tmp_path)
    evaluation = _step_runs(client, "evaluate")["torch"]
    metrics = evaluation.data.metrics
    assert metrics["test_accuracy"] > 0.9 and metrics["test_roc_auc"] > 0.95, metrics
    assert 0.0 < metrics["test_best_f1_threshold"] < 1.0
    assert evaluation.data.params["decision_threshold"] == "0.5"
    train = _step_runs(client, "train")["torch"]
    assert train.data.params["n_outputs"] == "1" and train.data.tags[TASK_TAG] == "binary"


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_early_stopping_keeps_the_best_epoch(tmp_path: Path, store: str,
                                             framework: str) -> None:
    """An MLP on diabetes' 311 train rows overfits: with patience 3 training stops well
    before 300 epochs, and the saved model is the best validation epoch's."""
    from components.config import TrainConfig
    from components.data.dataset import Split, read_arrays, read_metadata
    from components.frameworks import get_adapter
    from components.train.core import run_train
    from components.train.worker import read_history
    from components.transform.core import run_transform

    with mlflow.start_run():
        run_ingest(IngestConfig(source="sklearn:diabetes", schema_source="none"),
                   tmp_path / "raw")
        run_transform(tmp_path / "raw", tmp_path / "data", tmp_path / "t.json")
    with mlflow.start_run():
        run_train(TrainConfig(framework=framework, epochs=300, early_stopping_patience=3,
                              learning_rate=0.01, show_progress=False),
                  tmp_path / "data", tmp_path / "model")
    history = read_history(tmp_path / "model")
    assert len(history) < 300
    best = min(history, key=lambda m: m.val_loss)
    assert history[-1].epoch - best.epoch == 3
    meta = read_metadata(tmp_path / "data")
    val = read_arrays(tmp_path / "data", Split.VAL, meta)
    adapter = get_adapter(framework)
    pred = adapter.predict(adapter.load_model(tmp_path / "model"), val.x, Outputs.VALUES)
    rmse = float(np.sqrt(np.mean((pred - val.y) ** 2)))
    assert rmse == pytest.approx(best.val_score, rel=1e-3)
