"""KFP wrapper of the train step, one component per framework image."""

from kfp.dsl import Dataset, Input, Model, Output

from components.images import framework_components


def train(parent_run_id: str, framework: str, epochs: int, batch_size: int,
          learning_rate: float, seed: int, workers: int, precision: str, resume: bool,
          checkpoint_root: str, gpus_per_worker: int, cluster_options: str, model_ref: str,
          model_options: str, model_code: str, binary_logits: int, regression_loss: str,
          early_stopping_patience: int,
          data: Input[Dataset],
          model: Output[Model]) -> None:
    """Train ``framework``'s network on the transformed data.

    Checkpoints go to ``checkpoint_root/<framework>`` when given (a place that
    outlives the run, so that ``resume`` can find them), else into the model.
    """
    from pathlib import Path

    from components.config import ClusterOptions, TrainConfig
    from components.errors import step_errors
    from components.tags import Step
    from components.tracking import step_run
    from components.train.core import run_train

    with step_errors(Step.TRAIN), step_run(parent_run_id, Step.TRAIN, framework):
        config = TrainConfig(framework=framework, epochs=epochs, batch_size=batch_size,
                             learning_rate=learning_rate, seed=seed, workers=workers,
                             precision=precision, resume=resume,
                             gpus_per_worker=gpus_per_worker, model_ref=model_ref,
                             model_options=model_options, model_code=model_code,
                             binary_logits=binary_logits, regression_loss=regression_loss,
                             early_stopping_patience=early_stopping_patience,
                             cluster=ClusterOptions.model_validate_json(cluster_options or "{}"))
        ckpt = Path(checkpoint_root) / framework if checkpoint_root else None
        result = run_train(config, Path(data.path), Path(model.path), ckpt)
        last = result.last_epoch
        model.metadata.update({"framework": framework, f"val_{last.metric}": last.val_score})


train_ops = framework_components(train)
