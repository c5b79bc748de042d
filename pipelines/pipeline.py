"""The twinflow pipeline, defined once with the KFP DSL.

ingest -> transform -> [per framework: train -> evaluate -> compress -> push if
blessed], wrapped in an exit handler that closes the MLflow parent run whatever
happens. The framework parameter selects the branch: `torch`, `tensorflow` or
`both` (both tails on the same splits and seeds, then a compare step).
"""

from typing import Any

from kfp import dsl

from components.compare.component import compare_op
from components.compress.component import compress_ops
from components.evaluate.component import evaluate_ops
from components.ingest.component import ingest_op
from components.lifecycle.component import finish_run_op, start_run_op
from components.push.component import push_ops
from components.train.component import train_ops
from components.transform.component import transform_op

PIPELINE_NAME = "twinflow"


TRAIN_PARAMS = ("epochs", "batch_size", "learning_rate", "seed", "workers", "precision",
                "resume", "checkpoint_root", "gpus_per_worker", "cluster_options")


EVALUATE_PARAMS = ("model_name", "min_accuracy", "tolerance", "min_f1_macro", "min_improvement",
                   "slice_feature", "roc_class")


def _framework_tail(fw: str, parent: Any, data: Any, p: dict[str, Any]) -> list[Any]:
    """train -> evaluate -> compress -> push (only when blessed) for one framework.

    ``p`` maps pipeline parameter names to their channels (placeholders resolved
    at run time). Returns the tasks a comparison has to wait for.
    """
    train = train_ops[fw](parent_run_id=parent, framework=fw, data=data,
                          **{k: p[k] for k in TRAIN_PARAMS}).set_display_name(f"train-{fw}")
    model = train.outputs["model"]
    evaluate = evaluate_ops[fw](parent_run_id=parent, framework=fw, data=data, raw=p["raw"],
                                model=model, **{k: p[k] for k in EVALUATE_PARAMS}
                                ).set_display_name(f"evaluate-{fw}")
    compress = compress_ops[fw](parent_run_id=parent, framework=fw, data=data, model=model,
                                max_accuracy_drop=p["max_accuracy_drop"],
                                pruning_sparsity=p["pruning_sparsity"],
                                ).set_display_name(f"compress-{fw}")
    with dsl.If(evaluate.outputs["Output"] == True, name=f"blessed-{fw}"):  # noqa: E712
        push_ops[fw](parent_run_id=parent, framework=fw, model_name=p["model_name"],
                     namespace=p["namespace"], predictor=p["predictor"],
                     canary_percent=p["canary_percent"], data=data, model=model,
                     exports=compress.outputs["exports"],
                     metrics=evaluate.outputs["metrics"]).set_display_name(f"push-{fw}")
    return [evaluate, compress]


@dsl.pipeline(name=PIPELINE_NAME,
              description="Data to a served model, PyTorch or TensorFlow, tracked in MLflow.")
def twinflow_pipeline(
    framework: str = "torch",
    source: str = "sklearn:digits",
    label: str = "",
    epochs: int = 10,
    batch_size: int = 32,
    learning_rate: float = 0.001,
    seed: int = 42,
    workers: int = 1,
    precision: str = "fp32",
    resume: bool = False,
    checkpoint_root: str = "",
    gpus_per_worker: int = 0,
    cluster_options: str = "{}",
    ingest_options: str = "{}",
    transform_options: str = "{}",
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    model_name: str = "",
    min_accuracy: float = 0.5,
    tolerance: float = 0.0,
    min_f1_macro: float = 0.0,
    min_improvement: float = 0.0,
    slice_feature: str = "",
    roc_class: str = "",
    max_accuracy_drop: float = 0.005,
    pruning_sparsity: float = 0.5,
    predictor: str = "custom",
    canary_percent: int = 100,
    experiment: str = "twinflow",
    namespace: str = "default",
    prefer: str = "accuracy",
    run_key: str = "",
) -> None:
    """The whole pipeline; see the module docstring."""
    # The caller may name the run (`run_key`) to find its MLflow run; else the job id.
    job_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    finish = finish_run_op(run_key=job_id, client_key=run_key, experiment=experiment)
    with dsl.ExitHandler(finish, name="mlflow-run"):
        start = start_run_op(run_key=job_id, client_key=run_key, experiment=experiment,
                             framework=framework, source=source, label=label, epochs=epochs,
                             batch_size=batch_size, learning_rate=learning_rate, seed=seed)
        parent = start.output
        ingest = ingest_op(parent_run_id=parent, source=source, label=label,
                           val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           ingest_options=ingest_options)
        transform = transform_op(parent_run_id=parent, dataset=ingest.outputs["dataset"],
                                 transform_options=transform_options)
        data = transform.outputs["transformed"]
        p = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                 workers=workers, precision=precision, resume=resume,
                 checkpoint_root=checkpoint_root, gpus_per_worker=gpus_per_worker,
                 cluster_options=cluster_options, model_name=model_name,
                 min_accuracy=min_accuracy, tolerance=tolerance, namespace=namespace,
                 min_f1_macro=min_f1_macro, min_improvement=min_improvement,
                 slice_feature=slice_feature, roc_class=roc_class,
                 max_accuracy_drop=max_accuracy_drop, pruning_sparsity=pruning_sparsity,
                 predictor=predictor, canary_percent=canary_percent,
                 raw=ingest.outputs["dataset"])
        with dsl.If(framework == "torch", name="torch-only"):
            _framework_tail("torch", parent, data, p)
        with dsl.If(framework == "tensorflow", name="tensorflow-only"):
            _framework_tail("tensorflow", parent, data, p)
        with dsl.If(framework == "both", name="both-frameworks"):
            # Both tails in one branch so that compare may wait for them (KFP forbids
            # depending on tasks inside another dsl.If).
            done = [t for fw in ("torch", "tensorflow")
                    for t in _framework_tail(fw, parent, data, p)]
            compare_op(parent_run_id=parent, prefer=prefer).after(*done)
