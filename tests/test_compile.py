"""`twinflow compile`: the same pipeline as KFP IR YAML, one image per framework."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def test_compile_writes_ir_with_framework_default_and_images(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "compile", "--framework",
                             "tensorflow", "-o", str(out)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "TWINFLOW_IMAGE_REGISTRY": "reg.local/tf",
                                 "TWINFLOW_IMAGE_TAG": "t1"})
    assert result.returncode == 0, result.stderr
    ir = yaml.safe_load(out.read_text())
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert params["framework"]["defaultValue"] == "tensorflow"
    assert params["epochs"]["defaultValue"] == 10
    images = {e["container"]["image"] for e in ir["deploymentSpec"]["executors"].values()}
    assert images == {"reg.local/tf/step-base:t1", "reg.local/tf/step-torch:t1",
                      "reg.local/tf/step-tensorflow:t1"}
    commands = " ".join(" ".join(e["container"]["command"])
                        for e in ir["deploymentSpec"]["executors"].values())
    assert "pip install" not in commands  # images bake kfp and twinflow in
    tasks = ir["root"]["dag"]["tasks"]
    assert "exit-handler-1" in tasks or any("exit" in t for t in tasks)
    assert tasks["finish-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
