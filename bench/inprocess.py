"""Baseline for the orchestration benchmark: the pipeline's step functions called
directly, one after another, in this one process (imports paid once).

Usage: python bench/inprocess.py FRAMEWORK WORKDIR   (prints the wall seconds)
"""

from __future__ import annotations

import sys
import time

START = time.perf_counter()

import os  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402


def main(framework: str, workdir: Path) -> float:
    """Run every step function in order with the same MLflow runs the pipeline makes."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    from components.compress.core import run_compress
    from components.config import (
        CompressConfig,
        EvaluateConfig,
        IngestConfig,
        PushConfig,
        TrainConfig,
    )
    from components.evaluate.core import run_evaluate
    from components.ingest.core import run_ingest
    from components.lifecycle.core import finish, start
    from components.push.core import run_push
    from components.tracking import step_run
    from components.train.core import run_train
    from components.transform.core import run_transform

    key = f"inprocess-{uuid.uuid4().hex[:8]}"
    parent = start(key, "twinflow", {"framework": framework, "dataset": "digits"})
    d = workdir / "artifacts"
    with step_run(parent, "ingest"):
        run_ingest(IngestConfig(), d / "raw")
    with step_run(parent, "transform"):
        run_transform(d / "raw", d / "data", d / "transform.json")
    with step_run(parent, "train", framework):
        run_train(TrainConfig(framework=framework, show_progress=False), d / "data", d / "model")
    with step_run(parent, "evaluate", framework):
        result = run_evaluate(EvaluateConfig(framework=framework), d / "data", d / "model",
                              d / "raw")
    with step_run(parent, "compress", framework):
        run_compress(CompressConfig(framework=framework), d / "data", d / "model", d / "int8")
    if result.verdict.blessed:
        with step_run(parent, "push", framework):
            run_push(PushConfig(framework=framework), d / "data", d / "model", d / "int8",
                     result.metrics, d / "isvc.yaml")
    finish(key, "twinflow", "SUCCEEDED")
    return time.perf_counter() - START


if __name__ == "__main__":
    print(f"{main(sys.argv[1], Path(sys.argv[2])):.3f}")
