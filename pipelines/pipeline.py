"""The twinflow pipeline, defined once with the KFP DSL.

ingest -> transform -> [per framework: train -> evaluate -> compress -> push if
blessed], wrapped in an exit handler that closes the MLflow parent run whatever
happens. The framework parameter selects the branch: `torch`, `tensorflow` or
`both` (both tails on the same splits and seeds, then a compare step).

The tuned pipeline (``twinflow run --tune search.yaml``) is the same with a search
before each train: tune-study plans the trials' batches, ``dsl.ParallelFor`` runs
one tune-trials task per batch (pods on a cluster; processes within one locally)
and tune-best hands the winner to train. A separate pipeline rather than a
``dsl.If``: train consumes the winner, and a task cannot read an output from
inside a condition.
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
from components.tune.component import tune_best_ops, tune_study_ops, tune_trials_ops
from pipelines.params import PipelineParams, pipeline_signature

PIPELINE_NAME = "twinflow"
TUNED_PIPELINE_NAME = "twinflow-tuned"


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


def _framework_tail(fw: str, parent: Any, data: Any, raw: Any, p: PipelineParams,
                    tuned: bool) -> list[Any]:
    """[search ->] train -> evaluate -> compress -> push (only when blessed) for one
    framework.

    ``p`` holds the pipeline parameters' channels (placeholders resolved at run
    time). Returns the tasks a comparison has to wait for.
    """
    common = {"parent_run_id": parent, "framework": fw, "data": data}
    winner = {"tuned": _search(fw, parent, data, p)} if tuned else {}
    train = _step(train_ops[fw], p, **common, **winner).set_display_name(f"train-{fw}")
    model = train.outputs["model"]
    evaluate = _step(evaluate_ops[fw], p, **common, raw=raw, model=model
                     ).set_display_name(f"evaluate-{fw}")
    compress = _step(compress_ops[fw], p, **common, model=model
                     ).set_display_name(f"compress-{fw}")
    with dsl.If(evaluate.outputs["Output"] == True, name=f"blessed-{fw}"):  # noqa: E712
        _step(push_ops[fw], p, **common, raw=raw, model=model, exports=compress.outputs["exports"],
              metrics=evaluate.outputs["metrics"]).set_display_name(f"push-{fw}")
    return [evaluate, compress]


def _search(fw: str, parent: Any, data: Any, p: PipelineParams) -> Any:
    """tune-study -> one tune-trials task per batch -> tune-best; the winner's channel."""
    study = _step(tune_study_ops[fw], p, parent_run_id=parent, framework=fw, data=data
                  ).set_display_name(f"tune-study-{fw}")
    with dsl.ParallelFor(study.output, name=f"trials-{fw}") as batch:
        trials = tune_trials_ops[fw](batch=batch, data=data).set_display_name(f"tune-trials-{fw}")
    best = tune_best_ops[fw](batches=dsl.Collected(trials.output), data=data
                             ).set_display_name(f"tune-best-{fw}")
    return best.output


def _build(p: PipelineParams, tuned: bool) -> None:
    """The whole pipeline's graph; see the module docstring."""
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
                _framework_tail(fw, parent, data, raw, p, tuned)
        with dsl.If(p.framework == BOTH, name="both-frameworks"):
            # Every tail in one branch so that compare may wait for them (KFP forbids
            # depending on tasks inside another dsl.If).
            done = [t for fw in frameworks for t in _framework_tail(fw, parent, data, raw, p,
                                                                    tuned)]
            _step(compare_op, p, parent_run_id=parent).after(*done)


def _channels(func: Any, args: Any, kwargs: Any) -> PipelineParams:
    """KFP passes one channel per parameter of the signature, by position: typed access."""
    channels = inspect.signature(func).bind(*args, **kwargs).arguments
    return PipelineParams.model_construct(**channels)


def _pipeline(*args: Any, **kwargs: Any) -> None:
    """The pipeline; see the module docstring."""
    _build(_channels(_pipeline, args, kwargs), tuned=False)


def _tuned_pipeline(*args: Any, **kwargs: Any) -> None:
    """The pipeline with a search before each train; see the module docstring."""
    _build(_channels(_tuned_pipeline, args, kwargs), tuned=True)


_pipeline.__signature__ = pipeline_signature()  # type: ignore[attr-defined]
_tuned_pipeline.__signature__ = pipeline_signature()  # type: ignore[attr-defined]
twinflow_pipeline = dsl.pipeline(
    name=PIPELINE_NAME, description="Data to a served model, PyTorch or TensorFlow, tracked in "
                                    "MLflow.")(_pipeline)
twinflow_tuned_pipeline = dsl.pipeline(
    name=TUNED_PIPELINE_NAME, description="Data to a served model, its training parameters "
                                          "searched first (Optuna), tracked in MLflow."
)(_tuned_pipeline)


def pipeline_for(params: PipelineParams) -> Any:
    """The pipeline whose shape ``params`` ask for: tuned when a search is given."""
    return twinflow_tuned_pipeline if params.tune_space else twinflow_pipeline
