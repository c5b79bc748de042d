"""KFP wrapper of the transform step."""

from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import step_component


def transform(parent_run_id: str, dataset: Input[Dataset], transformed: Output[Dataset],
              transform_params: Output[Artifact], transform_options: str = "{}") -> None:
    """Fit the analyzers on the train split (Beam) and apply them to every split.

    ``transform_options`` is TransformConfig as JSON: defaults per kind
    (``numeric``, ``categorical``), per-feature overrides (``features``), runner.
    """
    import json
    from pathlib import Path

    from components.errors import ConfigError, step_errors
    from components.tags import Step
    from components.tracking import step_run
    from components.transform.core import run_transform
    from components.transform.fitted import TransformConfig

    with step_errors(Step.TRANSFORM), step_run(parent_run_id, Step.TRANSFORM):
        try:
            config = TransformConfig.model_validate(json.loads(transform_options or "{}"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"transform_options is not JSON: {err}") from None
        run_transform(Path(dataset.path), Path(transformed.path), Path(transform_params.path),
                      config)


transform_op = step_component(transform, "base")
