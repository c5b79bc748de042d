"""The study's plots as images on the tune run: optimisation history, parallel
coordinates, parameter importances (Optuna's own matplotlib visualisations)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import mlflow
import optuna

log = logging.getLogger(__name__)
PLOT_DIR = "study"


def _plots() -> dict[str, Callable[[optuna.Study], Any]]:
    from optuna.visualization import matplotlib as vis

    return {"optimization_history": vis.plot_optimization_history,
            "parallel_coordinate": vis.plot_parallel_coordinate,
            "param_importances": vis.plot_param_importances}


def warm_plots() -> None:
    """Import what the plots need (matplotlib, Optuna's visualisations, scikit-learn for
    fANOVA importances: about 3 s cold) ahead of time, e.g. in a thread while the
    trials train, so the end of a study does not wait for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    from optuna.importance import FanovaImportanceEvaluator  # noqa: F401
    from optuna.visualization import matplotlib as vis  # noqa: F401


def log_study_plots(study: optuna.Study) -> list[str]:
    """Log each plot the study can draw; the names logged. Importances need two finished
    trials and a parameter that varied, so small studies log fewer plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    logged = []
    for name, plot in _plots().items():
        if name == "param_importances" and len(complete) < 2:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks these experimental
                axes = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. no parameter varied
            log.info("study plot %s skipped: %s", name, err)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        mlflow.log_figure(figure, f"{PLOT_DIR}/{name}.png")
        plt.close(figure)
        logged.append(name)
    return logged
