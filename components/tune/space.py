"""The search space of ``twinflow run --tune search.yaml``, validated before any trial.

A ``search.yaml`` declares what to tune (training parameters and the model builder's
options), the objective (a validation metric of the task and its direction) and the
budgets. Every mistake is one error naming the key: an unknown parameter, an empty
range, an objective the task does not have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.config import TrainConfig, TrainParams
from components.errors import ConfigError, describe_validation_error
from components.tasks import get_task

#: Training parameters a search may set; the model builder's options go under this prefix.
TUNABLE = ("learning_rate", "batch_size", "epochs", "precision", "early_stopping_patience",
           "regression_loss", "binary_logits")
MODEL_OPTION_PREFIX = "model_options."


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Range(_Spec):
    """A range's rules, shared by floats and integers: not empty, positive on a log scale."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> _Range:
        if not self.low < self.high:
            raise ValueError(f"empty range: low {self.low} is not below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


class FloatParam(_Range):
    """A float between ``low`` and ``high``, sampled on a log scale when ``log``."""

    type: Literal["float"]


class IntParam(_Range):
    """An integer from ``low`` to ``high`` inclusive."""

    type: Literal["int"]
    low: int
    high: int


class CategoricalParam(_Spec):
    """One of ``choices`` (strings, numbers or booleans)."""

    type: Literal["categorical"]
    choices: list[str | int | float | bool] = Field(min_length=1)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Objective(_Spec):
    """What a trial is scored by: ``val_loss`` or ``val_<the task's epoch metric>``."""

    metric: str = ""  # '' = the task's validation metric
    direction: Literal["", "maximize", "minimize"] = ""  # '' = the metric's own


class SearchSpace(_Spec):
    """The whole ``search.yaml``."""

    params: dict[str, ParamSpec] = Field(min_length=1)
    objective: Objective = Field(default_factory=Objective)
    trials: int = Field(default=20, ge=1, le=10_000)
    timeout_minutes: float = Field(default=0.0, ge=0.0, description="0 = no time budget")
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int | None = None  # None = the run's seed

    @model_validator(mode="after")
    def _known_names(self) -> SearchSpace:
        for name in self.params:
            if name.startswith(MODEL_OPTION_PREFIX):
                if not name.removeprefix(MODEL_OPTION_PREFIX).isidentifier():
                    raise ValueError(f"params.{name}: not a model option name")
            elif name not in TUNABLE:
                raise ValueError(f"params.{name}: unknown parameter; tune one of "
                                 f"{', '.join(TUNABLE)} or {MODEL_OPTION_PREFIX}<option>")
        for name, spec in self.params.items():
            if name in TrainParams.model_fields:
                _check_values(name, spec)
        return self

    def resolved_objective(self, task: str) -> tuple[str, str]:
        """(metric, direction) for ``task``, or ConfigError if the task has no such metric."""
        kind = get_task(task)
        score = f"val_{kind.epoch_metric}"
        higher_better = {"val_loss": False, score: kind.epoch_higher_is_better}
        metric = self.objective.metric or score
        if metric not in higher_better:
            raise ConfigError(f"search space: objective.metric {metric!r}: the {task} task "
                              f"reports {', '.join(sorted(higher_better))}")
        own = "maximize" if higher_better[metric] else "minimize"
        return metric, self.objective.direction or own


def _check_values(name: str, spec: FloatParam | IntParam | CategoricalParam) -> None:
    """A range's ends, or every choice, must be values the training parameter accepts."""
    values = spec.choices if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
    for value in values:
        try:
            TrainParams.model_validate({name: value})
        except ValidationError as err:
            raise ValueError(f"params.{name}: {value} is outside what {name} accepts: "
                             f"{err.errors()[0]['msg']}") from None


def load_space(path: Path) -> SearchSpace:
    """Read and validate a search file; ConfigError naming the file and the key."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"--tune {path}: {err.strerror}") from None
    except yaml.YAMLError as err:  # one line: where, and what the parser expected
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"--tune {path}: not YAML{at}: {problem}") from None
    return parse_space(data, str(path))


def parse_space(data: Any, where: str) -> SearchSpace:
    """Validate a search space given as a mapping (or its JSON text)."""
    try:
        if isinstance(data, str):
            return SearchSpace.model_validate_json(data)
        return SearchSpace.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{where}: {describe_validation_error(err, 'key')}") from None


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


def max_epochs(space: SearchSpace, base: TrainConfig) -> int:
    """The longest trial of the search: the space's epochs range, else the run's."""
    epochs = space.params.get("epochs")
    return int(epochs.high) if isinstance(epochs, IntParam) else base.epochs


def median_warmup(longest: int) -> int:
    """Epochs a trial runs before the median pruner may stop it: a third of the longest
    trial, at least 2. Measured on digits (bench/RESULTS.md, issue 20): with no warm-up
    most trials were stopped after epoch 1, whose accuracy mostly reflects the steps per
    epoch (the batch size), not what the trial reaches, and the study kept trial 0."""
    return max(2, longest // 3)
