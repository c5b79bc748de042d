"""Issue 17: the champion alias under concurrent pushes (components/push/crown.py), on
a real SQLite MLflow registry; whole concurrent runs are in test_concurrent_runs.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.config import EvaluateConfig, PushConfig
from components.processes import owner
from components.push.crown import Judged, champion_version, crown, registry_lock
from components.tags import LOCK_MODEL_SUFFIX, OWNER_TAG
from components.tasks import get_task

HOLD = """
import sys, time
from pathlib import Path
from components.push.crown import registry_lock
log = Path(sys.argv[2])
with registry_lock(sys.argv[1]):
    with log.open("a") as fh:
        fh.write("enter\\n")
    time.sleep(0.5)
    with log.open("a") as fh:
        fh.write("exit\\n")
"""


def _name() -> str:
    return f"crown-{uuid.uuid4().hex[:8]}"


def _version(name: str, accuracy: float) -> str:
    client = MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    made = client.create_model_version(name, source="file:///nonexistent/model",
                                       tags={"test_accuracy": f"{accuracy:.6g}"})
    return str(made.version)


def _judged(against: str = "", tolerance: float = 0.0) -> Judged:
    return Judged(against, EvaluateConfig(framework="torch", tolerance=tolerance),
                  get_task("multiclass"))


CONFIG = PushConfig(framework="torch")


def test_registry_lock_admits_one_process_at_a_time(store: str, tmp_path: Path) -> None:
    name, log = _name(), tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, name, str(log)]) for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert log.read_text().splitlines() == ["enter", "exit"] * 3
    assert MlflowClient().search_registered_models(f"name = '{name}{LOCK_MODEL_SUFFIX}'") == []


def test_a_dead_holders_lock_is_taken_over(store: str) -> None:
    name = _name()
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    holder = owner(dead.pid)
    dead.wait()
    MlflowClient().create_registered_model(f"{name}{LOCK_MODEL_SUFFIX}",
                                           tags={OWNER_TAG: holder})
    with registry_lock(name):
        held = MlflowClient().get_registered_model(f"{name}{LOCK_MODEL_SUFFIX}")
        assert held.tags[OWNER_TAG] == owner()


def test_a_worse_version_judged_before_a_concurrent_crowning_stays_out(store: str) -> None:
    """Both candidates were judged against no champion; the better one crowned first:
    the worse one's push keeps it (and says why), a better third one takes over."""
    name = _name()
    good, worse, best = _version(name, 0.95), _version(name, 0.90), _version(name, 0.97)
    assert crown(CONFIG, name, good, _judged()).crowned
    kept = crown(CONFIG, name, worse, _judged())
    assert not kept.crowned
    assert kept.reason.startswith(f"accuracy 0.9000 misses champion v{good} accuracy 0.9500")
    assert champion_version(name, "champion") == good
    assert crown(CONFIG, name, best, _judged()).crowned
    assert champion_version(name, "champion") == best
    assert champion_version(name, "previous-champion") == good


def test_a_version_judged_against_the_current_champion_is_crowned(store: str) -> None:
    """The ordinary sequential case: evaluate already compared it with that champion."""
    name = _name()
    first, second = _version(name, 0.95), _version(name, 0.90)
    assert crown(CONFIG, name, first, _judged()).crowned
    assert crown(CONFIG, name, second, _judged(against=first)).crowned  # e.g. with tolerance
    assert champion_version(name, "champion") == second


def test_the_gate_tolerance_applies_to_a_concurrent_crowning(store: str) -> None:
    name = _name()
    first, second = _version(name, 0.95), _version(name, 0.945)
    assert crown(CONFIG, name, first, _judged()).crowned
    assert crown(CONFIG, name, second, _judged(tolerance=0.01)).crowned


def test_the_lock_is_released_when_the_body_fails(store: str) -> None:
    name = _name()
    with pytest.raises(RuntimeError), registry_lock(name):
        raise RuntimeError("push failed")
    assert MlflowClient().search_registered_models(f"name = '{name}{LOCK_MODEL_SUFFIX}'") == []
