"""The framework comparison: decision logic on its own, then a real `--framework
both` pipeline run, `twinflow compare`, and the MLflow UI in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.compare.core import Comparison, FrameworkFigures, Row, recommend, table
from components.config import Priority
from components.tags import KIND_TAG, PIPELINE_KIND, RECOMMENDATION_TAG
from tests.conftest import REPO, cli_env


def _figures(fw: str, accuracy: float, latency: float, size: float) -> FrameworkFigures:
    values: dict[Row, float | None] = dict.fromkeys(Row, 1.0)
    values |= {Row.TEST_ACCURACY: accuracy, Row.FP32_LATENCY_P50: latency,
               Row.INT8_LATENCY_P50: latency * 2, Row.FP32_SIZE: size * 3, Row.INT8_SIZE: size}
    return FrameworkFigures(fw, values, True, {"a": 0.5, "b": 0.75})


def test_recommendation_follows_the_stated_priority() -> None:
    c = Comparison("r1", [_figures("torch", 0.98, 0.5, 40), _figures("tensorflow", 0.97, 0.2, 60)])
    assert recommend(c, Priority.ACCURACY) == (
        "prefer accuracy: torch (0.98 accuracy vs 0.97 for tensorflow, a margin of 1 points)")
    assert recommend(c, Priority.LATENCY).startswith("prefer latency: tensorflow (0.2 ms p50")
    assert recommend(c, Priority.SIZE).startswith("prefer size: torch (40 KiB vs 60")
    tie = Comparison("r2", [_figures("torch", 0.9, 1, 1), _figures("tensorflow", 0.9, 1, 1)])
    assert recommend(tie, Priority.ACCURACY) == "prefer accuracy: tie (0.9 accuracy each)"


def test_table_has_every_figure_per_class_and_formats() -> None:
    c = Comparison("r", [_figures("torch", 0.9, 1, 1), _figures("tensorflow", 0.8, 1, 1)])
    frame = table(c)
    assert list(frame.columns) == ["figure", "torch", "tensorflow"]
    figures = frame["figure"].tolist()
    assert {"test accuracy", "export formats", "passed the blessing gate", "F1 class b"} <= set(
        figures)
    assert frame.set_index("figure").loc["export formats", "tensorflow"].startswith("Keras")


@pytest.fixture(scope="module")
def both_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real `twinflow run --framework both`: (working dir, parent run id)."""
    work = tmp_path_factory.mktemp("both")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", "-f", "both",
                             "--epochs", "4", "--prefer", "size"], cwd=work,
                            env=cli_env(work), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "comparison: prefer size:" in result.stdout
    client = _client(work)
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    [parent] = client.search_runs([exp.experiment_id], f"tags.`{KIND_TAG}` = '{PIPELINE_KIND}'")
    return work, parent.info.run_id


def _client(work: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{work / '.twinflow' / 'mlflow.db'}")


@pytest.mark.slow
def test_both_run_logs_the_comparison_on_the_parent(both_run: tuple[Path, str]) -> None:
    work, run_id = both_run
    client = _client(work)
    parent = client.get_run(run_id)
    assert parent.data.tags[RECOMMENDATION_TAG].startswith("prefer size: ")
    assert {"torch_test_accuracy", "tensorflow_test_accuracy"} <= set(parent.data.metrics)
    files = {f.path for f in client.list_artifacts(run_id, "comparison")}
    assert {"comparison/table.json", "comparison/report.html", "comparison/accuracy.png",
            "comparison/latency.png", "comparison/size.png"} <= files
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{run_id}'")
    names = {c.info.run_name for c in children}
    assert {"train-torch", "train-tensorflow", "compare"} <= names
    # identical splits: both evaluated the same number of test rows
    evaluations = [c for c in children if c.info.run_name.startswith("evaluate-")]
    assert len(evaluations) == 2


@pytest.mark.slow
def test_compare_command_prints_table_and_writes_html(both_run: tuple[Path, str],
                                                      tmp_path: Path) -> None:
    work, run_id = both_run
    page = tmp_path / "report.html"
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "compare", run_id,
                             "--prefer", "accuracy", "--html", str(page)], cwd=work,
                            env=cli_env(work), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "tensorflow" in result.stdout
    assert "prefer accuracy:" in result.stdout
    text = page.read_text()
    assert text.count("<img") == 4 and "int8 latency p99" in text
    latest = subprocess.run([sys.executable, "-m", "pipelines.cli", "compare"], cwd=work,
                            env=cli_env(work), capture_output=True, text=True, timeout=300)
    assert latest.returncode == 0 and f"run {run_id}" in latest.stdout


def test_compare_without_a_both_run_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "compare"], cwd=tmp_path,
                            env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "twinflow: error: no --framework both run in experiment 'twinflow'" in result.stderr


@pytest.mark.slow
def test_mlflow_ui_shows_steps_metrics_and_report_in_chromium(
        both_run: tuple[Path, str]) -> None:
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver (setup.sh installs them)")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from tests.browser import MlflowUi

    work, run_id = both_run
    shots = REPO / "test-artifacts"
    with MlflowUi(work, chromedriver) as ui:
        run_page = ui.open_run(run_id)
        assert "torch_test_accuracy" in run_page and "tensorflow_test_accuracy" in run_page
        ui.screenshot(shots / "parent-run.png")
        experiment_page = ui.open_experiment_with_children(run_id)
        for step in ("ingest", "train-torch", "evaluate-tensorflow", "compare"):
            assert step in experiment_page, f"step run {step} not shown"
        ui.screenshot(shots / "experiment-runs.png")
        report = ui.open_artifact(run_id, "comparison/report.html")
        assert "twinflow framework comparison" in report and "prefer size:" in report
        ui.screenshot(shots / "comparison-report.png")
