"""KFP wrappers of the tune steps, one component per framework image.

kfp's local runner cannot branch on a named output of a multi-output task, so each
step has a single parameter output: the batches (a list of JSON) or the winner (JSON).
"""

from kfp.dsl import Dataset, Input

from components.images import framework_components


def tune_study(parent_run_id: str, framework: str, epochs: int, batch_size: int,
               learning_rate: float, seed: int, precision: str, model_ref: str,
               model_options: str, model_code: str, binary_logits: int, regression_loss: str,
               early_stopping_patience: int, tune_space: str, tune_trials: int,
               tune_parallel: int, tune_tasks: int, tune_storage: str,
               data: Input[Dataset]) -> list:
    """Validate the search, open the study; one JSON batch per trial task."""
    from pathlib import Path

    from components.config import train_config_from
    from components.errors import step_errors
    from components.tags import Step
    from components.tune.steps import start_tune

    with step_errors(Step.TUNE):
        base = train_config_from(locals())
        batches = start_tune(parent_run_id, base, tune_space, Path(data.path), tune_storage,
                             tune_trials, tune_parallel, tune_tasks)
        return [b.model_dump_json() for b in batches]
    raise AssertionError("unreachable")


def tune_trials(batch: str, data: Input[Dataset]) -> str:
    """Run one batch of the study's trials (shared storage; many tasks at once); the
    batch again, for tune-best to collect (fan-in over the loop)."""
    from pathlib import Path

    from components.errors import step_errors
    from components.tags import Step
    from components.tune.result import TuneBatch
    from components.tune.steps import run_tune_batch

    with step_errors(Step.TUNE):
        run_tune_batch(TuneBatch.model_validate_json(batch), Path(data.path))
        return batch
    raise AssertionError("unreachable")


def tune_best(batches: list, data: Input[Dataset]) -> str:
    """Close the study: plots, the winner on the tune run; the winner as JSON."""
    from pathlib import Path

    from components.errors import step_errors
    from components.tags import Step
    from components.tune.result import TuneBatch
    from components.tune.steps import finish_tune

    with step_errors(Step.TUNE):
        plans = [TuneBatch.model_validate_json(b) for b in batches]
        return finish_tune(plans, Path(data.path)).model_dump_json()
    raise AssertionError("unreachable")


tune_study_ops = framework_components(tune_study)
tune_trials_ops = framework_components(tune_trials)
tune_best_ops = framework_components(tune_best)
