"""Compile the pipeline to KFP IR YAML, the file a Kubeflow cluster runs."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.params import PipelineParams


def compile_pipeline(path: Path, params: PipelineParams | None = None) -> Path:
    """Write the pipeline to ``path``; ``params`` become the compiled defaults (and pick
    its shape: the tuned pipeline when they give a search)."""
    from pipelines.pipeline import pipeline_for

    path.parent.mkdir(parents=True, exist_ok=True)
    params = params or PipelineParams()
    defaults = params.as_arguments()
    defaults.pop("run_key")
    compiler.Compiler().compile(pipeline_for(params), str(path), pipeline_parameters=defaults)
    return path
