"""The `twinflow` CLI on bad input: one clear error line, non-zero exit, nothing registered.

These run the real CLI in a subprocess; the data errors go through the real KFP
local runner up to the failing step.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from components.tags import KIND_TAG, PIPELINE_KIND
from tests.conftest import cli_env


def _twinflow(tmp_path: Path, *args: str,
              uri: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args, "-q"], cwd=tmp_path,
                          env=cli_env(tmp_path, uri), capture_output=True, text=True, timeout=300)


def _last_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _registered_models(tmp_path: Path) -> list[str]:
    db = tmp_path / ".twinflow" / "mlflow.db"
    if not db.exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    return [m.name for m in client.search_registered_models()]


def test_unknown_framework(tmp_path: Path) -> None:
    result = _twinflow(tmp_path, "run", "--framework", "jax")
    assert result.returncode == 2
    assert "'jax' is not one of 'torch', 'tensorflow', 'both'" in result.stderr


def test_missing_data_file(tmp_path: Path) -> None:
    result = _twinflow(tmp_path, "run", "--data", "nope.csv", "--label", "y")
    assert result.returncode == 1
    assert _last_error(result) == "twinflow: error: ingest: nope.csv: data file not found"
    assert _registered_models(tmp_path) == []


def test_csv_without_label_column(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b\n" + "1,2\n" * 20)
    result = _twinflow(tmp_path, "run", "--data", "d.csv", "--label", "species")
    assert result.returncode == 1
    assert "d.csv: label column 'species' not found; columns are: a, b" in _last_error(result)
    assert _registered_models(tmp_path) == []


def test_label_with_one_class(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,y\n" + "1,cat\n" * 20)
    result = _twinflow(tmp_path, "run", "--data", "d.csv", "--label", "y", "-f", "tensorflow")
    assert result.returncode == 1
    assert "label column 'y' has a single class 'cat'" in _last_error(result)
    assert _registered_models(tmp_path) == []
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get(KIND_TAG) == PIPELINE_KIND]
    assert [r.info.status for r in parent] == ["FAILED"]
    assert {r.info.run_name: r.info.status for r in runs if r not in parent} == {"ingest": "FAILED"}


def test_unreachable_tracking_server(tmp_path: Path) -> None:
    start = time.perf_counter()
    result = _twinflow(tmp_path, "run", uri="http://127.0.0.1:9")
    assert result.returncode == 1
    assert _last_error(result).startswith(
        "twinflow: error: MLflow tracking server http://127.0.0.1:9 is unreachable")
    assert time.perf_counter() - start < 60, "fails fast instead of retrying for minutes"


def test_invalid_option_value(tmp_path: Path) -> None:
    result = _twinflow(tmp_path, "run", "--epochs", "0")
    assert result.returncode == 1
    assert "invalid option: epochs: Input should be greater than or equal to 1" in result.stderr


def test_rollback_of_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "rollback", "--model", "nope"],
                            cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert _last_error(result) == ("twinflow: error: model 'nope' has no 'champion' and "
                                   "'previous-champion' pair to roll back")


def test_conflicting_champion_rules_are_refused(tmp_path: Path) -> None:
    result = _twinflow(tmp_path, "run", "--tolerance", "0.02", "--min-improvement", "0.01")
    assert result.returncode == 1
    assert "set either tolerance or min_improvement, not both" in result.stderr
    assert not (tmp_path / ".twinflow" / "mlflow.db").exists()  # refused before any run
