"""Evaluate: metrics and figure logged, the blessing gate against a real registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from components.config import EvaluateConfig, Framework
from components.evaluate.core import ACCURACY_TAG, judge, run_evaluate


def _register_champion(name: str, accuracy: float) -> None:
    with mlflow.start_run():
        mlflow.log_dict({"x": 1}, "model/placeholder.json")
        uri = mlflow.get_artifact_uri("model")
    version = mlflow.register_model(uri, name, tags={ACCURACY_TAG: str(accuracy)}).version
    MlflowClient().set_registered_model_alias(name, "champion", version)


def test_evaluate_logs_metrics_confusion_and_verdict(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path],
        active_run: mlflow.ActiveRun) -> None:
    fw, model_dir = trained
    config = EvaluateConfig(framework=fw, model_name=f"eval-{fw.value}")
    result = run_evaluate(config, transformed[0], model_dir)
    assert result.verdict.blessed and "no champion" in result.verdict.reason
    assert sum(map(sum, result.confusion)) == 270
    run = MlflowClient().get_run(active_run.info.run_id)
    assert run.data.metrics["test_accuracy"] == result.accuracy > 0.85
    assert {"f1_0", "precision_9", "recall_5"} <= set(run.data.metrics)
    assert run.data.tags["twinflow.blessed"] == "true"
    files = [f.path for f in MlflowClient().list_artifacts(active_run.info.run_id)]
    assert "confusion_matrix.png" in files


def test_gate_against_champion(store: str) -> None:
    name = "gate-model"
    config = EvaluateConfig(framework=Framework.TORCH, model_name=name, min_accuracy=0.5)
    assert judge(0.4, config, name).blessed is False  # below the floor, no champion
    assert judge(0.8, config, name).blessed is True  # no champion yet
    _register_champion(name, 0.9)
    assert judge(0.89, config, name).blessed is False
    assert judge(0.90, config, name).blessed is True
    tolerant = config.model_copy(update={"tolerance": 0.02})
    verdict = judge(0.89, tolerant, name)
    assert verdict.blessed and verdict.champion_accuracy == 0.9
