"""Run files (`twinflow run -c`, `--print-config`), the run history (`twinflow runs`,
`twinflow runs show`) and the experiment's model training view in the MLflow UI.

The CLI runs in process (typer's CliRunner) against a real SQLite MLflow store of its
own; the pipeline runs the list shows are made with the tracking functions the
pipeline's tasks use. One real pipeline run (slow) checks the whole path: a run file
in, the configuration logged on the parent run, the run listed with its results.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner, Result

from components.tags import (
    CROWNED_TAG,
    FRAMEWORK_TAG,
    MODEL_VERSION_TAG,
    REGISTERED_MODEL_TAG,
    STEP_TAG,
    TASK_TAG,
    Step,
)
from components.tracking import (
    EXPERIMENT_KIND_TAG,
    TRAINING_KIND,
    experiment_id,
    finish_pipeline_run,
    start_pipeline_run,
    ui_url,
)
from pipelines.cli import app
from pipelines.run_file import RUN_CONFIG_ARTIFACT, log_run_config, without_password
from pipelines.runs_list import recent_runs
from tests.conftest import cli_env, pipeline_runs

EXPERIMENT = "history"
WIDE = {"COLUMNS": "300"}  # rich wraps a table to the terminal; CliRunner's is 80 wide


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A store of this test's own; the CLI points the process at it, so the session's
    store is restored after (the environment by monkeypatch, MLflow's URI here)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TWINFLOW_HOME", str(tmp_path / ".twinflow"))
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(before)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=WIDE)


def _config(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


# --- run files ---------------------------------------------------------------------


def test_misspelled_key_is_an_error_naming_it_and_the_file(tmp_path: Path) -> None:
    run_file = tmp_path / "run.yaml"
    run_file.write_text("epochs: 3\nepoch: 5\n")
    result = _cli("run", "-c", str(run_file), "--print-config")
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"twinflow: error: {run_file}: unknown key 'epoch'; did "
                                     "you mean 'epochs'? (keys are the long options of "
                                     "twinflow run)")
    run_file.write_text("source: digits.csv\n")  # the parameter's name, not the option's
    assert "unknown key 'source'; did you mean 'data'?" in _cli(
        "run", "-c", str(run_file)).stderr


@pytest.mark.parametrize(("text", "error"), [
    ("epochs: 2.5\n", "epochs: Input should be a valid integer, got a number with a "
                      "fractional part (got 2.5)"),
    ("step-timeout: -1\n", "step-timeout: Input should be greater than or equal to 0"),
    ("framework: jax\n", "framework: unknown framework 'jax'"),
    ("tolerance: 0.02\nmin_improvement: 0.01\n", "set either tolerance or min_improvement"),
    ("step_timeout: 5\nstep-timeout: 6\n", "'step-timeout' and 'step_timeout' are the same"),
    ("- epochs\n", "a run file is a mapping of option names to values"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path: Path, text: str, error: str) -> None:
    run_file = tmp_path / "run.yaml"
    run_file.write_text(text)
    result = _cli("run", "--config", str(run_file), "--print-config")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"twinflow: error: {run_file}: ") and error in line


def test_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_file = tmp_path / "run.yaml"
    run_file.write_text("framework: tensorflow\ndata: rows.csv\nlabel: y\nepochs: 3\n"
                        "step_timeout: 60\ningest-options: {bad_rows: skip}\nquiet: true\n")
    result = _cli("run", "-c", str(run_file), "--epochs", "7", "-f", "torch",
                  "--print-config")
    config = _config(result)
    assert config["epochs"] == 7 and config["framework"] == "torch"  # the flags
    assert config["data"] == "rows.csv" and config["label"] == "y"  # the file
    assert config["step-timeout"] == 60 and config["quiet"] is True
    assert config["ingest-options"] == '{"bad_rows": "skip"}'  # YAML nesting, as JSON
    assert config["batch-size"] == 32  # a default
    assert "# from the command line: framework, epochs\n" in result.stdout
    assert (f"# from {run_file}: data, label, ingest-options, quiet, step-timeout\n"
            in result.stdout)


def test_environment_variables_override_the_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """As in most command line tools: flags, then the environment, then the file."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    run_file = tmp_path / "run.yaml"
    run_file.write_text("tracking-uri: sqlite:///from-file.db\n")
    assert _config(_cli("run", "-c", str(run_file), "--print-config"))[
        "tracking-uri"] == "sqlite:///from-env.db"


def test_print_config_is_a_run_file_of_the_same_run(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TWINFLOW_HOME", str(tmp_path / ".twinflow"))
    first = _cli("run", "--epochs", "4", "--data", "sklearn:iris", "--print-config")
    printed = _config(first)
    assert list(printed)[:3] == ["framework", "seed", "data"]  # the options' order
    run_file = tmp_path / "printed.yaml"
    run_file.write_text(first.stdout)
    again = _cli("run", "-c", str(run_file), "--print-config")
    assert _config(again) == printed
    assert not (tmp_path / ".twinflow").exists()  # printing runs nothing


def test_the_configuration_is_logged_on_the_parent_run(store: str) -> None:
    run_id = start_pipeline_run("key-1", EXPERIMENT, "p", {"framework": "torch"})
    text = "# header\ntracking-uri: postgresql://me:secret@db:5432/mlflow\nepochs: 3\n"
    assert log_run_config("key-1", EXPERIMENT, text) == ""
    logged = mlflow.artifacts.load_text(f"runs:/{run_id}/{RUN_CONFIG_ARTIFACT}")
    assert logged == text
    assert log_run_config("no-such-key", EXPERIMENT, text).startswith("twinflow: warning:")


def test_the_logged_copy_hides_passwords() -> None:
    """The run's copy is for everyone who reads the store; --print-config shows all."""
    assert without_password("postgresql://me:secret@db:5432/mlflow") == (
        "postgresql://me:***@db:5432/mlflow")
    assert without_password("http://mlflow:5000") == "http://mlflow:5000"
    assert without_password(3) == 3


# --- run history -------------------------------------------------------------------


def _pipeline_run(key: str, framework: str, accuracy: float | None,
                  version: str = "") -> str:
    """A parent run with an evaluate (and a push) step run, as the tasks leave them."""
    parent = start_pipeline_run(key, EXPERIMENT, key, {"framework": framework,
                                                       "dataset": "digits"})
    client = MlflowClient()
    exp = client.get_run(parent).info.experiment_id
    tags = {"mlflow.parentRunId": parent, FRAMEWORK_TAG: framework, TASK_TAG: "multiclass"}
    evaluate = client.create_run(exp, run_name=f"evaluate-{framework}",
                                 tags={**tags, STEP_TAG: Step.EVALUATE})
    if accuracy is not None:
        client.log_metric(evaluate.info.run_id, "test_accuracy", accuracy)
    client.set_terminated(evaluate.info.run_id)
    if version:
        name = f"digits-{framework}"
        push = client.create_run(exp, run_name=f"push-{framework}", tags={
            **tags, STEP_TAG: Step.PUSH, REGISTERED_MODEL_TAG: name,
            MODEL_VERSION_TAG: version, CROWNED_TAG: "true"})
        client.create_registered_model(name)
        client.create_model_version(name, source=f"runs:/{push.info.run_id}/model",
                                    run_id=push.info.run_id)
        client.set_registered_model_alias(name, "champion", version)
        client.set_terminated(push.info.run_id)
    finish_pipeline_run(key, EXPERIMENT, accuracy is not None,
                        "" if accuracy is not None else "train-torch: out of memory")
    return parent


def test_runs_lists_the_newest_first(store: str) -> None:
    old = _pipeline_run("run-old", "torch", 0.91, version="1")
    failed = _pipeline_run("run-failed", "torch", None)
    new = _pipeline_run("run-new", "tensorflow", 0.97654)
    rows = recent_runs(EXPERIMENT, 10)
    assert [r.run_id for r in rows] == [new, failed, old]
    assert [r.status for r in rows] == ["FINISHED", "FAILED", "FINISHED"]
    assert rows[0].metric == "accuracy 0.9765" and rows[0].model == ""
    assert rows[2].metric == "accuracy 0.91" and rows[2].model == "digits-torch v1 @champion"
    assert rows[2].framework == "torch" and rows[2].dataset == "digits"
    assert rows[2].seconds is not None and rows[2].seconds >= 0
    assert [r.run_id for r in recent_runs(EXPERIMENT, 2)] == [new, failed]

    listed = _cli("runs", "--experiment", EXPERIMENT, "--limit", "2")
    assert listed.exit_code == 0, listed.output
    assert new in listed.stdout and failed in listed.stdout and old not in listed.stdout
    assert listed.stdout.index(new) < listed.stdout.index(failed)
    assert "accuracy 0.9765" in listed.stdout and "FAILED" in listed.stdout
    assert "no pipeline runs in experiment 'empty'" in _cli(
        "runs", "--experiment", "empty").stdout


def test_runs_show_prints_one_run(store: str) -> None:
    run_id = _pipeline_run("run-shown", "torch", 0.93, version="1")
    shown = _cli("runs", "show", run_id)
    assert shown.exit_code == 0, shown.output
    assert run_id in shown.stdout and "(FINISHED)" in shown.stdout  # the table's title
    assert "evaluate-torch" in shown.stdout  # its steps
    assert "digits-torch v1 @champion" in shown.stdout
    missing = _cli("runs", "show", "0" * 32)
    assert missing.exit_code == 1 and missing.stderr.startswith("twinflow: error: ")


def test_runs_repair_is_still_a_subcommand(store: str) -> None:
    repaired = _cli("runs", "repair", "--experiment", EXPERIMENT)
    assert repaired.exit_code == 0, repaired.output
    assert repaired.stdout.strip() == "nothing to repair"


# --- the experiment's view in the MLflow UI ----------------------------------------


def test_experiments_are_marked_as_model_training(store: str) -> None:
    client = MlflowClient()
    fresh = experiment_id("fresh")
    assert client.get_experiment(fresh).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    older = client.create_experiment("made-before")  # a store from before the tag
    assert experiment_id("made-before") == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    experiment_id("chosen")  # the user's own choice in the UI stays
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    assert ui_url("http://h:5000/", "3", "abc") == (
        "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning")


@pytest.mark.slow
def test_the_ui_opens_the_experiment_on_its_runs(tmp_path: Path, store: str) -> None:
    """Real Chromium on `twinflow ui`: MLflow 3.17 opens an experiment on its GenAI
    overview unless the address asks for model training, as ``ui_url`` does."""
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None or shutil.which("chromium") is None:
        pytest.skip("needs chromium and chromedriver")
    from tests.browser import MlflowUi

    work = tmp_path / "ui"
    (work / ".twinflow").mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{work / '.twinflow' / 'mlflow.db'}")
    with mlflow.start_run(experiment_id=experiment_id("twinflow"), run_name="visible-run"):
        mlflow.log_metric("test_accuracy", 0.9)
    exp = MlflowClient().get_experiment_by_name("twinflow")
    assert exp is not None
    with MlflowUi(work, chromedriver) as ui:
        text = ui._text_when(ui_url(ui.base, exp.experiment_id), ["visible-run"])
        assert "matching run" in text  # the runs table, not the GenAI overview
        assert "/runs" in ui.driver.current_url


@pytest.mark.slow
def test_a_run_file_runs_the_pipeline_and_is_logged(tmp_path: Path) -> None:
    (tmp_path / "run.yaml").write_text("framework: torch\nepochs: 1\nmin-accuracy: 0.0\n"
                                       "quiet: true\n")
    env = cli_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-c", "run.yaml",
                           "--batch-size", "64"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    [parent] = pipeline_runs(client)
    logged = client.download_artifacts(parent.info.run_id, RUN_CONFIG_ARTIFACT, str(tmp_path))
    config = yaml.safe_load(Path(logged).read_text())
    assert config["epochs"] == 1 and config["batch-size"] == 64 and config["quiet"] is True
    exp = client.get_experiment(parent.info.experiment_id)
    assert exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    listed = subprocess.run([sys.executable, "-m", "pipelines.cli", "runs"], cwd=tmp_path,
                            env={**env, **WIDE}, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    assert parent.info.run_id in listed.stdout and "FINISHED" in listed.stdout
    assert "accuracy" in listed.stdout and "v1" in listed.stdout
