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


def test_evaluate_options_and_kfp_metrics_outputs_in_ir(tmp_path: Path) -> None:
    from kfp import compiler

    from pipelines.pipeline import twinflow_pipeline

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(twinflow_pipeline, str(out))
    ir = yaml.safe_load(out.read_text())
    params = ir["root"]["inputDefinitions"]["parameters"]
    for name in ("min_accuracy", "tolerance", "min_f1_macro", "min_improvement",
                 "slice_feature", "roc_class"):
        assert name in params
    outputs = ir["components"]["comp-evaluate"]["outputDefinitions"]
    types = {k: v["artifactType"]["schemaTitle"] for k, v in outputs["artifacts"].items()}
    assert types == {"metrics": "system.Metrics", "confusion": "system.ClassificationMetrics"}
    assert outputs["parameters"]["Output"]["parameterType"] == "BOOLEAN"
    inputs = ir["components"]["comp-evaluate"]["inputDefinitions"]
    assert {"data", "raw", "model"} == set(inputs["artifacts"])


def test_predict_pipeline_compiles_to_one_step_on_the_frameworks_image(tmp_path: Path) -> None:
    """Batch scoring is a KFP pipeline of its own: IR YAML with the model, data and output
    as parameters and one step on the version's framework image (no cluster here: the
    IR is what a KFP backend would take)."""
    from kfp import compiler

    from pipelines.predict import PIPELINE_NAME, predict_pipeline

    for fw, image in (("torch", "step-torch"), ("tensorflow", "step-tensorflow")):
        out = tmp_path / f"predict-{fw}.yaml"
        compiler.Compiler().compile(predict_pipeline(fw), str(out))
        ir = yaml.safe_load(out.read_text())
        assert ir["pipelineInfo"]["name"] == PIPELINE_NAME
        params = ir["root"]["inputDefinitions"]["parameters"]
        assert {"model", "data", "output", "keep", "batch_rows"} <= set(params)
        assert list(ir["root"]["dag"]["tasks"]) == ["predict"]
        [executor] = ir["deploymentSpec"]["executors"].values()
        assert f"/{image}:" in executor["container"]["image"]
