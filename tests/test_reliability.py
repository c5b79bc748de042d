"""Issue 17 (reliability): first runs at once on a fresh store, interrupted runs, a
tracking server lost during a run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests
from mlflow.tracking import MlflowClient

from components.net import free_port
from components.tags import ERROR_TAG, STEP_TAG, Step
from tests.conftest import cli_env, pipeline_runs
from tests.postgres import create_database

# One "first run": point at the store the way every twinflow process does (configure),
# then create the experiment and a run, as the pipeline's first step does.
FIRST_RUN = """
import sys, time
from pathlib import Path
go = Path(sys.argv[1])
import mlflow
from components.tracking import configure, experiment_id
while not go.exists():
    time.sleep(0.01)
configure()
with mlflow.start_run(experiment_id=experiment_id("twinflow")):
    mlflow.log_metric("x", 1.0)
"""


def test_first_runs_at_once_create_one_usable_store(tmp_path: Path) -> None:
    """Four processes open a store that does not exist yet at the same instant: MLflow
    alone races in its schema migration and leaves a store nobody can open; through
    configure() one creates it under a lock, and all four runs are recorded."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    go = tmp_path / "go"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TWINFLOW_HOME": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_RUN, str(go)], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(8)  # every process has imported mlflow and waits for the signal
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(e[-2000:] for e in errors)
    client = MlflowClient(tracking_uri=uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "twinflow"]
    assert len(client.search_runs([experiment.experiment_id])) == 4


def _train_running(client: MlflowClient) -> bool:
    exp = client.get_experiment_by_name("twinflow")
    if exp is None:
        return False
    return bool(client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`{STEP_TAG}` = '{Step.TRAIN}' and attributes.status = 'RUNNING'")))


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "workers", "warm"), [
    (signal.SIGINT, 1, True), (signal.SIGTERM, 2, True), (signal.SIGKILL, 2, True),
    (signal.SIGKILL, 1, False)], ids=["SIGINT-1", "SIGTERM-2", "SIGKILL-2", "SIGKILL-1-cold"])
def test_an_interrupted_run_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals,
                                                  workers: int, warm: bool) -> None:
    """Stop a real `twinflow run` during training: Ctrl-C (SIGINT to its process group,
    as a terminal sends it), SIGTERM or SIGKILL to the CLI process alone. No task, warm
    interpreter or training worker outlives it; Ctrl-C and SIGTERM end in one line and
    KILLED runs. After SIGKILL the train step, stopped by the kernel's parent-death
    signal, records KILLED itself; the parent run stays RUNNING until the next command
    finds its process gone and marks it FAILED."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    cli = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--framework", "torch", "--data",
         "sklearn:digits", "--epochs", "500", "--workers", str(workers)], cwd=tmp_path,
        env={**cli_env(tmp_path), "TWINFLOW_WARM_STEPS": "1" if warm else "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not _train_running(client) and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(5)  # the workers are training
    below = psutil.Process(cli.pid).children(recursive=True)
    assert len(below) >= (3 if warm else 1) + workers, [p.cmdline()[:4] for p in below]
    if sig == signal.SIGINT:
        os.killpg(cli.pid, sig)
    else:
        cli.send_signal(sig)
    _, stderr = cli.communicate(timeout=120)
    _, alive = psutil.wait_procs(below, timeout=30)
    assert not alive, [p.cmdline()[:6] for p in alive]
    parent = pipeline_runs(client)[-1]
    steps = client.search_runs([parent.info.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`{STEP_TAG}` = '{Step.TRAIN}'"))
    if sig == signal.SIGKILL:
        assert cli.returncode == -signal.SIGKILL
        assert client.get_run(parent.info.run_id).info.status == "RUNNING"
        shown = subprocess.run([sys.executable, "-m", "pipelines.cli", "show"], cwd=tmp_path,
                               env=cli_env(tmp_path), capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert "abandoned" in client.get_run(parent.info.run_id).data.tags[ERROR_TAG]
        assert client.get_run(parent.info.run_id).info.status == "FAILED"
    else:
        assert cli.returncode == 128 + sig, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"twinflow: interrupted ({sig.name}): stopped pipeline run")
        assert "--resume" in last
        assert client.get_run(parent.info.run_id).info.status == "KILLED"
    assert [client.get_run(s.info.run_id).info.status for s in steps] == ["KILLED"]


class TrackingServer:
    """A real `mlflow server` on a loopback port over an SQLite store, as a process group
    (so that killing it kills its uvicorn workers)."""

    def __init__(self, folder: Path, port: int, backend: str = "") -> None:
        self.folder, self.port = folder, port
        self.backend = backend or f"sqlite:///{folder / 'server.db'}"
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> TrackingServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--backend-store-uri", self.backend,
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            cwd=self.folder, start_new_session=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=2).ok:
                    return self
            except requests.RequestException:  # not up yet, or slow to answer
                time.sleep(0.5)
        raise AssertionError(f"mlflow server on {self.uri} not ready")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.mark.slow
def test_a_lost_tracking_server_fails_the_run_in_one_line(tmp_path: Path) -> None:
    """Kill the real tracking server while train runs: the CLI gives up within the retry
    budget (TWINFLOW_TRACKING_RETRY_SECONDS, here 15 s; MLflow alone took 12.5 minutes),
    ends in one line naming the step and the server, and nothing is registered; once
    the server is back, the next command marks the run FAILED."""
    server = TrackingServer(tmp_path, free_port()).start()
    env = {**cli_env(tmp_path, server.uri), "TWINFLOW_TRACKING_RETRY_SECONDS": "15"}
    client = MlflowClient(tracking_uri=server.uri)
    try:
        cli = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", "--framework", "torch", "--data",
             "sklearn:digits", "--epochs", "500"], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while not _train_running(client) and cli.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)
        server.kill()
        _, stderr = cli.communicate(timeout=300)  # MLflow's own retries would take 12 min
        assert cli.returncode == 1
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"twinflow: error: train: MLflow tracking server {server.uri} "
                               "is unreachable"), stderr[-3000:]
        server.start()
        parent = pipeline_runs(client)[-1]
        assert parent.info.status == "RUNNING"
        shown = subprocess.run([sys.executable, "-m", "pipelines.cli", "show"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert client.get_run(parent.info.run_id).info.status == "FAILED"
        assert client.search_registered_models() == []
    finally:
        server.kill()


def _runs_at_once(tmp_path: Path, tracking_uri: str | None, epochs: list[int]
                  ) -> tuple[MlflowClient, list[str]]:
    """`twinflow run` once per entry of ``epochs``, all started together; their stdout."""
    env = cli_env(tmp_path, tracking_uri)
    runs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "-q",
                              "--framework", "torch", "--data", "sklearn:iris", "--epochs",
                              str(n)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for n in epochs]
    outputs = [r.communicate(timeout=1500) for r in runs]
    assert [r.returncode for r in runs] == [0] * len(runs), "\n".join(
        err[-2000:] for _, err in outputs)
    store = tracking_uri or f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=store), [out for out, _ in outputs]


def _check_runs_and_champion(client: MlflowClient, outputs: list[str]) -> None:
    """Every run has its complete tree; the champion is the best registered version
    (the gate's tolerance is 0); each summary's claim about the title is true."""
    parents = pipeline_runs(client)
    assert [p.info.status for p in parents] == ["FINISHED"] * len(outputs)
    for parent in parents:
        steps = client.search_runs([parent.info.experiment_id], filter_string=(
            f"tags.mlflow.parentRunId = '{parent.info.run_id}'"))
        assert {s.data.tags.get(STEP_TAG) for s in steps} >= {
            Step.INGEST, Step.TRANSFORM, Step.TRAIN, Step.COMPRESS, Step.EVALUATE}
        assert {s.info.status for s in steps} == {"FINISHED"}
    versions = client.search_model_versions("name = 'iris-torch'")
    assert versions, "no run registered a version"
    champion = client.get_model_version_by_alias("iris-torch", "champion")
    best = max(float(v.tags["test_accuracy"]) for v in versions)
    assert float(champion.tags["test_accuracy"]) == best
    claims = [line for out in outputs for line in out.splitlines() if "iris-torch v" in line]
    for version in versions:
        said = " ".join(line for line in claims if f"iris-torch v{version.version} " in line)
        if "not champion" in said:
            assert version.version != champion.version
    shown = [subprocess.run([sys.executable, "-m", "pipelines.cli", "show", p.info.run_id,
                             "--tracking-uri", client.tracking_uri], capture_output=True,
                            text=True, timeout=300).stdout for p in parents]
    crowned_now = [out for out in shown if "@champion" in out]
    assert len(crowned_now) == 1
    assert f"iris-torch v{champion.version} @champion" in crowned_now[0]


@pytest.mark.slow
def test_first_runs_at_once_in_a_fresh_folder(tmp_path: Path) -> None:
    """The issue's case end to end: three `twinflow run` started together where no store
    exists yet all succeed, each with its own complete tree of step runs, and the
    champion ends on the best version however their pushes interleave."""
    _check_runs_and_champion(*_runs_at_once(tmp_path, None, [1, 2, 3]))


@pytest.mark.slow
def test_runs_at_once_on_a_postgresql_backed_tracking_server(
        tmp_path: Path, postgres_url: str) -> None:
    """Multi-user: the same against a real `mlflow server` over PostgreSQL (as on the
    cluster), its schema created by the first request of three runs at once."""
    backend = create_database(postgres_url, f"mlflow_{uuid.uuid4().hex[:8]}")
    server = TrackingServer(tmp_path, free_port(), backend=backend).start()
    try:
        _check_runs_and_champion(*_runs_at_once(tmp_path, server.uri, [1, 2, 3]))
    finally:
        server.kill()
