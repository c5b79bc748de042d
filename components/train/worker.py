"""One training process: the body of the train step, single or one of N workers.

Run in-process for one worker, or as ``python -m components.train.worker`` by
the local launcher (whatever the framework adapter's ``local_launch`` starts:
torch's elastic launcher, one process per TF_CONFIG task) and by the cluster's
training operator.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
from dataclasses import asdict
from pathlib import Path

from components.config import TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.errors import configure_logging
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, FrameworkAdapter, ModelSpec, TrainContext
from components.processes import die_with_parent
from components.tracking import log_metrics_batch
from components.train.model import model_spec
from components.transform.fitted import FITTED_FILE, FittedTransform

log = logging.getLogger(__name__)
WORKER_MODULE = "components.train.worker"
HISTORY_FILE = "history.json"


def read_history(model_dir: Path) -> list[EpochMetrics]:
    """The per-epoch metrics the chief wrote beside the model."""
    return [EpochMetrics(**m) for m in json.loads((model_dir / HISTORY_FILE).read_text())]


def train_worker(config: TrainConfig, data_dir: Path, model_dir: Path, ctx: TrainContext,
                 run_id: str | None) -> list[EpochMetrics]:
    """Train this rank's share; the chief logs each epoch to ``run_id`` and saves the model."""
    meta = read_metadata(data_dir)
    train, val = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.VAL, meta)
    spec = model_spec(config, meta)
    adapter = get_adapter(config.framework)
    history: list[EpochMetrics] = []

    def on_epoch(m: EpochMetrics) -> None:
        history.append(m)
        if run_id:
            log_metrics_batch(m.as_metrics(), step=m.epoch, run_id=run_id)

    model = adapter.train(spec, train, val, config, ctx, on_epoch)
    if ctx.is_chief:
        save(adapter, model, spec, data_dir, model_dir)
        (model_dir / HISTORY_FILE).write_text(json.dumps([asdict(m) for m in history]))
    elif adapter.every_rank_saves:
        with tempfile.TemporaryDirectory() as tmp:
            save(adapter, model, spec, data_dir, Path(tmp))
    return history


def save(adapter: FrameworkAdapter, model: object, spec: ModelSpec, data_dir: Path,
         model_dir: Path) -> None:
    """The model, and the raw-input model (transform + network) in ``model_dir/raw`` when
    ``data_dir`` holds a fitted transform and the framework writes one."""
    adapter.save_model(model, spec, model_dir)
    fitted = data_dir / FITTED_FILE
    raw = adapter.raw_model(model_dir)
    if raw is not None and fitted.is_file():
        path = adapter.export_raw_model(model, FittedTransform.load(fitted), raw.path)
        log.info("raw-input model (transform + network) written to %s", path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of a launched worker process."""
    parser = argparse.ArgumentParser(description="One twinflow training worker.")
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--via-mlflow", action="store_true",
                        help="cluster job: data from, model to the MLflow run's artifacts")
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL)  # e.g. torch's launcher, SIGKILLed with its task
    configure_logging()
    config = TrainConfig.model_validate_json(args.config)
    ctx = get_adapter(config.framework).context_from_env(args.checkpoint_dir, config.resume)
    args.model.mkdir(parents=True, exist_ok=True)
    (args.model / f"worker-{ctx.rank}.pid").write_text(str(os.getpid()))
    data = args.data
    if args.via_mlflow:
        from components.train.exchange import download_input

        data = download_input(args.run_id, args.data)
    train_worker(config, data, args.model, ctx, args.run_id)
    if args.via_mlflow and ctx.is_chief:
        from components.train.exchange import upload_output

        upload_output(args.run_id, args.model)


if __name__ == "__main__":
    main()
