"""`twinflow predict`'s pipeline: batch scoring with a registered model, one KFP step.

A pipeline of its own (not a branch of the training pipeline) so that it runs on
the local runner like `twinflow run`, compiles to IR YAML and submits to a cluster
alike. The step runs on the image of the version's framework (its export may need
torch or tensorflow to load).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kfp import dsl

from components.predict.component import predict_ops

PIPELINE_NAME = "twinflow-predict"


def predict_pipeline(framework: str) -> Callable[..., Any]:
    """The pipeline function for a model of ``framework``."""
    op = predict_ops[framework]

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="Score a file with a registered twinflow model.")
    def pipeline(model: str, data: str, output: str, keep: list = [],  # noqa: B006
                 batch_rows: int = 65_536, data_format: str = "auto") -> None:
        op(model=model, data=data, output=output, keep=keep, batch_rows=batch_rows,
           data_format=data_format).set_display_name("predict")

    return pipeline


def compile_predict(path: Path, framework: str) -> Path:
    """Write the batch-scoring pipeline of a ``framework`` model to ``path`` (IR YAML)."""
    from kfp import compiler

    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(predict_pipeline(framework), str(path))
    return path
