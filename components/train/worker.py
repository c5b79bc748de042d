"""One training process: the body of the train step, single or one of N workers.

Run in-process for one worker, or as ``python -m components.train.worker`` by
the local launcher (torch's elastic launcher for PyTorch, one process per
TF_CONFIG task for TensorFlow) and by the cluster's training operator.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from components.config import Framework, TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.errors import configure_logging
from components.frameworks import get_adapter
from components.frameworks.base import EpochMetrics, ModelSpec, TrainContext
from components.tracking import log_metrics_batch
from components.transform.serving import export_raw_for_model_dir

log = logging.getLogger(__name__)
HISTORY_FILE = "history.json"


def train_worker(config: TrainConfig, data_dir: Path, model_dir: Path, ctx: TrainContext,
                 run_id: str | None) -> list[EpochMetrics]:
    """Train this rank's share; the chief logs each epoch to ``run_id`` and saves the model."""
    meta = read_metadata(data_dir)
    train, val = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.VAL, meta)
    spec = ModelSpec.for_dataset(meta)
    adapter = get_adapter(config.framework)
    history: list[EpochMetrics] = []

    def on_epoch(m: EpochMetrics) -> None:
        history.append(m)
        if run_id:
            log_metrics_batch(m.as_metrics(), step=m.epoch, run_id=run_id)

    model = adapter.train(spec, train, val, config, ctx, on_epoch)
    if ctx.is_chief:
        adapter.save_model(model, spec, model_dir)
        export_raw_for_model_dir(config.framework, model, data_dir, model_dir)
        (model_dir / HISTORY_FILE).write_text(json.dumps([m.__dict__ for m in history]))
    elif config.framework is Framework.TENSORFLOW:
        # Under MultiWorkerMirroredStrategy every worker must take part in saving.
        with tempfile.TemporaryDirectory() as tmp:
            adapter.save_model(model, spec, Path(tmp))
            export_raw_for_model_dir(config.framework, model, data_dir, Path(tmp))
    return history


def context_from_env(framework: Framework, checkpoint_dir: Path | None,
                     resume: bool) -> TrainContext:
    """Rank and world size as the launcher set them (torchrun env or TF_CONFIG)."""
    if framework is Framework.TORCH:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    else:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        world = len(tf_config.get("cluster", {}).get("worker", [])) or 1
        rank = int(tf_config.get("task", {}).get("index", 0))
        local = rank
    return TrainContext(rank, world, local, checkpoint_dir, resume)


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
    configure_logging()
    config = TrainConfig.model_validate_json(args.config)
    ctx = context_from_env(config.framework, args.checkpoint_dir, config.resume)
    args.model.mkdir(parents=True, exist_ok=True)
    (args.model / f"worker-{ctx.rank}.pid").write_text(str(os.getpid()))
    data = args.data
    if args.via_mlflow:
        from components.train.cluster import download_input

        data = download_input(args.run_id, args.data)
    train_worker(config, data, args.model, ctx, args.run_id)
    if args.via_mlflow and ctx.is_chief:
        from components.train.cluster import upload_output

        upload_output(args.run_id, args.model)


if __name__ == "__main__":
    main()
