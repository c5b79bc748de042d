"""KFP wrapper of the push step (the pipeline runs it only for a blessed model)."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import framework_components


def push(parent_run_id: str, framework: str, model_name: str, namespace: str,
         predictor: str, canary_percent: int, raw: Input[Dataset], data: Input[Dataset],
         model: Input[Model],
         exports: Input[Model], metrics: Input[Metrics], manifest: Output[Artifact]) -> str:
    """Register the model, move `champion`, write the InferenceService; returns the version."""
    import json
    from pathlib import Path

    from components.config import PushConfig
    from components.errors import step_errors
    from components.push.core import run_push
    from components.tags import Step
    from components.tracking import step_run

    with step_errors(Step.PUSH), step_run(parent_run_id, Step.PUSH, framework):
        config = PushConfig(framework=framework, model_name=model_name, namespace=namespace,
                            predictor=predictor, canary_percent=canary_percent)
        values = json.loads(Path(metrics.path).read_text(encoding="utf-8"))
        result = run_push(config, Path(data.path), Path(model.path), Path(exports.path),
                          values, Path(manifest.path), raw_dir=Path(raw.path))
        manifest.metadata.update({"model_name": result.model_name, "version": result.version})
        return result.version
    raise AssertionError("unreachable")


push_ops = framework_components(push)
