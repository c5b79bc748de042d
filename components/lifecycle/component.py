"""KFP wrappers of the run lifecycle: open the parent MLflow run, close it on exit."""

from kfp.dsl import PipelineTaskFinalStatus

from components.images import step_component


def start_run(run_key: str, client_key: str, experiment: str, framework: str, source: str,
              label: str, epochs: int, batch_size: int, learning_rate: float, seed: int) -> str:
    """Validate run-wide parameters and open the MLflow parent run; returns its id."""
    from components.data.sources import source_name
    from components.errors import step_errors
    from components.lifecycle.core import start

    with step_errors("start-run"):
        params = {"framework": framework, "source": source, "label": label,
                  "dataset": source_name(source), "epochs": str(epochs),
                  "batch_size": str(batch_size), "learning_rate": str(learning_rate),
                  "seed": str(seed)}
        return start(client_key or run_key, experiment, params)
    raise AssertionError("unreachable")


def finish_run(run_key: str, client_key: str, experiment: str,
               status: PipelineTaskFinalStatus) -> None:
    """Close the parent run with the pipeline's final state (runs even on failure)."""
    from components.errors import step_errors
    from components.lifecycle.core import finish

    with step_errors("finish-run"):
        finish(client_key or run_key, experiment, status.state, status.error_message or "")


start_run_op = step_component(start_run, "base")
finish_run_op = step_component(finish_run, "base")
