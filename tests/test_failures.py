"""Issue 17 (reliability): every failure's last line names the real cause (a full disk,
a bug, a step over its time limit), and the parent run's error tag holds that line."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from components.errors import DataError, step_errors
from components.lifecycle.core import finish
from components.settings import STEP_TIMEOUT_ENV
from components.tags import ERROR_TAG, Step
from components.tracking import start_pipeline_run, step_run
from tests.conftest import cli_env, pipeline_runs

REPO = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (skips the test where mounting is not
    allowed, e.g. without root or in an unprivileged container)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def error_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "errors.txt"
    monkeypatch.setenv("TWINFLOW_ERROR_FILE", str(path))
    return path


def test_disk_full_is_one_line_naming_the_full_file_system(
        tmp_path: Path, error_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with small_tmpfs(tmp_path / "home", "64k") as home:
        monkeypatch.setenv("TWINFLOW_HOME", str(home))
        with pytest.raises(SystemExit) as stop, step_errors(Step.COMPRESS):
            (home / "model.onnx").write_bytes(b"\0" * 2**20)
        [line] = error_file.read_text().splitlines()
    assert stop.value.code == 1
    assert line.startswith("compress: disk full ([Errno 28] No space left on device); ")
    assert line.endswith(f"the file system of {home.resolve()} has 0.0 MB free")


def test_a_bug_keeps_its_traceback_and_reports_its_line(error_file: Path) -> None:
    with pytest.raises(KeyError), step_errors(Step.EVALUATE):
        {}["missing"]
    assert error_file.read_text().splitlines() == [
        "evaluate: KeyError: 'missing' (traceback in the step log)"]


def test_a_step_over_its_time_limit_fails_naming_it(
        error_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STEP_TIMEOUT_ENV, "1")
    with pytest.raises(SystemExit), step_errors(Step.TRAIN):
        time.sleep(60)
    assert error_file.read_text().splitlines() == [
        f"train: exceeded its time limit of 1 s (twinflow run --step-timeout, env "
        f"{STEP_TIMEOUT_ENV})"]


def test_the_parent_run_is_tagged_with_the_failed_steps_line(
        store: str, error_file: Path) -> None:
    """KFP tells the exit task only 'Task exit-handler-1 failed.'; the parent run's
    error tag is the step's own line instead."""
    parent = start_pipeline_run("key-tag-1", "failures", "tagged", {})
    with pytest.raises(SystemExit), step_errors(Step.INGEST), step_run(parent, Step.INGEST):
        raise DataError("shop.csv line 7: 3 fields, expected 4")
    finish("key-tag-1", "failures", "FAILED", "Task exit-handler-1 failed.")
    run = MlflowClient().get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG] == "ingest: shop.csv line 7: 3 fields, expected 4"
    assert error_file.read_text().splitlines() == [run.data.tags[ERROR_TAG]]


def _run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def _runs_left(tmp_path: Path) -> tuple[MlflowClient, list[str]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("twinflow")
    assert exp is not None
    return client, [r.info.run_name or "" for r in client.search_runs([exp.experiment_id])
                    if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_a_full_disk_during_a_run_names_it_and_registers_nothing(tmp_path: Path) -> None:
    """The artifact store's disk fills up mid-run (600 kB: ingest and train fit, the
    evaluation plots and exports do not): the last line names the full file system,
    as does the parent run's error tag; the summary judges nothing, nothing is
    registered and no run is left RUNNING."""
    artifacts = tmp_path / ".twinflow" / "artifacts"
    with small_tmpfs(artifacts, "600k"):
        done = _run_cli(tmp_path, "--epochs", "1")
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "disk full ([Errno 28] No space left on device)" in last, done.stderr[-3000:]
    assert last.endswith(f"the file system of {artifacts.resolve()} has 0.0 MB free")
    assert " blessed (" not in done.stdout
    client, running = _runs_left(tmp_path)
    assert running == []
    [parent] = pipeline_runs(client)
    assert parent.info.status == "FAILED"
    assert last == f"twinflow: error: {parent.data.tags[ERROR_TAG]}"
    assert client.search_registered_models() == []


@pytest.mark.slow
def test_a_step_over_its_time_limit_stops_the_run(tmp_path: Path) -> None:
    """`--step-timeout`: training far longer than the limit fails naming the limit; its
    workers are stopped with it and its run is FAILED, not left RUNNING."""
    before = {p.pid for p in psutil.process_iter()}
    done = _run_cli(tmp_path, "--step-timeout", "30", "--epochs", "2000", "--workers", "2")
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("twinflow: error: train-torch: exceeded its time limit of 30 s (twinflow "
                    f"run --step-timeout, env {STEP_TIMEOUT_ENV})"), done.stderr[-3000:]
    client, running = _runs_left(tmp_path)
    assert running == []
    [parent] = pipeline_runs(client)
    assert parent.info.status == "FAILED"
    home = str(tmp_path / ".twinflow")
    left = [p for p in psutil.process_iter() if p.pid not in before and _home_of(p) == home]
    assert left == [], [p.cmdline() for p in left]


def _home_of(process: psutil.Process) -> str:
    """The TWINFLOW_HOME a process runs with ('' if it is gone or not ours to read)."""
    with contextlib.suppress(psutil.Error):
        return str(process.environ().get("TWINFLOW_HOME", ""))
    return ""
