"""The tuned pipeline: trial batches in parallel processes, finishing a run with trials
left RUNNING, the CLI's checks of a search file, and (slow) a real local KFP run of the
tuned pipeline for both frameworks, then a rerun that continues the study."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from components.config import Framework, TrainConfig
from components.tags import (
    FRAMEWORK_TAG,
    PIPELINE_ROOT_TAG,
    STEP_TAG,
    TUNE_BEST_TRIAL_TAG,
    TUNE_RUN_TAG,
    TUNE_STUDY_TAG,
    Step,
)
from components.tracking import finish_pipeline_run, start_pipeline_run
from components.tune.batch import plan_batches, run_batch, split
from components.tune.core import prepare_study
from components.tune.result import TUNED_FILE
from components.tune.space import parse_space
from components.tune.storage import STUDY_FILE, open_storage
from tests.conftest import cli_env, pipeline_runs

SEARCH = """\
params:
  learning_rate: {type: float, low: 0.0003, high: 0.03, log: true}
  model_options.width: {type: categorical, choices: [32, 128]}
trials: 3
pruner: none
"""


def test_split_and_plan_spread_trials_over_tasks_and_processes() -> None:
    assert split(7, 3) == [3, 2, 2] and split(2, 4) == [1, 1, 0, 0]


def _children(client: MlflowClient, run: Run, extra: str = "") -> list[Run]:
    return client.search_runs([run.info.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{run.info.run_id}'{extra}"))


def test_a_batch_runs_its_trials_in_parallel_processes(transformed: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """Two real trial processes share one study in a journal file (the default kind):
    four trials, each a nested run of the tune run, the two processes' trials
    overlapping in time and not repeating each other's points."""
    storage = str(tmp_path / STUDY_FILE)
    space = parse_space({"params": {
        "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]}},
        "trials": 4, "pruner": "none"}, "s")
    base = TrainConfig(framework=Framework.TORCH, epochs=2, show_progress=False)
    study = prepare_study(space, base, transformed[0], storage, "parallel")
    with mlflow.start_run() as tune:
        pass
    [batch] = plan_batches(study, tune.info.run_id, parallel=2, tasks=1)
    assert (batch.trials, batch.processes) == (4, 2)
    run_batch(batch, transformed[0])
    trials = optuna.load_study(study_name="parallel", storage=open_storage(storage)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), \
        "no two trials ran at the same time"
    runs = _children(MlflowClient(), MlflowClient().get_run(tune.info.run_id))
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)


def test_finishing_a_run_closes_trials_left_running(store: str) -> None:
    """A killed trial task leaves its trial runs RUNNING two levels down: finishing the
    pipeline run marks them FAILED too, not only its direct children."""
    client = MlflowClient()
    parent = start_pipeline_run("closes-trials", "tests", "closes-trials", {})
    exp = client.get_run(parent).info.experiment_id
    tune = client.create_run(exp, tags={"mlflow.parentRunId": parent, STEP_TAG: Step.TUNE})
    trial = client.create_run(exp, tags={"mlflow.parentRunId": tune.info.run_id,
                                         PIPELINE_ROOT_TAG: parent})
    finish_pipeline_run("closes-trials", "tests", succeeded=False, message="killed")
    assert client.get_run(trial.info.run_id).info.status == "FAILED"
    assert client.get_run(tune.info.run_id).info.status == "FAILED"
    assert client.get_run(parent).info.status == "FAILED"


def _cli(workdir: Path, *args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=workdir,
                          env=cli_env(workdir), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(("text", "message"), [
    ("params:\n  learnin_rate: {type: float, low: 0.1, high: 1}\n",
     r"search\.yaml: .*params\.learnin_rate: unknown parameter"),
    ("params:\n  epochs: {type: int, low: 5, high: 5}\n", r"search\.yaml: .*empty range"),
    ("params: [1, 2\n", r"search\.yaml: not YAML at line 2, column 1: expected ',' or ']'")])
def test_a_bad_search_file_fails_before_any_step(tmp_path: Path, text: str,
                                                 message: str) -> None:
    import re

    (tmp_path / "search.yaml").write_text(text)
    done = _cli(tmp_path, "run", "--tune", "search.yaml", "--data", "sklearn:wine")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("twinflow: error: ") and re.search(message, last), done.stderr
    assert not (tmp_path / ".twinflow" / "pipeline_root").exists()  # no step ran


def _steps(client: MlflowClient, parent: Run) -> dict[tuple[str, str], Run]:
    return {(r.data.tags[STEP_TAG], r.data.tags.get(FRAMEWORK_TAG, "")): r
            for r in _children(client, parent)}


@pytest.mark.slow
def test_tuned_pipeline_for_both_frameworks_then_a_rerun_continues(tmp_path: Path) -> None:
    (tmp_path / "search.yaml").write_text(SEARCH)
    first = _cli(tmp_path, "run", "-q", "--framework", "both", "--data", "sklearn:wine",
                 "--epochs", "3", "--tune", "search.yaml", "--tune-parallel", "2",
                 timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("tuned: trial") == 2, first.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    [parent] = pipeline_runs(client)
    steps = _steps(client, parent)
    studies = set()
    for fw in ("torch", "tensorflow"):
        tune, train = steps[(Step.TUNE, fw)], steps[(Step.TRAIN, fw)]
        assert tune.info.status == "FINISHED"
        trials = _children(client, tune)
        assert len(trials) == 3
        assert {t.data.tags[PIPELINE_ROOT_TAG] for t in trials} == {parent.info.run_id}
        assert tune.data.metrics["trials_complete"] == 3
        best = tune.data.tags[TUNE_BEST_TRIAL_TAG]
        winner = next(t for t in trials if t.info.run_name == f"trial-{best}")
        # train used the winner's parameters, not the pipeline's defaults
        assert float(train.data.params["learning_rate"]) == pytest.approx(
            float(winner.data.params["learning_rate"]))
        assert train.data.tags[TUNE_RUN_TAG] == tune.info.run_id
        version = client.get_model_version_by_alias(f"wine-{fw}", "champion")
        assert version.tags[TUNE_STUDY_TAG] == tune.data.tags[TUNE_STUDY_TAG]
        assert version.tags[TUNE_BEST_TRIAL_TAG] == best
        studies.add(tune.data.tags[TUNE_STUDY_TAG])
    storage = open_storage(str(tmp_path / ".twinflow" / STUDY_FILE))  # the default
    assert set(optuna.get_all_study_names(storage)) == studies
    assert list((tmp_path / ".twinflow" / "pipeline_root").glob(f"*/train*/model/{TUNED_FILE}"))
    shown = _cli(tmp_path, "tune", "show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("winner: trial") == 2 and "optimization_history.png" in shown.stdout

    # The same search with a budget of 4 continues the torch study: one new trial.
    again = _cli(tmp_path, "run", "-q", "--framework", "torch", "--data", "sklearn:wine",
                 "--epochs", "3", "--tune", "search.yaml", "--trials", "4", timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    tune = _steps(client, pipeline_runs(client)[-1])[(Step.TUNE, "torch")]
    assert len(_children(client, tune)) == 1
    study = optuna.load_study(study_name=tune.data.tags[TUNE_STUDY_TAG], storage=storage)
    assert len(study.trials) == 4


def test_trial_processes_share_a_study_in_postgresql(transformed: tuple[Path, Path],
                                                    postgres_url: str) -> None:
    """The cluster's way: the study in a real PostgreSQL server that every trial process
    (pod) reaches; two batches (two KFP tasks' worth) run at once and split the budget."""
    space = parse_space({"params": {
        "learning_rate": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True}},
        "trials": 4, "pruner": "none"}, "s")
    base = TrainConfig(framework=Framework.TORCH, epochs=2, show_progress=False)
    study = prepare_study(space, base, transformed[0], postgres_url, "shared")
    with mlflow.start_run() as tune:
        pass
    batches = plan_batches(study, tune.info.run_id, parallel=2, tasks=2)
    assert [(b.trials, b.processes) for b in batches] == [(2, 1), (2, 1)]
    workers = [subprocess.Popen([sys.executable, "-m", "components.tune.batch", "--batch",
                                 b.model_dump_json(), "--data", str(transformed[0]),
                                 "--worker", str(b.index * 1000), "--trials", str(b.trials)])
               for b in batches]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert len({t.params["learning_rate"] for t in trials}) == 4
    # A second preparation of the same study sees the budget spent: nothing left to plan.
    assert prepare_study(space, base, transformed[0], postgres_url, "shared").remaining == 0


def test_tune_katib_writes_an_experiment_the_katib_models_read(tmp_path: Path) -> None:
    from pipelines.katib import read_experiment

    (tmp_path / "search.yaml").write_text(SEARCH)
    done = _cli(tmp_path, "tune", "katib", "search.yaml", "--data-path", "/data/wine",
                "--task", "multiclass", "--tracking-uri", "http://mlflow:5000", "-f",
                "tensorflow", "--parallel", "2", "-o", "exp.yaml")
    assert done.returncode == 0, done.stderr
    spec = read_experiment(tmp_path / "exp.yaml").spec
    assert spec is not None and (spec.max_trial_count, spec.parallel_trial_count) == (3, 2)
    assert spec.objective is not None and spec.objective.objective_metric_name == "val_accuracy"
    assert {p.name for p in spec.parameters or []} == {"learning-rate", "model-options-width"}
    (tmp_path / "search.yaml").write_text("params:\n  nope: {type: int, low: 1, high: 2}\n")
    bad = _cli(tmp_path, "tune", "katib", "search.yaml", "--data-path", "/d", "--task",
               "multiclass", "--tracking-uri", "http://mlflow:5000")
    assert bad.returncode == 1 and "params.nope: unknown parameter" in bad.stderr
