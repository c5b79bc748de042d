"""KFP wrapper of the evaluate step; its single output is the blessing verdict.

The verdict is the component's only parameter output: kfp 2.17's local runner
cannot resolve a dsl.If condition on a named output of a multi-output task.
"""

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.images import step_component


def evaluate(parent_run_id: str, framework: str, model_name: str, min_accuracy: float,
             tolerance: float, data: Input[Dataset], model: Input[Model],
             metrics: Output[Metrics], confusion: Output[ClassificationMetrics]) -> bool:
    """Score the model on the test split; return whether it is blessed."""
    import json
    from pathlib import Path

    from components.config import EvaluateConfig
    from components.errors import step_errors
    from components.evaluate.core import run_evaluate
    from components.tracking import log_metrics_batch, step_run

    with step_errors("evaluate"), step_run(parent_run_id, "evaluate", framework):
        config = EvaluateConfig(framework=framework, model_name=model_name,
                                min_accuracy=min_accuracy, tolerance=tolerance)
        result = run_evaluate(config, Path(data.path), Path(model.path))
        for key in ("test_accuracy", "test_f1_macro"):
            metrics.log_metric(key, result.metrics[key])
        Path(metrics.path).write_text(json.dumps(result.metrics), encoding="utf-8")
        headline = {f"{framework}_{k}": result.metrics[k] for k in ("test_accuracy",
                                                                   "test_f1_macro")}
        log_metrics_batch(headline, run_id=parent_run_id)  # shown on the parent run's page
        confusion.log_confusion_matrix(result.classes, result.confusion)
        return result.verdict.blessed
    raise AssertionError("unreachable")


evaluate_ops = {fw: step_component(evaluate, fw) for fw in ("torch", "tensorflow")}
