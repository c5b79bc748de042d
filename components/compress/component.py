"""KFP wrapper of the compress step, one component per framework image."""

from kfp.dsl import Dataset, Input, Model, Output

from components.images import framework_components


def compress(parent_run_id: str, framework: str, max_accuracy_drop: float,
             pruning_sparsity: float, max_relative_change: float, data: Input[Dataset],
             model: Input[Model],
             exports: Output[Model]) -> None:
    """Build and measure the compression variants; write the exports directory."""
    from pathlib import Path

    from components.compress.core import run_compress
    from components.config import CompressConfig
    from components.errors import step_errors
    from components.tags import Step
    from components.tracking import step_run

    with step_errors(Step.COMPRESS), step_run(parent_run_id, Step.COMPRESS, framework):
        config = CompressConfig(framework=framework, max_accuracy_drop=max_accuracy_drop,
                                pruning_sparsity=pruning_sparsity,
                                max_relative_change=max_relative_change)
        result = run_compress(config, Path(data.path), Path(model.path), Path(exports.path))
        exports.metadata.update({"preferred": result.preferred, "variant": result.variant,
                                 "size_ratio": result.size_ratio,
                                 f"int8_{result.metric}": result.int8_score})


compress_ops = framework_components(compress)
