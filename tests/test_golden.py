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


def _compile(framework: str, out: Path) -> str:
    subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--framework", framework,
                    "-o", str(out)], env=ENV, check=True, capture_output=True, text=True,
                   cwd=Path(__file__).parents[1])
    return out.read_text()


@pytest.mark.parametrize("framework", ["torch", "tensorflow", "both"])
def test_compiled_pipeline_matches_golden(framework: str, tmp_path: Path) -> None:
    golden = GOLDEN / f"pipeline-{framework}.yaml"
    first = _compile(framework, tmp_path / "a.yaml")
    assert _compile(framework, tmp_path / "b.yaml") == first, "compiling is not deterministic"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(first)
    assert golden.is_file(), f"{golden} missing: run with UPDATE_GOLDEN=1"
    assert first == golden.read_text(), (
        f"compiled {framework} pipeline differs from {golden.name}; if intended, "
        "regenerate with UPDATE_GOLDEN=1")
