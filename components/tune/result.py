"""What the tune steps hand on: a batch of trials to run, and the winner.

Both are typed models that travel as JSON (KFP parameters between the tune steps,
a file in the model artifact from train to push), so no step re-derives what an
earlier one decided. Light on purpose: push imports this without Optuna.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from components.tags import TUNE_BEST_TRIAL_TAG, TUNE_RUN_TAG, TUNE_STUDY_TAG, TUNE_VALUE_TAG

TUNED_FILE = "tuning.json"  # in the model artifact: the search that chose its parameters


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TuneBatch(_Frozen):
    """One KFP task's share of a study: ``trials`` trials in ``processes`` processes."""

    index: int
    trials: int
    processes: int
    study: str
    storage: str
    tune_run_id: str
    space: str  # the SearchSpace as JSON
    base: str  # the TrainConfig the trials vary, as JSON


class Tuned(_Frozen):
    """The winning trial of a study, and where to find the study again."""

    study: str
    trial: int
    metric: str
    value: float
    params: dict[str, Any]
    tune_run_id: str

    def version_tags(self) -> dict[str, str]:
        """Tags of the registered version: which study and trial chose its parameters."""
        return {TUNE_STUDY_TAG: self.study, TUNE_BEST_TRIAL_TAG: str(self.trial),
                TUNE_VALUE_TAG: f"{self.metric}={self.value:.6g}", TUNE_RUN_TAG: self.tune_run_id}

    def save(self, model_dir: Path) -> None:
        (model_dir / TUNED_FILE).write_text(self.model_dump_json(indent=1), encoding="utf-8")

    def record(self, model_dir: Path) -> None:
        """Into the trained model (push tags the version from it) and onto the active run."""
        import mlflow

        self.save(model_dir)
        mlflow.set_tags(self.version_tags())

    @classmethod
    def load(cls, model_dir: Path) -> Tuned | None:
        """The search behind the model in ``model_dir``, or None for an untuned model."""
        path = model_dir / TUNED_FILE
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8"))) \
            if path.exists() else None


def parse_tuned(text: str) -> Tuned | None:
    """The tune step's output (JSON), or None when the run is not tuned ('')."""
    return Tuned.model_validate_json(text) if text else None
