"""The twinflow pipeline, defined once with the KFP DSL.

ingest -> transform -> [per framework: train -> evaluate -> compress -> push if
blessed], wrapped in an exit handler that closes the MLflow parent run whatever
happens. The framework parameter selects the branch: `torch`, `tensorflow` or
`both` (both tails on the same splits and seeds, then a compare step).
"""

import inspect
from typing import Any

from kfp import dsl

from components.compare.component import compare_op
from components.compress.component import compress_ops
from components.config import BOTH, frameworks_of
from components.evaluate.component import evaluate_ops
from components.ingest.component import ingest_op
from components.lifecycle.component import finish_run_op, start_run_op
from components.push.component import push_ops
from components.train.component import train_ops
from components.transform.component import transform_op
from pipelines.params import PipelineParams, pipeline_signature

PIPELINE_NAME = "twinflow"


def _step(op: Any, p: PipelineParams, **explicit: Any) -> Any:
    """Call ``op`` with every pipeline parameter it declares, plus ``explicit``.

    The step's parameter list (its component's inputs) says what it takes, so a
    new parameter needs no wiring here; ``explicit`` wins over a pipeline
    parameter of the same name (e.g. one framework of ``both``).
    """
    declared = op.component_spec.inputs or {}
    shared = {name: getattr(p, name) for name in declared
              if name in PipelineParams.model_fields and name not in explicit}
    return op(**shared, **explicit)


def _framework_tail(fw: str, parent: Any, data: Any, raw: Any, p: PipelineParams) -> list[Any]:
    """train -> evaluate -> compress -> push (only when blessed) for one framework.

    ``p`` holds the pipeline parameters' channels (placeholders resolved at run
    time). Returns the tasks a comparison has to wait for.
    """
    common = {"parent_run_id": parent, "framework": fw, "data": data}
    train = _step(train_ops[fw], p, **common).set_display_name(f"train-{fw}")
    model = train.outputs["model"]
    evaluate = _step(evaluate_ops[fw], p, **common, raw=raw, model=model
                     ).set_display_name(f"evaluate-{fw}")
    compress = _step(compress_ops[fw], p, **common, model=model
                     ).set_display_name(f"compress-{fw}")
    with dsl.If(evaluate.outputs["Output"] == True, name=f"blessed-{fw}"):  # noqa: E712
        _step(push_ops[fw], p, **common, raw=raw, model=model, exports=compress.outputs["exports"],
              metrics=evaluate.outputs["metrics"]).set_display_name(f"push-{fw}")
    return [evaluate, compress]


def _pipeline(*args: Any, **kwargs: Any) -> None:
    """The whole pipeline; see the module docstring."""
    # KFP passes one channel per parameter of the signature below, by position.
    channels = inspect.signature(_pipeline).bind(*args, **kwargs).arguments
    p = PipelineParams.model_construct(**channels)  # typed access to the channels
    # The caller may name the run (`run_key`) to find its MLflow run; else the job id.
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    finish = _step(finish_run_op, p, run_key=job_id, client_key=p.run_key)
    with dsl.ExitHandler(finish, name="mlflow-run"):
        start = _step(start_run_op, p, run_key=job_id, client_key=p.run_key)
        parent = start.output
        ingest = _step(ingest_op, p, parent_run_id=parent)
        raw = ingest.outputs["dataset"]
        transform = _step(transform_op, p, parent_run_id=parent, dataset=raw)
        data = transform.outputs["transformed"]
        frameworks = frameworks_of(BOTH)  # the registry's, in its order
        for fw in frameworks:
            with dsl.If(p.framework == fw, name=f"{fw}-only"):
                _framework_tail(fw, parent, data, raw, p)
        with dsl.If(p.framework == BOTH, name="both-frameworks"):
            # Every tail in one branch so that compare may wait for them (KFP forbids
            # depending on tasks inside another dsl.If).
            done = [t for fw in frameworks for t in _framework_tail(fw, parent, data, raw, p)]
            _step(compare_op, p, parent_run_id=parent).after(*done)


_pipeline.__signature__ = pipeline_signature()  # type: ignore[attr-defined]
twinflow_pipeline = dsl.pipeline(
    name=PIPELINE_NAME, description="Data to a served model, PyTorch or TensorFlow, tracked in "
                                    "MLflow.")(_pipeline)
