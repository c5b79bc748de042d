"""KFP wrapper of the train step, one component per framework image."""

from kfp.dsl import Dataset, Input, Model, Output

from components.images import framework_components


def train(parent_run_id: str, framework: str, epochs: int, batch_size: int,
          learning_rate: float, seed: int, workers: int, precision: str, resume: bool,
          checkpoint_root: str, gpus_per_worker: int, cluster_options: str, model_ref: str,
          model_options: str, model_code: str, binary_logits: int, regression_loss: str,
          early_stopping_patience: int,
          data: Input[Dataset],
          model: Output[Model], tuned: str = "") -> None:
    """Train ``framework``'s network on the transformed data.

    Checkpoints go to ``checkpoint_root/<framework>`` when given (a place that
    outlives the run, so that ``resume`` can find them), else into the model. ``tuned``
    is the tune steps' winner (JSON; '' in the untuned pipeline): its parameters
    override the run's, and the model records which search chose them.
    """
    from pathlib import Path

    from components.config import train_config_from
    from components.errors import step_errors
    from components.tags import Step
    from components.tracking import step_run
    from components.train.core import run_train
    from components.tune.result import parse_tuned
    from components.tune.space import apply_params

    with step_errors(Step.TRAIN), step_run(parent_run_id, Step.TRAIN, framework):
        config = train_config_from(locals())
        winner = parse_tuned(tuned)
        config = apply_params(config, winner.params) if winner else config
        ckpt = Path(checkpoint_root) / framework if checkpoint_root else None
        result = run_train(config, Path(data.path), Path(model.path), ckpt)
        if winner:
            winner.record(Path(model.path))
        last = result.last_epoch
        model.metadata.update({"framework": framework, f"val_{last.metric}": last.val_score})


train_ops = framework_components(train)
