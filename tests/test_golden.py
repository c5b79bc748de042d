"""Compiled pipelines against golden files: a change to the compiled IR is a
deliberate one. Regenerate with `UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TWINFLOW_IMAGE_REGISTRY": "twinflow",
       "TWINFLOW_IMAGE_TAG": "0.1.0"}


def _compile(framework: str, out: Path, *extra: str) -> str:
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--framework", framework,
                    "-o", str(out), *extra], env=ENV, check=True, capture_output=True, text=True,
                   cwd=Path(__file__).parents[1])
    return out.read_text()


# The tuned pipeline: the search file's space is compiled in as the default of tune_space.
@pytest.mark.parametrize(("framework", "extra"), [
    ("torch", ()), ("tensorflow", ()), ("both", ()),
    ("both", ("--tune", str(GOLDEN / "search.yaml"), "--tune-tasks", "3"))],
    ids=["torch", "tensorflow", "both", "tuned"])
def test_compiled_pipeline_matches_golden(framework: str, extra: tuple[str, ...],
                                          tmp_path: Path) -> None:
    golden = GOLDEN / f"pipeline-{'tuned' if extra else framework}.yaml"
    first = _compile(framework, tmp_path / "a.yaml", *extra)
    assert _compile(framework, tmp_path / "b.yaml", *extra) == first, \
        "compiling is not deterministic"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(first)
    assert golden.is_file(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    assert first == golden.read_text(), (
        f"compiled {framework} pipeline differs from {golden.name}; if intended, "
        "regenerate with UPDATE_GOLDEN=1")
