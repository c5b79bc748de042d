"""The tune step's core: the search space's errors, and real Optuna studies over the real
trainer of each framework (digits, a few trials of a few epochs)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from components.config import Framework, TrainConfig
from components.errors import ConfigError
from components.tags import TUNE_STATE_TAG
from components.tune.core import apply_params, run_study
from components.tune.space import load_space, parse_space
from components.tune.storage import open_storage

SPACE = {"params": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
                    "model_options.hidden": {"type": "categorical", "choices": [32, 128]}},
         "trials": 3, "pruner": "none"}


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"params\.learnin_rate: unknown parameter"):
        parse_space({"params": {"learnin_rate": {"type": "float", "low": 0.1, "high": 1}}},
                    "search.yaml")


def test_empty_range_is_named() -> None:
    with pytest.raises(ConfigError, match=r"params.epochs.int.*empty range"):
        parse_space({"params": {"epochs": {"type": "int", "low": 5, "high": 5}}}, "s.yaml")


def test_range_outside_the_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"params\.batch_size: 0 is outside"):
        parse_space({"params": {"batch_size": {"type": "int", "low": 0, "high": 8}}}, "s.yaml")


def test_objective_the_task_lacks() -> None:
    space = parse_space({**SPACE, "objective": {"metric": "val_rmse"}}, "s.yaml")
    with pytest.raises(ConfigError, match="'val_rmse': the multiclass task reports"):
        space.resolved_objective("multiclass")
    assert space.resolved_objective("regression") == ("val_rmse", "minimize")
    assert parse_space(SPACE, "s").resolved_objective("binary") == ("val_accuracy", "maximize")


def test_yaml_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "search.yaml"
    bad.write_text("params: [1, 2\n")
    with pytest.raises(ConfigError, match=r"search\.yaml: not YAML"):
        load_space(bad)


def test_model_options_merge() -> None:
    base = TrainConfig(framework=Framework.TORCH, model_options='{"depth": 3}')
    tuned = apply_params(base, {"learning_rate": 0.01, "model_options.width": 32})
    assert tuned.learning_rate == 0.01
    assert tuned.options == {"depth": 3, "width": 32}


def test_bad_model_option_fails_before_any_trial(transformed: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    space = parse_space({"params": {"model_options.widht": {"type": "int", "low": 8,
                                                              "high": 16}}}, "s")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(ConfigError, match="does not take these options"):
        run_study(space, TrainConfig(framework=Framework.TORCH, epochs=1), transformed[0],
                  storage, "bad")
    assert optuna.get_all_study_names(open_storage(storage)) == []


@pytest.mark.parametrize("fw", [Framework.TORCH, Framework.TENSORFLOW])
def test_study_runs_real_trials_and_continues(fw: Framework, transformed: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    space = parse_space(SPACE, "s")
    storage = str(tmp_path / "optuna-journal.log")  # the default kind
    base = TrainConfig(framework=fw, epochs=2, show_progress=False)
    with mlflow.start_run() as parent:
        first = run_study(space.model_copy(update={"trials": 2}), base, transformed[0],
                          storage, "s1")
    assert first.trials_run == 2 and 0.0 < first.best_value <= 1.0
    # A rerun with a budget of 3 continues the study: one more trial, not three.
    with mlflow.start_run() as rerun:
        again = run_study(space, base, transformed[0], storage, "s1")
    assert again.trials_run == 1
    plots = {a.path for a in MlflowClient().list_artifacts(rerun.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/parallel_coordinate.png",
            "study/param_importances.png"} <= plots
    assert len(optuna.load_study(study_name="s1", storage=open_storage(storage)).trials) == 3
    children = MlflowClient().search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    assert all(c.data.tags[TUNE_STATE_TAG] == "complete" for c in children)
    assert all("val_accuracy" in c.data.metrics for c in children)
    # Written from the recorder's thread: params, every epoch, the true times, FINISHED.
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.info.start_time < child.info.end_time
        assert set(child.data.params) == set(SPACE["params"])
        history = MlflowClient().get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]


def test_a_failed_trial_run_write_fails_the_trials(tmp_path: Path) -> None:
    """A tracking write that fails in the recorder's thread is raised in the trial
    process (at its next write or at close), and no later write is attempted."""
    from mlflow.exceptions import MlflowException

    from components.tune.record import TrialRecorder, TrialRun

    with mlflow.start_run() as parent:
        recorder = TrialRecorder(parent.info.experiment_id, parent.info.run_id, {})
        recorder.epochs(TrialRun("gone", run_id="0" * 32), [({"loss": 1.0}, 1)])
        with pytest.raises(MlflowException):
            recorder.close()


def test_pruning_stops_a_bad_trial_early(transformed: tuple[Path, Path],
                                         tmp_path: Path) -> None:
    """Two good trials first (the median pruner's start-up), then a learning rate far too
    small to learn anything in time: the median pruner stops it at its second epoch."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = parse_space({"params": {"learning_rate": {"type": "categorical",
                                                      "choices": [3e-3, 1e-7]}},
                         "trials": 1, "pruner": "median"}, "s")
    base = TrainConfig(framework=Framework.TORCH, epochs=6, show_progress=False)
    study = optuna.create_study(storage=storage, study_name="p", direction="maximize")
    for lr in (3e-3, 3e-3, 1e-7):
        study.enqueue_trial({"learning_rate": lr})
    with mlflow.start_run():
        for _ in range(3):
            run_study(space.model_copy(update={"trials": len(study.trials) + 1}), base,
                      transformed[0], storage, "p")
    trials = optuna.load_study(study_name="p", storage=storage).trials
    assert [t.state for t in trials[:2]] == [optuna.trial.TrialState.COMPLETE] * 2
    bad = trials[2]
    assert bad.params["learning_rate"] == 1e-7
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert max(bad.intermediate_values) < 6  # stopped before its last epoch


KILLED_STUDY = """
import sys
import time
from pathlib import Path
import components.tune.core as core
from components.config import TrainConfig
from components.tune.space import parse_space

real_get_adapter, fits = core.get_adapter, []


class HangsOnSecondFit:
    # The first trial trains for real; the second announces itself and hangs, so the
    # parent kills this process mid-trial at a known point (no race with fast trials).
    def __init__(self, adapter):
        self.adapter = adapter

    def __getattr__(self, name):
        return getattr(self.adapter, name)

    def train(self, *args, **kwargs):
        fits.append(1)
        if len(fits) == 2:
            Path(sys.argv[4]).write_text("second trial running")
            time.sleep(600)
        return self.adapter.train(*args, **kwargs)


core.get_adapter = lambda framework: HangsOnSecondFit(real_get_adapter(framework))
space = parse_space(sys.argv[3], "s")
core.run_study(space, TrainConfig(framework="torch", epochs=3, show_progress=False),
               Path(sys.argv[1]), sys.argv[2], "killed")
"""


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_killed_study_continues(transformed: tuple[Path, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """SIGKILL a real study process in its second trial; the rerun runs only the rest of
    the budget, and the killed trial, left RUNNING, is marked FAILED instead of being
    counted: in the journal file because its owner process is gone, in SQLite because
    its heartbeat went stale."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from components.tune import storage as tune_storage

    storage = (str(tmp_path / "optuna-journal.log") if kind == "journal"
               else f"sqlite:///{tmp_path / 'optuna.db'}")
    marker = tmp_path / "second-trial"
    space = json.dumps({**SPACE, "trials": 3})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STUDY, str(transformed[0]), storage,
                             space, str(marker)])
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the study process never reached its second trial"

    def states() -> list[optuna.trial.TrialState]:
        study = optuna.load_study(study_name="killed",
                                  storage=tune_storage.open_storage(storage))
        return [t.state for t in study.trials]

    assert states() == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    if kind == "sqlite":
        monkeypatch.setattr(tune_storage, "GRACE_SECONDS", 1)
        time.sleep(1.5)
    with mlflow.start_run():
        again = run_study(parse_space(space, "s"),
                          TrainConfig(framework=Framework.TORCH, epochs=3, show_progress=False),
                          transformed[0], storage, "killed")
    assert again.trials_run == 2
    assert states()[1] == optuna.trial.TrialState.FAIL
    assert states().count(optuna.trial.TrialState.COMPLETE) == 3


def test_a_running_trial_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    """Only a trial whose owner is gone is failed: one owned by a live process (this
    one), by an unknown host, or by no recorded owner stays RUNNING."""
    from components.tune.storage import OWNER_ATTR, store_for

    store = store_for(str(tmp_path / "journal.log"))
    backend = store.open()
    study = optuna.create_study(storage=backend, study_name="live")
    mine, elsewhere, unowned = study.ask(), study.ask(), study.ask()
    store.claim(mine)
    elsewhere.set_user_attr(OWNER_ATTR, "another-host:1:0.00")
    store.fail_dead(study, backend)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING] * 3
    assert unowned.number == 2


def test_a_study_with_no_completed_trial_names_why(tmp_path: Path) -> None:
    """Every trial pruned or failed: finish_study raises StudyError naming the states, so
    tune-best fails its run instead of handing train a winner that does not exist."""
    from components.tune.core import Study, StudyError, finish_study

    storage = str(tmp_path / "journal.log")
    optuna_study = optuna.create_study(storage=open_storage(storage), study_name="none",
                                       direction="maximize")
    for state in (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL):
        optuna_study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": 0.01},
            distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-4, 0.1)},
            state=state, intermediate_values={1: 0.5} if state.name == "PRUNED" else None))
    study = Study(parse_space(SPACE, "s"), TrainConfig(framework=Framework.TORCH), "none",
                  storage, "val_accuracy", "maximize", 0)
    with pytest.raises(StudyError, match=r"no trial completed \(FAIL, PRUNED\)"):
        finish_study(study)
