"""`twinflow runs repair` on a real SQLite MLflow store (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from components.processes import owner
from components.tags import (
    ERROR_TAG,
    KIND_TAG,
    LOCK_MODEL_SUFFIX,
    OWNER_TAG,
    PIPELINE_KIND,
    RUN_KEY_TAG,
)
from components.tracking import experiment_id
from pipelines.cli import app
from pipelines.repair import repair


def _dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    who = owner(proc.pid)
    proc.wait()
    return who


def _pipeline_run(experiment: str, tags: dict[str, str], start: int | None = None) -> str:
    key = f"key-{uuid.uuid4().hex[:8]}"
    run = MlflowClient().create_run(experiment_id(experiment), start_time=start,
                                    tags={RUN_KEY_TAG: key, KIND_TAG: PIPELINE_KIND, **tags})
    return str(run.info.run_id)


def _child(parent: str, experiment: str) -> str:
    run = MlflowClient().create_run(experiment_id(experiment),
                                    tags={"mlflow.parentRunId": parent})
    return str(run.info.run_id)


def _status(run_id: str) -> str:
    return str(MlflowClient().get_run(run_id).info.status)


def test_repair_closes_what_dead_processes_left(store: str) -> None:
    exp, client = f"repair-{uuid.uuid4().hex[:6]}", MlflowClient()
    abandoned = _pipeline_run(exp, {OWNER_TAG: _dead_owner()})
    its_step = _child(abandoned, exp)
    ended = _pipeline_run(exp, {})
    client.set_terminated(ended, "FINISHED")
    tune = _child(ended, exp)
    trial = _child(tune, exp)  # two levels down, as a search's trials are
    live = _pipeline_run(exp, {OWNER_TAG: owner()})  # this process: not abandoned
    other_host = _pipeline_run(exp, {})  # a cluster's: no owner, recent
    lock = f"m-{uuid.uuid4().hex[:6]}{LOCK_MODEL_SUFFIX}"
    client.create_registered_model(lock, tags={OWNER_TAG: _dead_owner()})

    done = repair(exp)

    assert [_status(r) for r in (abandoned, its_step, tune, trial)] == ["FAILED"] * 4
    assert [_status(r) for r in (live, other_host)] == ["RUNNING", "RUNNING"]
    assert "orphaned" in client.get_run(trial).data.tags[ERROR_TAG]
    assert client.search_registered_models(f"name = '{lock}'") == []
    # The abandoned run (its step closed with it), the tune run, its trial, the lock.
    assert len(done.lines) == 4, done.lines
    assert repair(exp).lines == []


def test_stale_hours_fails_old_runs_of_any_owner(store: str) -> None:
    exp = f"repair-{uuid.uuid4().hex[:6]}"
    old = _pipeline_run(exp, {}, start=int((time.time() - 3 * 3600) * 1000))
    recent = _pipeline_run(exp, {})
    assert repair(exp).lines == []
    done = repair(exp, stale_hours=2)
    assert [_status(old), _status(recent)] == ["FAILED", "RUNNING"]
    assert done.lines == [f"pipeline run {MlflowClient().get_run(old).data.tags[RUN_KEY_TAG]}: "
                          "RUNNING for over 2 h; marked FAILED"]


def test_cli_says_when_there_is_nothing_to_repair(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the command points the process at its store (environment and MLflow's
    URI), so both are put back for the session's other tests."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    before = mlflow.get_tracking_uri()
    try:
        result = CliRunner().invoke(app, ["runs", "repair", "--tracking-uri", uri])
    finally:
        mlflow.set_tracking_uri(before)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "nothing to repair"
