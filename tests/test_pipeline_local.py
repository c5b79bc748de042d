"""End to end: `twinflow run` through KFP's local runner, then what MLflow holds.

Marked slow: each run trains a real model in a real pipeline (about a minute).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from components.tags import (
    ACCURACY_TAG,
    BLESSED_TAG,
    COMPRESSION_VARIANT_TAG,
    STEP_TAG,
    VERDICT_TAG,
    VERSION_FRAMEWORK_TAG,
)
from tests.conftest import cli_env, pipeline_runs

pytestmark = pytest.mark.slow
STEPS = ["ingest", "transform", "train", "evaluate", "compress", "push"]


def _run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", *args],
                          cwd=workdir, env=cli_env(workdir), capture_output=True, text=True,
                          timeout=900)


def _kfp_evaluate_outputs(workdir: Path) -> list[dict[str, dict]]:
    """Metadata of the evaluate task's KFP artifacts, per pipeline run, oldest first.

    Task folders are named by KFP: ``evaluate`` in the first branch, ``evaluate-2`` ...
    """
    root = workdir / ".twinflow" / "pipeline_root"
    outputs = []
    for path in sorted(root.glob("*/evaluate*/executor_output.json")):
        artifacts = json.loads(path.read_text())["artifacts"]
        outputs.append({k: v["artifacts"][0]["metadata"] for k, v in artifacts.items()})
    return outputs


def _children(client: MlflowClient, parent: Run) -> dict[str, Run]:
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.data.tags[STEP_TAG]: r for r in runs}


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_pipeline_registers_champion_then_refuses_a_worse_model(
        tmp_path: Path, framework: str) -> None:
    first = _run(tmp_path, "--framework", framework, "--slice-feature", "label",
                 "--roc-class", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "blessed" in first.stdout and f"digits-{framework} v1 @champion" in first.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    [parent] = pipeline_runs(client)
    assert parent.info.status == "FINISHED"
    children = _children(client, parent)
    assert sorted(children) == sorted(STEPS)
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert children["train"].data.metrics["val_accuracy"] > 0.9
    assert len(client.get_metric_history(children["train"].info.run_id, "loss")) == 10
    accuracy = children["evaluate"].data.metrics["test_accuracy"]
    assert accuracy >= 0.9
    evaluate = children["evaluate"].data
    assert evaluate.metrics["slice_label_3_rows"] > 0
    assert evaluate.params["slice_feature"] == "label"
    [kfp] = _kfp_evaluate_outputs(tmp_path)
    assert kfp["metrics"]["test_accuracy"] == pytest.approx(accuracy)
    assert kfp["metrics"]["blessed"] == 1.0
    rows = [r["row"] for r in kfp["confusion"]["confusionMatrix"]["rows"]]
    assert sum(map(sum, rows)) == evaluate.metrics["test_example_count"]
    assert kfp["confusion"]["roc_class"] == "3" and len(kfp["confusion"]["confidenceMetrics"]) > 2
    assert 0 < children["compress"].data.metrics["size_ratio"] < 1
    name = f"digits-{framework}"
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags[VERSION_FRAMEWORK_TAG] == framework
    assert float(champion.tags[ACCURACY_TAG]) == pytest.approx(accuracy, abs=1e-5)
    assert champion.run_id == children["push"].info.run_id
    assert champion.tags[COMPRESSION_VARIANT_TAG] == (
        children["compress"].data.params["compression_variant"])

    worse = _run(tmp_path, "--framework", framework, "--epochs", "1", "--learning-rate",
                 "0.0001", "--min-accuracy", "0")
    assert worse.returncode == 0, worse.stderr[-3000:]
    # The summary prints the verdict's reason (rich wraps it at spaces).
    assert "not blessed" in worse.stdout and "misses champion v1 accuracy" in " ".join(
        worse.stdout.split())
    assert _kfp_evaluate_outputs(tmp_path)[-1]["metrics"]["blessed"] == 0.0
    second = pipeline_runs(client)[-1]
    steps = _children(client, second)
    assert "push" not in steps
    assert steps["evaluate"].data.tags[BLESSED_TAG] == "false"
    assert "re-evaluated on the same test split" in steps["evaluate"].data.tags[VERDICT_TAG]
    assert steps["evaluate"].data.metrics["test_accuracy"] < accuracy
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
