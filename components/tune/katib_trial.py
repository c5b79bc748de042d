"""One Katib trial: a real fit with the values Katib chose, reported the way Katib reads it.

``python -m components.tune.katib_trial --data DIR --base TRAIN_CONFIG_JSON --space JSON
--param NAME=VALUE ... [--parent-run-id ID] [--trial-name NAME]`` is the command of the
trial Job that ``pipelines/katib.py`` writes into a Katib Experiment. It

- casts every ``--param`` by the search space (an int is an int, a categorical value
  is the choice whose text it is: see :func:`choice_text`), applies the values to the
  base training config with :func:`~components.tune.space.apply_params` and trains on
  the train split, scored on the validation split, as an Optuna trial does;
- prints one line per epoch on stdout, ``<RFC 3339 time> epoch=1 loss=0.41 ...
  val_accuracy=0.9712 ...``: the ``<metric>=<value>`` pairs that Katib's StdOut metrics
  collector finds with its default filter (no exponent: values are written positionally),
  led by a timestamp, which Katib's early stopping needs to order the reports. Nothing
  else is written to stdout (logs go to stderr), so no log line can pose as a metric;
- logs the trial as an MLflow run (nested under ``--parent-run-id`` when given) with its
  parameters and per-epoch metrics, the same names and values as the printed ones.

``--data`` is a dataset directory or an MLflow artifact URI (``runs:/<run>/<path>``,
e.g. what ``components.train.exchange.publish_input`` logged), downloaded first: a
trial pod sees no local artifact paths. A SIGTERM (how Katib's early stopping ends a
trial) closes the run FINISHED with ``twinflow.tune_state=pruned`` and exits 143.
Bad input (an unknown or missing ``--param``, a value outside the space) is one line
``twinflow: error: katib trial: ...`` on stderr and exit code 1, before any training.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from pydantic import ValidationError

from components.config import TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.errors import (
    ConfigError,
    DataError,
    TwinflowError,
    describe_validation_error,
    report_error,
)
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, TrainContext
from components.settings import get_settings
from components.tags import (
    PIPELINE_ROOT_TAG,
    TUNE_COMPLETE,
    TUNE_PRUNED,
    TUNE_STATE_TAG,
    TUNE_TRIAL_TAG,
)
from components.tracking import configure, experiment_id, log_metrics_batch
from components.train.model import CHECK_ROWS, check_model, model_spec
from components.tune.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    apply_params,
    parse_space,
)

log = logging.getLogger(__name__)
MODULE = "components.tune.katib_trial"
STEP = "katib trial"
SIGTERM_EXIT = 128 + signal.SIGTERM
# A value this close outside a range is the range's end: Katib's log-uniform sampler
# computes exp(log(high)), which can land one ulp above ``high``.
RANGE_TOLERANCE = 1e-9


class TrialStopped(BaseException):
    """SIGTERM arrived: Katib's early stopping (or the Job's deletion) ends the trial.

    A BaseException, as KeyboardInterrupt is: no ``except Exception`` in the trainer or
    in MLflow's client may swallow it."""


def choice_text(value: str | int | float | bool) -> str:
    """How a categorical choice travels as text (Katib's values are strings):
    a string as is, a boolean as ``true``/``false``, a number as Python writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def parse_value(name: str, spec: FloatParam | IntParam | CategoricalParam, text: str) -> Any:
    """``text`` as the type ``spec`` declares, inside its range or among its choices;
    ConfigError naming the parameter otherwise."""
    if isinstance(spec, CategoricalParam):
        texts = {choice_text(c): c for c in spec.choices}
        if text not in texts:
            raise ConfigError(f"--param {name}={text}: not one of the choices "
                              f"{', '.join(texts)}")
        return texts[text]
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"--param {name}={text}: not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"--param {name}={text}: not a finite number")
    slack = RANGE_TOLERANCE * max(1.0, abs(spec.low), abs(spec.high))
    if not spec.low - slack <= number <= spec.high + slack:
        raise ConfigError(f"--param {name}={text}: outside the space's range "
                          f"[{spec.low}, {spec.high}]")
    number = float(min(max(number, spec.low), spec.high))
    if isinstance(spec, IntParam):
        if not number.is_integer():
            raise ConfigError(f"--param {name}={text}: not an integer")
        return int(number)
    return number


def parse_params(space: SearchSpace, pairs: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs, one for every parameter of ``space`` and nothing else."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {pair}: expected NAME=VALUE")
        if name not in space.params:
            raise ConfigError(f"--param {name}: unknown parameter; the search space has "
                              f"{', '.join(space.params)}")
        if name in values:
            raise ConfigError(f"--param {name}: given twice")
        values[name] = parse_value(name, space.params[name], text)
    missing = [n for n in space.params if n not in values]
    if missing:
        raise ConfigError(f"missing --param for {', '.join(missing)}")
    return values


def format_metric(value: float) -> str:
    """``value`` written so that Katib's default filter reads all of it: positional
    (``0.00001``, never ``1e-05``), the shortest text that parses back to the same float."""
    return np.format_float_positional(float(value), unique=True, trim="-")


def metric_line(m: EpochMetrics, now: datetime | None = None) -> str:
    """One epoch's report: ``<RFC 3339 time> epoch=N name=value ...`` (non-finite
    values left out: the filter cannot read ``nan``, and Katib would take a prefix)."""
    stamp = (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    pairs = [f"epoch={m.epoch}"]
    for name, value in m.as_metrics().items():
        if math.isfinite(value):
            pairs.append(f"{name}={format_metric(value)}")
        else:
            log.warning("epoch %d: %s is %s; not reported to Katib", m.epoch, name, value)
    return f"{stamp} {' '.join(pairs)}"


def resolve_data(data: str, scratch: Path) -> Path:
    """A dataset directory: ``data`` itself, or the MLflow artifacts it names, downloaded."""
    if "://" not in data and not data.startswith("runs:/"):
        path = Path(data)
        if not path.is_dir():
            raise DataError(f"--data {data}: not a directory")
        return path
    try:
        got = mlflow.artifacts.download_artifacts(artifact_uri=data, dst_path=str(scratch))
    except Exception as err:  # MLflow raises several kinds for a bad or missing URI
        raise DataError(f"--data {data}: cannot download: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from None
    return Path(got)


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM raises :class:`TrialStopped` in the main thread while the body runs."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise TrialStopped(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_trial(space: SearchSpace, base: TrainConfig, params: dict[str, Any], data_dir: Path,
              parent_run_id: str = "", trial_name: str = "",
              out: TextIO | None = None) -> dict[str, float]:
    """Train once with ``params`` applied to ``base``; the last epoch's metrics.

    Each epoch's metrics go to MLflow (one batch per epoch) and, as a Katib metric line,
    to ``out`` (default: stdout), flushed at once so that early stopping sees them live.
    """
    stream = out or sys.stdout
    config = apply_params(base, params).model_copy(
        update={"workers": 1, "show_progress": False, "resume": False})
    meta = read_metadata(data_dir)
    metric, _ = space.resolved_objective(meta.task.value)  # ConfigError: not this task's
    adapter = get_adapter(config.framework)
    train, val = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.VAL, meta)
    spec = model_spec(config, meta)
    check_model(adapter, spec, train.x[:CHECK_ROWS], config.seed)
    tags = {TUNE_TRIAL_TAG: trial_name or "katib"}
    if parent_run_id:  # the tune run's parent (the pipeline run) closes a crashed trial
        above = MlflowClient().get_run(parent_run_id)
        experiment = above.info.experiment_id
        tags[PIPELINE_ROOT_TAG] = above.data.tags.get(MLFLOW_PARENT_RUN_ID, parent_run_id)
    else:
        experiment = experiment_id(get_settings().experiment)
    last: dict[str, float] = {}
    epochs: list[int] = []
    stopped = False
    with mlflow.start_run(run_name=trial_name or None, experiment_id=experiment,
                          parent_run_id=parent_run_id or None, nested=bool(parent_run_id),
                          tags=tags) as run:
        mlflow.log_params(params)

        def on_epoch(m: EpochMetrics) -> None:
            logged = m.as_metrics()
            log_metrics_batch(logged, step=m.epoch)
            print(metric_line(m), file=stream, flush=True)
            last.update(logged)
            epochs.append(m.epoch)

        try:
            with _sigterm_stops():
                adapter.train(spec, train, val, config, TrainContext(), on_epoch)
        except TrialStopped:  # a stopped trial's run is FINISHED (pruned), not FAILED
            stopped = True
        mlflow.set_tag(TUNE_STATE_TAG, TUNE_PRUNED if stopped else TUNE_COMPLETE)
    if stopped:
        log.info("trial %s stopped early (SIGTERM) after %d epochs", run.info.run_id,
                 len(epochs))
        raise TrialStopped(f"after {len(epochs)} epochs")
    log.info("trial %s complete: %s %s", run.info.run_id, metric, last.get(metric))
    return last


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="One twinflow trial of a Katib Experiment.")
    parser.add_argument("--data", required=True,
                        help="dataset directory, or an MLflow artifact URI of one")
    parser.add_argument("--base", required=True, help="the base TrainConfig as JSON")
    parser.add_argument("--space", required=True, help="the SearchSpace as JSON")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a value of the space's parameter NAME (repeat for each)")
    parser.add_argument("--parent-run-id", default="", help="MLflow run to nest the trial under")
    parser.add_argument("--trial-name", default="", help="the Katib trial's name (run name)")
    return parser


def _configure_logging() -> None:
    """Log records on stderr: stdout carries the metric lines only."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("alembic", "mlflow.store.db.utils", "urllib3", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one trial; 0 on success, 1 on bad input, 143 when stopped by SIGTERM."""
    args = _parser().parse_args(argv)
    _configure_logging()
    try:
        space = parse_space(args.space, "--space")
        params = parse_params(space, args.param)
        base = TrainConfig.model_validate_json(args.base)
        configure()
        with tempfile.TemporaryDirectory(prefix="katib-trial-") as scratch:
            run_trial(space, base, params, resolve_data(args.data, Path(scratch)),
                      args.parent_run_id, args.trial_name)
    except TrialStopped:
        return SIGTERM_EXIT
    except TwinflowError as err:
        report_error(f"{STEP}: {err}")
        return 1
    except ValidationError as err:
        report_error(f"{STEP}: {describe_validation_error(err, 'config')}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
