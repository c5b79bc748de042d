"""Run an Optuna study over the real trainer: every trial is a real fit on the train
split, scored on the validation split, pruned by its per-epoch validation metric.

The study lives in durable storage (components.tune.storage), so a rerun of the
same search continues it: only the trials still missing from the budget run. The
work is split three ways, as the pipeline's tune steps are: :func:`prepare_study`
(check the space against the data and the model, create or continue the study),
:func:`run_trials` (one process's share of the trials; many may run at once, on
one machine or in many pods, sharing the storage) and :func:`finish_study` (the
plots and the winner). :func:`run_study` is all three in one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.storages import BaseStorage

from components.config import TrainConfig
from components.data.dataset import (
    ArraySplit,
    DatasetMetadata,
    Split,
    read_arrays,
    read_metadata,
)
from components.errors import TwinflowError
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, TrainContext
from components.tags import (
    PIPELINE_ROOT_TAG,
    TUNE_COMPLETE,
    TUNE_PRUNED,
    TUNE_STATE_TAG,
    TUNE_TRIAL_TAG,
)
from components.train.model import CHECK_ROWS, check_model, model_spec
from components.tune.plots import log_study_plots, warm_plots
from components.tune.record import TrialRecorder
from components.tune.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    apply_params,
    max_epochs,
    median_warmup,
)
from components.tune.storage import Store, open_storage, store_for

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
#: Logged on the tune run as trials_complete, trials_pruned, trials_fail.
TRIAL_COUNTS = (*FINISHED, optuna.trial.TrialState.FAIL)


@dataclass(frozen=True)
class StudyResult:
    """The best trial of a finished study and what it took."""

    study_name: str
    storage: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    trials_run: int  # by this call (a continued study ran the rest of its budget)
    pruned: int


def study_name(space: SearchSpace, base: TrainConfig, dataset: str) -> str:
    """The same search of the same data and model continues one study."""
    fixed = base.model_dump(mode="json", exclude={"show_progress", "resume", "workers"})
    key = json.dumps([space.model_dump(mode="json", exclude={"trials", "timeout_minutes"}),
                      fixed], sort_keys=True)
    return f"{dataset}-{base.framework}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in space.params.items():
        if isinstance(spec, FloatParam):
            values[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, IntParam):
            values[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, CategoricalParam):
            values[name] = trial.suggest_categorical(name, spec.choices)
    return values


def _first_point(space: SearchSpace) -> dict[str, Any]:
    """The low end of every range: built once before any trial, so that a bad model
    option fails in seconds with the builder's error."""
    return {name: spec.choices[0] if isinstance(spec, CategoricalParam) else spec.low
            for name, spec in space.params.items()}


def _pruner(space: SearchSpace, max_epochs: int) -> optuna.pruners.BasePruner:
    if space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2,
                                           n_warmup_steps=median_warmup(max_epochs))
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Study:
    """A prepared study: what to search, over what, and where it is stored."""

    space: SearchSpace
    base: TrainConfig
    name: str
    storage: str
    metric: str
    direction: str
    remaining: int  # trials still missing from the budget when it was prepared


class StudyError(TwinflowError):
    """The study could not produce a winner (every trial pruned or failed)."""


def prepare_study(space: SearchSpace, base: TrainConfig, data_dir: Path, storage: str,
                  name: str = "") -> Study:
    """Check the objective and the low end of the space, then create (or continue) the
    study; a ConfigError here means no study was created and no trial ran."""
    meta = read_metadata(data_dir)
    metric, direction = space.resolved_objective(meta.task.value)
    adapter = get_adapter(base.framework)
    train = read_arrays(data_dir, Split.TRAIN, meta)
    check = apply_params(base, _first_point(space))
    check_model(adapter, model_spec(check, meta), train.x[:CHECK_ROWS], base.seed)
    study = Study(space, base, name or study_name(space, base, meta.name), storage, metric,
                  direction, 0)
    store = store_for(storage)
    backend = store.open()
    optuna_study = _load(study, backend)
    store.fail_dead(optuna_study, backend)  # left RUNNING by a killed earlier run
    remaining = max(0, space.trials - _finished(optuna_study))
    log.info("study %s: %d of %d trials done, %d to run", study.name,
             space.trials - remaining, space.trials, remaining)
    return replace(study, remaining=remaining)


def _load(study: Study, storage: BaseStorage) -> optuna.Study:
    return optuna.create_study(
        storage=storage, study_name=study.name, load_if_exists=True,
        direction=optuna.study.StudyDirection[study.direction.upper()],
        pruner=_pruner(study.space, max_epochs(study.space, study.base)))


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(study: Study, data_dir: Path, trials: int, worker: int = 0,
               parent_run_id: str | None = None) -> tuple[int, int]:
    """Run ``trials`` trials of ``study`` in this process; (run, pruned).

    Each trial is a nested MLflow run under ``parent_run_id`` (default: the active
    run), written from a background thread (components.tune.record). ``worker`` numbers
    the processes sharing the study: each seeds its sampler apart, so parallel
    processes do not suggest the same points.
    """
    if trials <= 0:
        return 0, 0
    meta = read_metadata(data_dir)
    train, val = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.VAL, meta)
    store = store_for(study.storage)
    optuna_study = _load(study, store.open())
    # Seeded past the finished trials: a continued study does not repeat its start-up points.
    seed = study.base.seed if study.space.seed is None else study.space.seed
    optuna_study.sampler = optuna.samplers.TPESampler(
        seed=seed + _finished(optuna_study) + 7919 * worker)
    recorder = _recorder(parent_run_id or _active_run_id())
    objective = _Objective(study, store, recorder, meta, (train, val))
    try:
        optuna_study.optimize(objective, n_trials=trials,
                              timeout=study.space.timeout_minutes * 60 or None)
    finally:
        recorder.close()
    every = optuna_study.get_trials(deepcopy=False)
    states = [every[n].state for n in objective.numbers]
    return len(objective.numbers), states.count(optuna.trial.TrialState.PRUNED)


def _recorder(parent: str | None) -> TrialRecorder:
    """Trial runs nest under ``parent`` and carry the pipeline run's id (its parent)."""
    if not parent:
        return TrialRecorder(_current_experiment(), None, {})
    above = MlflowClient().get_run(parent)
    root = above.data.tags.get(MLFLOW_PARENT_RUN_ID, parent)
    return TrialRecorder(above.info.experiment_id, parent, {PIPELINE_ROOT_TAG: root})


class _Objective:
    """One trial: the suggested config trained by the real trainer, its run recorded,
    its last validation metric the value (pruned by the per-epoch one if a pruner
    reads it)."""

    def __init__(self, study: Study, store: Store, recorder: TrialRecorder,
                 meta: DatasetMetadata, splits: tuple[ArraySplit, ArraySplit]) -> None:
        self.study, self.store, self.recorder, self.meta = study, store, recorder, meta
        self.splits = splits
        self.adapter = get_adapter(study.base.framework)
        self.numbers: list[int] = []

    def __call__(self, trial: optuna.Trial) -> float:
        self.numbers.append(trial.number)
        self.store.claim(trial)
        config = apply_params(self.study.base, _suggest(trial, self.study.space)).model_copy(
            update={"workers": 1, "show_progress": False, "resume": False})
        run = self.recorder.start(f"trial-{trial.number}", {TUNE_TRIAL_TAG: str(trial.number)},
                                  trial.params)
        epochs = EpochLog(lambda batch: self.recorder.epochs(run, batch))
        values: list[float] = []
        prunes = not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        metric = self.study.metric

        def on_epoch(m: EpochMetrics) -> None:
            logged = m.as_metrics()
            epochs.add(logged, m.epoch)
            values.append(logged[metric])
            if not prunes:  # no pruner reads them: one storage write less per epoch
                return
            trial.report(logged[metric], m.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {m.epoch}: {metric} {logged[metric]:.4f}")

        tags, status = {TUNE_STATE_TAG: TUNE_COMPLETE}, RunStatus.FINISHED
        try:
            self.adapter.train(model_spec(config, self.meta), *self.splits, config,
                               TrainContext(), on_epoch)
        except optuna.TrialPruned:  # a pruned trial's run is FINISHED, not FAILED
            tags = {TUNE_STATE_TAG: TUNE_PRUNED}
            raise
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM stopped the step
            tags, status = {}, RunStatus.KILLED
            raise
        except BaseException:
            tags, status = {}, RunStatus.FAILED
            raise
        finally:
            self.recorder.end(run, tags, status, epochs=epochs.take())
        return values[-1]


class EpochLog:
    """A trial's per-epoch metrics, sent to MLflow in one request every few seconds (and
    at the end) rather than one per epoch: a short trial's epochs take less time than
    the request (bench/RESULTS.md, issue 20), a long one's still show as they come."""

    FLUSH_SECONDS = 5.0
    MAX_EPOCHS = 100  # MLflow takes at most 1000 metrics per request

    def __init__(self, send: Callable[[list[tuple[dict[str, float], int]]], None]) -> None:
        self._send = send
        self._pending: list[tuple[dict[str, float], int]] = []
        self._sent = time.monotonic()

    def add(self, metrics: dict[str, float], epoch: int) -> None:
        self._pending.append((metrics, epoch))
        if (time.monotonic() - self._sent >= self.FLUSH_SECONDS
                or len(self._pending) >= self.MAX_EPOCHS):
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._send(self.take())

    def take(self) -> list[tuple[dict[str, float], int]]:
        """The epochs not sent yet (the caller sends them)."""
        pending, self._pending, self._sent = self._pending, [], time.monotonic()
        return pending


def finish_study(study: Study) -> StudyResult:
    """The study's plots on the active run, and its best trial (StudyError if none)."""
    optuna_study = _load(study, open_storage(study.storage))
    try:
        best = optuna_study.best_trial
    except ValueError:
        states = [t.state.name for t in optuna_study.trials]
        raise StudyError(f"study {study.name}: no trial completed "
                         f"({', '.join(sorted(set(states))) or 'no trials'}); widen the space "
                         "or relax the pruner") from None
    if mlflow.active_run() is not None:
        log_study_plots(optuna_study)
        states = [t.state.name for t in optuna_study.trials]
        mlflow.log_metrics({f"trials_{state.name.lower()}": states.count(state.name)
                            for state in TRIAL_COUNTS})
    return StudyResult(study.name, study.storage, best.number, float(best.value or 0.0),
                       best.params, 0, 0)


def run_study(space: SearchSpace, base: TrainConfig, data_dir: Path, storage: str,
              name: str = "") -> StudyResult:
    """Run the budget's missing trials of the study in this process, return its best."""
    study = prepare_study(space, base, data_dir, storage, name)
    threading.Thread(target=warm_plots, name="warm-plots", daemon=True).start()
    ran, pruned = run_trials(study, data_dir, study.remaining)
    return replace(finish_study(study), trials_run=ran, pruned=pruned)


def _active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def _current_experiment() -> str:
    """The experiment mlflow.start_run would use (mlflow.set_experiment's, else the
    default)."""
    from mlflow.tracking.fluent import _get_experiment_id

    return str(_get_experiment_id())
