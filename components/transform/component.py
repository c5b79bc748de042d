"""KFP wrapper of the transform step."""

from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import step_component


def transform(parent_run_id: str, dataset: Input[Dataset], transformed: Output[Dataset],
              transform_params: Output[Artifact]) -> None:
    """Fit normalisation on the train split and apply it to every split."""
    from pathlib import Path

    from components.errors import step_errors
    from components.tracking import step_run
    from components.transform.core import run_transform

    with step_errors("transform"), step_run(parent_run_id, "transform"):
        run_transform(Path(dataset.path), Path(transformed.path), Path(transform_params.path))


transform_op = step_component(transform, "base")
