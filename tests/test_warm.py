"""Warm task interpreters (pipelines/warm.py) under KFP's real local runner.

Each task must see its own environment, working directory and exit code, must
run in a zygote of its framework (the framework already imported, the other one
not), and fall back to the real interpreter for anything that is not a task.
"""


import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kfp.local
import pytest
from kfp import dsl

from components.frameworks import framework_names
from pipelines.runners import _runner_python
from pipelines.warm import preload_modules, warm_python
from pipelines.warm_launcher import REAL_PYTHON_ENV, STRICT_ENV


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def probe(framework: str, marker: str) -> str:
    """Report what the task's interpreter had imported before the body ran."""
    import json
    import os
    import sys

    return json.dumps({"torch": "torch" in sys.modules,
                       "tensorflow": "tensorflow" in sys.modules,
                       "marker": os.environ.get("TWINFLOW_TEST_MARKER", ""),
                       "argument": marker, "cwd": os.getcwd(), "pid": os.getpid()})


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail(framework: str) -> None:
    raise SystemExit(3)


@pytest.fixture
def warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWINFLOW_WARM_STEPS", "1")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    with warm_python(["torch"]) as python, _runner_python(python):
        assert python is not None
        yield python


def test_task_runs_in_its_frameworks_zygote_with_its_own_env(warm: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("TWINFLOW_TEST_MARKER", "first")
    first = json.loads(probe(framework="torch", marker="a").output)
    monkeypatch.setenv("TWINFLOW_TEST_MARKER", "second")
    second = json.loads(probe(framework="none", marker="b").output)
    assert first["torch"] and not first["tensorflow"]  # preloaded by the torch zygote
    assert not second["torch"] and not second["tensorflow"]  # the base zygote
    assert (first["marker"], second["marker"]) == ("first", "second")
    assert (first["argument"], second["argument"]) == ("a", "b")
    assert first["cwd"] == second["cwd"] == str(tmp_path)
    assert first["pid"] != second["pid"] != os.getpid()


def test_a_failing_task_fails_the_pipeline(warm: str) -> None:
    with pytest.raises(RuntimeError, match="FAILURE"):
        fail(framework="torch")


def test_launcher_runs_anything_else_with_the_real_interpreter(warm: str) -> None:
    out = subprocess.run([warm, "-c", "import sys; print(sys.executable); sys.exit(4)"],
                         capture_output=True, text=True)
    assert out.returncode == 4
    assert out.stdout.strip() == os.environ[REAL_PYTHON_ENV] != warm


def test_cold_interpreter_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINFLOW_WARM_STEPS", "0")
    with warm_python(["torch"]) as python:
        assert python is None


@pytest.mark.parametrize("kind", ["light", *framework_names()])  # each includes base
def test_every_preload_list_imports(kind: str) -> None:
    """The zygotes' modules, the frameworks' from their adapters, all exist and import
    (each kind in a fresh interpreter, as its zygote does)."""
    modules = preload_modules(kind)
    assert modules
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    out = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True,
                         text=True, env={**os.environ, "_KFP_RUNTIME": "true"})
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("strict", [True, False])
def test_a_zygote_that_cannot_preload_fails_its_tasks_in_strict_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strict: bool) -> None:
    """Strict (the tests' setting): the task fails naming the preload error; otherwise it
    runs cold in the real interpreter."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWINFLOW_WARM_STEPS", "1")
    monkeypatch.setenv(STRICT_ENV, "1" if strict else "0")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    with warm_python(["no-such-framework"]) as python, _runner_python(python):
        if strict:
            with pytest.raises(RuntimeError, match="FAILURE"):
                probe(framework="no-such-framework", marker="x")
        else:
            assert json.loads(probe(framework="no-such-framework", marker="x").output)
