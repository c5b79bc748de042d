"""KFP wrapper of the compress step, one component per framework image."""

from kfp.dsl import Dataset, Input, Model, Output

from components.images import step_component


def compress(parent_run_id: str, framework: str, data: Input[Dataset], model: Input[Model],
             compressed: Output[Model]) -> None:
    """Quantise the model to int8 and re-measure its accuracy."""
    from pathlib import Path

    from components.compress.core import run_compress
    from components.config import CompressConfig
    from components.errors import step_errors
    from components.tracking import step_run

    with step_errors("compress"), step_run(parent_run_id, "compress", framework):
        result = run_compress(CompressConfig(framework=framework), Path(data.path),
                              Path(model.path), Path(compressed.path))
        compressed.metadata.update({"size_ratio": result.size_ratio,
                                    "int8_accuracy": result.int8_accuracy})


compress_ops = {fw: step_component(compress, fw) for fw in ("torch", "tensorflow")}
