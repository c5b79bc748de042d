"""Compile the pipeline to KFP IR YAML, the file a Kubeflow cluster runs."""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from pipelines.params import PipelineParams


def compile_pipeline(path: Path, params: PipelineParams | None = None) -> Path:
    """Write the pipeline to ``path``; ``params`` become the compiled defaults."""
    from pipelines.pipeline import twinflow_pipeline

    path.parent.mkdir(parents=True, exist_ok=True)
    defaults = (params or PipelineParams()).as_arguments()
    defaults.pop("run_key")
    compiler.Compiler().compile(twinflow_pipeline, str(path), pipeline_parameters=defaults)
    return path
