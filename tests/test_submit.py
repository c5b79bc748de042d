"""`twinflow submit` against a contract-test double of the KFP v2beta1 API on
127.0.0.1 (no KFP backend can run here): what the client sends is checked."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.config import Framework
from components.settings import STEP_TIMEOUT_ENV
from pipelines.params import PipelineParams, with_tune_space
from pipelines.submit import DEADLINE_GRACE, SubmitError, submit
from tests.kfp_fake_server import FakeKfp

URI = "http://mlflow.twinflow.svc:5000"


@pytest.fixture
def kfp_api() -> Iterator[tuple[FakeKfp, str]]:
    api = FakeKfp(token="s3cret")
    base = api.start()
    yield api, base
    api.stop()


def _run_request(api: FakeKfp) -> dict[str, Any]:
    [run] = [r for r in api.requests if r.method == "POST" and r.path == "/apis/v2beta1/runs"]
    return dict(run.body)


def test_submit_sends_the_compiled_pipeline_with_tracking_env(
        kfp_api: tuple[FakeKfp, str]) -> None:
    api, base = kfp_api
    result = submit(PipelineParams(framework=Framework.TENSORFLOW), URI, host=base,
                    experiment="exp-a", token="s3cret", wait=True, poll=0.01)
    assert result.succeeded and result.url == f"{base}/#/runs/details/{result.run_id}"
    assert all(r.headers.get("authorization") == "Bearer s3cret" for r in api.requests)
    body = _run_request(api)
    spec, platform = (body["pipeline_spec"]["pipeline_spec"],
                      body["pipeline_spec"]["platform_spec"])
    assert spec["root"]["inputDefinitions"]["parameters"]["framework"]["defaultValue"] == \
        "tensorflow"
    for executor in spec["deploymentSpec"]["executors"].values():
        env = executor["container"]["env"]
        assert {"name": "MLFLOW_TRACKING_URI", "value": URI} in env
        assert {"name": "TWINFLOW_TRAIN_BACKEND", "value": "kubernetes"} in env
        assert {"name": "TWINFLOW_NAMESPACE", "value": "twinflow"} in env
    # MLflow credentials from the cluster overlay's Secret, optional (kind has no auth).
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for config in executors.values():
        [secret] = config["secretAsEnv"]
        assert secret["secretName"] == "mlflow-client-credentials" and secret["optional"]
        assert {m["envVar"] for m in secret["keyToEnv"]} == {"MLFLOW_TRACKING_USERNAME",
                                                             "MLFLOW_TRACKING_PASSWORD"}
    [experiment] = api.experiments.values()
    assert experiment["display_name"] == "exp-a"
    assert body["experiment_id"] == experiment["experiment_id"]


def test_step_timeout_reaches_every_step_and_its_pod(kfp_api: tuple[FakeKfp, str]) -> None:
    """--step-timeout: each step enforces the limit itself (env), and Kubernetes kills
    its pod a grace period later (activeDeadlineSeconds, kfp-kubernetes' schema)."""
    api, base = kfp_api
    submit(PipelineParams(), URI, host=base, token="s3cret", credentials_secret="",
           step_timeout=600)
    body = _run_request(api)
    spec, platform = (body["pipeline_spec"]["pipeline_spec"],
                      body["pipeline_spec"]["platform_spec"])
    for executor in spec["deploymentSpec"]["executors"].values():
        assert {"name": STEP_TIMEOUT_ENV, "value": "600"} in executor["container"]["env"]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    assert {json.dumps(c, sort_keys=True) for c in executors.values()} == {
        json.dumps({"activeDeadlineSeconds": str(600 + DEADLINE_GRACE)})}


def test_wait_reports_a_failed_run(kfp_api: tuple[FakeKfp, str]) -> None:
    api, base = kfp_api
    api.states = ["PENDING", "RUNNING", "FAILED"]
    result = submit(PipelineParams(), URI, host=base, token="s3cret", wait=True, poll=0.01)
    assert result.state == "FAILED" and not result.succeeded


def test_existing_experiment_is_reused(kfp_api: tuple[FakeKfp, str]) -> None:
    api, base = kfp_api
    for _ in range(2):
        submit(PipelineParams(), URI, host=base, experiment="shared", token="s3cret")
    assert len(api.experiments) == 1
    assert len([r for r in api.requests if r.path == "/apis/v2beta1/runs"]) == 2


def test_wrong_token_is_a_clear_error(kfp_api: tuple[FakeKfp, str]) -> None:
    _, base = kfp_api
    with pytest.raises(SubmitError, match=r"refused the credentials \(HTTP 401\)"):
        submit(PipelineParams(), URI, host=base, token="wrong")


def test_unreachable_endpoint_fails_fast() -> None:
    start = time.perf_counter()
    with pytest.raises(SubmitError, match=r"KFP endpoint http://127\.0\.0\.1:9 is unreachable"):
        submit(PipelineParams(), URI, host="http://127.0.0.1:9")
    assert time.perf_counter() - start < 30


def test_missing_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    with pytest.raises(SubmitError, match="no KFP endpoint: pass --host or set"):
        submit(PipelineParams(), URI)


def test_cli_submit_and_wait(kfp_api: tuple[FakeKfp, str]) -> None:
    import subprocess
    import sys

    api, base = kfp_api
    api.states = ["RUNNING", "FAILED"]
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "submit", "--host", base,
                             "--token", "s3cret", "--wait", "-f", "both"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "ended FAILED" in result.stderr.splitlines()[-1]
    body = _run_request(api)
    root = body["pipeline_spec"]["pipeline_spec"]["root"]
    assert root["inputDefinitions"]["parameters"]["framework"]["defaultValue"] == "both"


def test_a_tuned_pipeline_is_submitted_with_its_trial_loop(
        kfp_api: tuple[FakeKfp, str], tmp_path: Path) -> None:
    """`--tune` submits the tuned pipeline: the search compiled in, the trials a
    ParallelFor over tune-study's batches; many trial pods need a shared storage."""
    api, base = kfp_api
    (tmp_path / "search.yaml").write_text(
        "params:\n  learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n")
    space = with_tune_space(PipelineParams(tune_space=str(tmp_path / "search.yaml"),
                                           tune_tasks=4))
    for one_pod in ("", "/data/optuna-journal.log", "sqlite:////data/optuna.db"):
        with pytest.raises(SubmitError, match=r"--tune-tasks 4: .*--tune-storage"):
            submit(space.model_copy(update={"tune_storage": one_pod}), URI, host=base,
                   token="s3cret")
    tuned = space.model_copy(update={"tune_storage": "postgresql://u:p@db/optuna"})
    submit(tuned, URI, host=base, token="s3cret")
    spec = _run_request(api)["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "twinflow-tuned"
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(defaults["tune_space"]["defaultValue"])["params"]["learning_rate"]["log"]
    tasks = [t for c in spec["components"].values() if "dag" in c
             for t in c["dag"]["tasks"].values()]
    loops = [t for t in tasks if "parameterIterator" in t]
    assert loops, "no ParallelFor over the trial batches"
    assert all(t["parameterIterator"]["items"]["inputParameter"].startswith(
        "pipelinechannel--tune-study") for t in loops)


def test_predict_pipeline_is_submitted_with_its_arguments(
        kfp_api: tuple[FakeKfp, str]) -> None:
    """`twinflow predict --host`'s submission: the batch-scoring pipeline of the model's
    framework, its arguments as the run's parameters, the steps' MLflow env baked in."""
    from pipelines.predict import PIPELINE_NAME, compile_predict
    from pipelines.submit import Target, submit_package

    api, base = kfp_api
    arguments = {"model": "shop-torch@champion", "data": "/data/new.csv",
                 "output": "/data/scored.parquet", "keep": ["id"], "batch_rows": 1024,
                 "data_format": "csv"}
    result = submit_package(lambda path: compile_predict(path, "torch"), arguments,
                            "twinflow-predict-shop", Target(URI, host=base, token="s3cret"))
    assert result.state == "SUBMITTED"
    body = _run_request(api)
    spec = body["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    assert body["display_name"] == "twinflow-predict-shop"
    assert body["runtime_config"]["parameters"] == arguments
    [executor] = spec["deploymentSpec"]["executors"].values()
    assert {"name": "MLFLOW_TRACKING_URI", "value": URI} in executor["container"]["env"]
    assert "/step-torch:" in executor["container"]["image"]
