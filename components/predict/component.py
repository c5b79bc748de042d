"""KFP wrapper of the batch-scoring step (the one step of `twinflow predict`'s pipeline)."""

from kfp.dsl import Dataset, Output

from components.images import framework_components


def predict(model: str, data: str, output: str, keep: list, batch_rows: int, data_format: str,
            scored: Output[Dataset]) -> int:
    """Score ``data`` with registered ``model`` into ``output``; returns the row count."""
    from pathlib import Path

    from components.config import PredictConfig
    from components.errors import step_errors
    from components.predict.core import run_predict
    from components.predict.run import predict_run
    from components.tags import Step

    with step_errors(Step.PREDICT):
        config = PredictConfig(model=model, data=data, keep=keep, batch_rows=batch_rows,
                               format=data_format)
        with predict_run(config) as model_root:
            result = run_predict(config, model_root, Path(output))
        scored.metadata.update({"rows": result.rows, "model": model,
                                "path": str(result.output)})
        return result.rows
    raise AssertionError("unreachable")


predict_ops = framework_components(predict)
