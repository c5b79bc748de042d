"""Run an Optuna study over the real trainer: every trial is a real fit on the train
split, scored on the validation split, pruned by its per-epoch validation metric.

The study lives in durable storage (an SQLite file beside the MLflow store by
default, or any RDB URL), so a rerun of the same search continues it: only the
trials still missing from the budget run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna

from components.config import TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, TrainContext
from components.tags import TUNE_STATE_TAG, TUNE_TRIAL_TAG
from components.train.model import CHECK_ROWS, check_model, model_spec
from components.tune.plots import log_study_plots
from components.tune.space import (
    MODEL_OPTION_PREFIX,
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
)

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


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


def apply_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """``base`` with a trial's (or the winner's) values; the model options merged in."""
    options = dict(base.options)
    updates: dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith(MODEL_OPTION_PREFIX):
            options[name.removeprefix(MODEL_OPTION_PREFIX)] = value
        else:
            updates[name] = value
    data = {**base.model_dump(), **updates, "model_options": json.dumps(options)}
    return TrainConfig.model_validate(data)


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
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if space.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    return optuna.pruners.NopPruner()


def run_study(space: SearchSpace, base: TrainConfig, data_dir: Path, storage: str,
              name: str = "") -> StudyResult:
    """Run the budget's missing trials of the study, return its best trial."""
    meta = read_metadata(data_dir)
    metric, direction = space.resolved_objective(meta.task.value)
    adapter = get_adapter(base.framework)
    train, val = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.VAL, meta)
    check = apply_params(base, _first_point(space))
    check_model(adapter, model_spec(check, meta), train.x[:CHECK_ROWS], base.seed)
    name = name or study_name(space, base, meta.name)
    max_epochs = int(getattr(space.params.get("epochs"), "high", base.epochs))
    study = optuna.create_study(
        storage=storage, study_name=name, load_if_exists=True,
        direction=optuna.study.StudyDirection[direction.upper()],
        pruner=_pruner(space, max_epochs))
    done = [t for t in study.trials if t.state in FINISHED]
    # Seeded past the finished trials: a continued study does not repeat its start-up points.
    seed = base.seed if space.seed is None else space.seed
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(done))
    remaining = max(0, space.trials - len(done))
    log.info("study %s: %d of %d trials done, running %d", name, len(done), space.trials,
             remaining)

    def objective(trial: optuna.Trial) -> float:
        config = apply_params(base, _suggest(trial, space)).model_copy(
            update={"workers": 1, "show_progress": False, "resume": False})
        spec = model_spec(config, meta)
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                              tags={TUNE_TRIAL_TAG: str(trial.number)}):
            mlflow.log_params(trial.params)
            values: list[float] = []

            def on_epoch(m: EpochMetrics) -> None:
                logged = m.as_metrics()
                mlflow.log_metrics(logged, step=m.epoch)
                values.append(logged[metric])
                trial.report(logged[metric], m.epoch)
                if trial.should_prune():
                    mlflow.set_tag(TUNE_STATE_TAG, "pruned")
                    raise optuna.TrialPruned(f"epoch {m.epoch}: {metric} {logged[metric]:.4f}")

            adapter.train(spec, train, val, config, TrainContext(), on_epoch)
            mlflow.set_tag(TUNE_STATE_TAG, "complete")
            return values[-1]

    before = len(study.trials)
    study.optimize(objective, n_trials=remaining,
                   timeout=space.timeout_minutes * 60 or None)
    ran = study.trials[before:]
    best = study.best_trial
    if mlflow.active_run() is not None:
        log_study_plots(study)
    return StudyResult(name, storage, best.number, float(best.value or 0.0), best.params,
                       len(ran), sum(t.state == optuna.trial.TrialState.PRUNED for t in ran))

