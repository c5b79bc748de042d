"""From a job's status conditions to the step's outcome, as a pure function."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# TrainJob (Trainer v2) ends with Complete or Failed; v1 jobs with Succeeded or Failed.
_SUCCESS = {"Complete", "Succeeded"}
_FAILURE = {"Failed"}


class State(StrEnum):
    """Where a training job stands."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """The state and, for a failure, the operator's reason and message."""

    state: State
    message: str = ""


def outcome(job: dict[str, Any]) -> Outcome:
    """Map ``status.conditions`` (any order, missing status) to an outcome.

    Only conditions whose status is "True" count; a terminal condition wins over
    Running/Created/Restarting, and Failed wins over success if both are present.
    """
    conditions = (job.get("status") or {}).get("conditions") or []
    active = [c for c in conditions if str(c.get("status")) == "True"]
    for c in active:
        if c.get("type") in _FAILURE:
            reason = c.get("reason", "")
            text = c.get("message", "")
            return Outcome(State.FAILED, f"{reason}: {text}".strip(": "))
    if any(c.get("type") in _SUCCESS for c in active):
        return Outcome(State.SUCCEEDED)
    return Outcome(State.RUNNING)
