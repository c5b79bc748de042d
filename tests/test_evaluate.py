"""Evaluate: library metrics, curves, slices, the champion re-scored on the same split,
and the blessing gate, against a real MLflow store and real trained models."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from components.config import EvaluateConfig, Framework, IngestConfig, TrainConfig
from components.data.dataset import Split, read_arrays, read_frame, read_metadata
from components.errors import ConfigError, DataError
from components.evaluate.champion import SAME_SPLIT
from components.evaluate.core import run_evaluate
from components.evaluate.gate import Baseline, judge
from components.evaluate.slices import slice_column, slice_labels
from components.frameworks import get_adapter
from components.ingest.core import run_ingest
from components.tags import ACCURACY_TAG, BLESSED_TAG, CHAMPION_SOURCE_TAG
from components.tasks import get_task
from components.train.core import run_train
from components.transform.core import run_transform


def _artifacts(run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in MlflowClient().list_artifacts(run_id, path)}


def _register_placeholder(name: str, accuracy: float) -> None:
    """A champion that cannot be loaded as a model: only its tag can be used."""
    with mlflow.start_run(nested=True):
        mlflow.log_dict({"x": 1}, "model/placeholder.json")
        uri = mlflow.get_artifact_uri("model")
    version = mlflow.register_model(uri, name, tags={ACCURACY_TAG: str(accuracy)}).version
    MlflowClient().set_registered_model_alias(name, "champion", version)


def _register_model(name: str, fw: Framework, model_dir: Path, data_dir: Path,
                    tag_accuracy: float) -> str:
    """Log and register a real model as the champion, the way push does."""
    adapter = get_adapter(fw)
    sample = read_arrays(data_dir, Split.TEST, read_metadata(data_dir)).x[:5]
    with mlflow.start_run(nested=True):
        uri = adapter.log_model(adapter.load_model(model_dir), "model", sample)
    version = mlflow.register_model(uri, name, tags={ACCURACY_TAG: str(tag_accuracy)}).version
    MlflowClient().set_registered_model_alias(name, "champion", version)
    return str(version)


def test_evaluate_logs_metrics_curves_slices_and_verdict(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path], digits_dir: Path,
        active_run: mlflow.ActiveRun) -> None:
    fw, model_dir = trained
    config = EvaluateConfig(framework=fw, model_name=f"eval-{fw.value}", slice_feature="label")
    result = run_evaluate(config, transformed[0], model_dir, raw_dir=digits_dir)
    assert result.verdict.blessed and "no champion" in result.verdict.reason
    test_rows = read_metadata(transformed[0]).rows["test"]
    assert 260 < test_rows < 280  # 15% of digits' 1,797 rows
    assert sum(map(sum, result.confusion)) == test_rows
    run = MlflowClient().get_run(active_run.info.run_id)
    metrics = run.data.metrics
    assert metrics["test_accuracy"] == result.accuracy > 0.85
    # mlflow.models.evaluate's own figures agree with the project's metric names.
    assert metrics["test_accuracy_score"] == pytest.approx(result.accuracy)
    assert metrics["test_f1_score"] == pytest.approx(metrics["test_f1_macro"])
    assert metrics["test_example_count"] == test_rows
    assert 0.9 < metrics["test_roc_auc"] <= 1.0
    assert {"f1_0", "precision_9", "recall_5"} <= set(metrics)
    assert run.data.tags[BLESSED_TAG] == "true"
    assert run.inputs.dataset_inputs[0].dataset.name == "digits-test"
    assert {"confusion_matrix.png", "test_confusion_matrix.png", "per_class_metrics.csv",
            "roc_curve.png", "precision_recall_curve.png", "verdict.json"} <= _artifacts(
                run.info.run_id)
    # Slicing by the raw label: a slice's accuracy is that class's recall.
    assert result.slices is not None and list(result.slices["slice"]) == [str(i)
                                                                         for i in range(10)]
    assert result.slices["rows"].sum() == test_rows
    for row in result.slices.itertuples():
        assert row.accuracy == pytest.approx(metrics[f"recall_{row.slice}"])
        assert metrics[f"slice_label_{row.slice}_accuracy"] == pytest.approx(row.accuracy)
    assert "slices/label.json" in _artifacts(run.info.run_id, "slices")
    verdict = json.loads(mlflow.artifacts.load_text(
        f"runs:/{run.info.run_id}/verdict.json"))
    assert verdict["blessed"] is True and verdict["thresholds"]["min_accuracy"] == 0.5
    assert result.roc is not None and result.roc.label == "9"
    assert result.roc.fpr[0] == 0.0 and result.roc.tpr[-1] == 1.0
    assert max(result.roc.thresholds) <= 1.0


def test_champion_is_rescored_on_the_same_split_not_taken_from_its_tag(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path],
        active_run: mlflow.ActiveRun) -> None:
    fw, model_dir = trained
    name = f"rescored-{fw.value}"
    version = _register_model(name, fw, model_dir, transformed[0], tag_accuracy=0.123)
    result = run_evaluate(EvaluateConfig(framework=fw, model_name=name), transformed[0],
                          model_dir)
    verdict = result.verdict
    assert verdict.champion_version == version and verdict.champion_source == SAME_SPLIT
    # The champion is the same model: re-scored it matches, the stale tag (0.123) is ignored.
    assert verdict.champion_value == pytest.approx(result.accuracy, abs=1e-6)
    assert verdict.blessed, verdict.reason
    metrics = MlflowClient().get_run(active_run.info.run_id).data.metrics
    assert metrics["champion_accuracy"] == pytest.approx(result.accuracy, abs=1e-6)
    assert metrics["champion_accuracy_score"] == pytest.approx(result.accuracy, abs=1e-6)
    assert "champion_confusion_matrix.png" in _artifacts(active_run.info.run_id)
    demanding = EvaluateConfig(framework=fw, model_name=name, min_improvement=0.01)
    with mlflow.start_run(nested=True):
        assert not run_evaluate(demanding, transformed[0], model_dir).verdict.blessed


def test_better_champion_refuses_a_worse_candidate(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path],
        tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    fw, good_dir = trained
    if fw is not Framework.TORCH:
        pytest.skip("one framework is enough here; the re-scoring test covers both")
    name = "better-champion"
    _register_model(name, fw, good_dir, transformed[0], tag_accuracy=0.5)
    weak_dir = tmp_path / "weak"
    with mlflow.start_run(nested=True):
        run_train(TrainConfig(framework=fw, epochs=1, learning_rate=1e-5, show_progress=False),
                  transformed[0], weak_dir)
    result = run_evaluate(EvaluateConfig(framework=fw, model_name=name, min_accuracy=0.0),
                          transformed[0], weak_dir)
    verdict = result.verdict
    assert not verdict.blessed
    assert verdict.champion_value is not None and verdict.champion_value > result.accuracy
    assert f"{result.accuracy:.4f}" in verdict.reason
    assert f"{verdict.champion_value:.4f}" in verdict.reason and SAME_SPLIT in verdict.reason
    assert MlflowClient().get_run(active_run.info.run_id).data.tags[BLESSED_TAG] == "false"


def test_unloadable_champion_falls_back_to_its_tag(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path],
        active_run: mlflow.ActiveRun) -> None:
    fw, model_dir = trained
    name = f"placeholder-{fw.value}"
    _register_placeholder(name, 0.999)
    verdict = run_evaluate(EvaluateConfig(framework=fw, model_name=name), transformed[0],
                           model_dir).verdict
    assert not verdict.blessed and verdict.champion_value == 0.999
    assert "could not be loaded" in verdict.reason and "recorded test_* tags" in verdict.reason
    tags = MlflowClient().get_run(active_run.info.run_id).data.tags
    assert "recorded test_* tags" in tags[CHAMPION_SOURCE_TAG]


def test_gate_thresholds() -> None:
    config = EvaluateConfig(framework=Framework.TORCH, model_name="m", min_accuracy=0.5)
    scores = {"test_accuracy": 0.89, "test_f1_macro": 0.88}
    assert judge({**scores, "test_accuracy": 0.4}, config, "m", None).blessed is False
    assert judge(scores, config, "m", None).blessed is True
    champion = Baseline("3", {"test_accuracy": 0.9, "test_f1_macro": 0.9}, SAME_SPLIT)
    worse = judge(scores, config, "m", champion)
    assert not worse.blessed and "0.8900 misses champion v3 accuracy 0.9000" in worse.reason
    assert judge({**scores, "test_accuracy": 0.9}, config, "m", champion).blessed
    tolerant = config.model_copy(update={"tolerance": 0.02})
    verdict = judge(scores, tolerant, "m", champion)
    assert verdict.blessed and verdict.champion_value == 0.9
    improving = config.model_copy(update={"min_improvement": 0.05})
    assert not judge({**scores, "test_accuracy": 0.94}, improving, "m", champion).blessed
    assert judge({**scores, "test_accuracy": 0.95}, improving, "m", champion).blessed
    strict_f1 = config.model_copy(update={"min_f1_macro": 0.95})
    both = judge({"test_accuracy": 0.95, "test_f1_macro": 0.9}, strict_f1, "m", champion)
    assert not both.blessed and "f1 macro 0.9000 below the minimum 0.95" in both.reason
    with pytest.raises(ValidationError, match="not both"):
        EvaluateConfig(framework=Framework.TORCH, tolerance=0.01, min_improvement=0.01)


def test_regression_gate_compares_in_the_metrics_direction() -> None:
    regression = get_task("regression")
    config = EvaluateConfig(framework=Framework.TORCH, model_name="m")
    champion = Baseline("2", {"test_rmse": 50.0, "test_mae": 40.0, "test_r2": 0.5}, SAME_SPLIT)
    better = {"test_rmse": 48.0, "test_mae": 41.0, "test_r2": 0.52}
    assert judge(better, config, "m", champion, regression).blessed  # lower RMSE wins
    worse = judge({**better, "test_rmse": 51.0}, config, "m", champion, regression)
    assert not worse.blessed and "lower is better" in worse.reason
    by_mae = config.model_copy(update={"gate_metric": "mae"})
    assert not judge(better, by_mae, "m", champion, regression).blessed
    assert judge(better, config.model_copy(update={"tolerance": 2.0, "gate_metric": "mae"}),
                 "m", champion, regression).blessed
    floor = judge({**better, "test_r2": -0.1}, config, "m", None, regression)
    assert not floor.blessed and "r2 -0.1000 below the minimum 0.0" in floor.reason
    with pytest.raises(ValueError, match="does not apply to regression"):
        judge(better, config.model_copy(update={"gate_metric": "accuracy"}), "m", None,
              regression)


def test_slice_labels_by_value_and_by_quantile() -> None:
    few = slice_labels(pd.Series([3, 1, 2, 1, 3, 10]), bins=4)
    assert list(few.cat.categories) == ["1", "2", "3", "10"]
    many = slice_labels(pd.Series(np.arange(100, dtype=float)), bins=4)
    assert len(many.cat.categories) == 4 and many.value_counts().tolist() == [25] * 4
    text = slice_labels(pd.Series(["b", "a", "b"]), bins=4)
    assert list(text.cat.categories) == ["a", "b"]


def test_bad_slice_feature_and_roc_class_are_named(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path], digits_dir: Path,
        active_run: mlflow.ActiveRun) -> None:
    with pytest.raises(DataError, match="slice_feature 'nope' is not a column"):
        slice_column("nope", transformed[0], digits_dir,
                     read_metadata(transformed[0]).rows["test"])
    with pytest.raises(DataError, match="do not match"):
        slice_column("label", transformed[0], digits_dir, 100)
    fw, model_dir = trained
    config = EvaluateConfig(framework=fw, model_name="bad-roc", roc_class="eleven")
    with pytest.raises(ConfigError, match="roc_class 'eleven' is not a class"):
        run_evaluate(config, transformed[0], model_dir)


@pytest.fixture(scope="module")
def breast_cancer(store: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path,
                                                                                   Path]:
    """Binary data: (raw dir, transformed dir, torch model dir)."""
    root = tmp_path_factory.mktemp("binary")
    with mlflow.start_run():
        run_ingest(IngestConfig(source="sklearn:breast_cancer"), root / "raw")
        run_transform(root / "raw", root / "data", root / "transform.json")
        run_train(TrainConfig(framework=Framework.TORCH, epochs=5, show_progress=False),
                  root / "data", root / "model")
    return root / "raw", root / "data", root / "model"


def test_binary_roc_pr_and_numeric_slices(breast_cancer: tuple[Path, Path, Path],
                                          active_run: mlflow.ActiveRun) -> None:
    raw, data, model = breast_cancer
    config = EvaluateConfig(framework=Framework.TORCH, model_name="binary",
                            slice_feature="mean radius", slice_bins=3)
    result = run_evaluate(config, data, model, raw_dir=raw)
    metrics = MlflowClient().get_run(active_run.info.run_id).data.metrics
    assert 0.9 < metrics["test_roc_auc"] <= 1.0 and metrics["test_average_precision"] > 0.9
    # The binary evaluator of mlflow adds the confusion counts for the positive class.
    counts = result.confusion
    assert metrics["test_true_positives"] == counts[1][1]
    assert metrics["test_false_negatives"] == counts[1][0]
    assert result.roc is not None and result.roc.label == result.classes[1]
    assert {"roc_curve.png", "precision_recall_curve.png"} <= _artifacts(
        active_run.info.run_id)
    slices = result.slices
    assert slices is not None and len(slices) == 3
    test_rows = len(read_frame(data, Split.TEST))
    assert slices["rows"].sum() == test_rows
    first = slices["slice"].iloc[0]
    assert first.startswith("(") and float(first[1:].split(",")[0]) > 5  # raw units, not z
    key = "slice_mean_radius_" + "".join(c if c.isalnum() or c in "_-." else "_"
                                         for c in first)
    assert metrics[f"{key}_accuracy"] == pytest.approx(slices["accuracy"].iloc[0])

