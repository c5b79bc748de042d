"""Issue 4 figures, each against a baseline measured in the same run:

1. Throughput (samples/s) of twinflow's trainer against a plain hand-written
   loop of the same model on the same data (DataLoader loop for PyTorch,
   `model.fit` for TensorFlow, as in the background articles), and the fraction
   of this CPU's measured matmul FLOP/s that the CNN reaches.
2. MLflow tracking overhead: the same training with tracking on and off.
3. 2 workers against 1 worker: median seconds per epoch, per framework.

Issue 14 adds section ``user``: the same throughput comparison for a user's model
file (a residual MLP written by the benchmark, passed as ``--model FILE`` passes
it), interleaved twinflow / plain, medians.

Usage: .venv/bin/python bench/bench_training.py [--epochs 3] [--repeats 2] [--scale 8]
       [--sections throughput tracking workers user]
Prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import mlflow
import pandas as pd
from common import (
    interleaved,
    plain_builder,
    plain_fit,
    prepare,
    splits,
    twinflow_fit,
    user_model_fields,
    write_user_model,
)

from components.config import TrainConfig
from components.data.dataset import read_metadata
from components.frameworks.base import ModelSpec, TrainContext
from components.models.user import resolve
from components.train.core import run_train
from components.train.worker import train_worker

# Training FLOPs per sample of the digits CNN: forward (conv 6x6x32x9 MACs, dense
# 288x128, dense 128x10) x 2 FLOPs/MAC, x3 for forward + backward.
CNN_TRAIN_FLOPS = 3 * 2 * (6 * 6 * 32 * 9 + 288 * 128 + 128 * 10)


def make_data(root: Path, scale: int) -> Path:
    """Digits, ingested and transformed, with the train split repeated ``scale`` times."""
    data = prepare(root)
    train = data / "train.parquet"
    pd.concat([pd.read_parquet(train)] * scale).to_parquet(train, index=False)
    return data


def plain_rate(fw: str, data: Path, epochs: int, user_file: Path | None = None,
               validate: bool = False) -> float:
    """Samples/s of the plain loop (PyTorch DataLoader loop; Keras compile + fit) of the
    digits default model, or of the user's file's network; optionally validating every
    epoch as twinflow does."""
    meta = read_metadata(data)
    ref = resolve(str(user_file)) if user_file else None
    spec = ModelSpec.for_dataset(meta, ref)
    tr, val, _ = splits(data)
    _, seconds = plain_fit(fw, plain_builder(fw, spec, user_file), tr, epochs,
                           val=val if validate else None)
    return len(tr) * epochs / seconds


def twinflow_rate(fw: str, data: Path, epochs: int, user_file: Path | None = None) -> float:
    """Samples/s of the adapter's train() as the step calls it, tracking off, progress
    off; a user file is passed as the CLI passes it (model_ref + model_code)."""
    fields = user_model_fields(user_file) if user_file else {}
    config = TrainConfig(framework=fw, epochs=epochs, show_progress=False, **fields)
    _, seconds = twinflow_fit(config, data)
    return len(splits(data)[0]) * epochs / seconds


def tracked(fw: str, data: Path, epochs: int, workers: int, track: bool,
            out: Path) -> tuple[float, float]:
    """The train step's work: (wall seconds, median seconds per epoch).

    Tracking on is ``run_train`` in an MLflow run (params, one batch request per
    epoch, final metrics); off is the same worker with no MLflow calls at all.
    """
    config = TrainConfig(framework=fw, epochs=epochs, workers=workers, show_progress=False)
    start = time.perf_counter()
    if track:
        with mlflow.start_run() as run:
            run_train(config, data, out)
        hist = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "seconds")
        per_epoch = [m.value for m in hist]
    else:
        assert workers == 1, "the untracked path is the in-process worker"
        ckpt = out / "checkpoints"
        shutil.rmtree(ckpt, ignore_errors=True)  # as run_train does before training
        ctx = TrainContext(checkpoint_dir=ckpt)
        per_epoch = [m.seconds for m in train_worker(config, data, out, ctx, None)]
    return time.perf_counter() - start, statistics.median(per_epoch)


def peak_flops() -> float:
    """This CPU's fp32 matmul rate (torch, all threads): the 'peak' we compare to."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    start, n = time.perf_counter(), 10
    for _ in range(n):
        a @ b
    return n * 2 * 2048**3 / (time.perf_counter() - start)


def best(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def throughput(data: Path, peak: float, args: argparse.Namespace) -> None:
    """Section 1: twinflow's trainer against the plain loops."""
    print("| framework | plain loop samples/s | twinflow samples/s | ratio | "
          "twinflow GFLOP/s | fraction of matmul peak |")
    print("|---|---|---|---|---|---|")
    for fw in ("torch", "tensorflow"):
        base = best(partial(plain_rate, fw, data, args.epochs), args.repeats)
        ours = best(partial(twinflow_rate, fw, data, args.epochs), args.repeats)
        flops = ours * CNN_TRAIN_FLOPS
        print(f"| {fw} | {base:,.0f} | {ours:,.0f} | {ours / base:.2f}x | "
              f"{flops / 1e9:.2f} | {flops / peak:.1%} |", flush=True)


def user_throughput(data: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Section ``user`` (issue 14): a user's model file through twinflow against the same
    network in the plain loop; runs interleaved, medians."""
    user_file = write_user_model(tmp)
    print(f"\n| framework (user model {user_file.name}) | plain loop samples/s | "
          "plain loop + validation samples/s | twinflow samples/s | ratio | "
          "ratio vs plain + validation |")
    print("|---|---|---|---|---|---|")
    for fw in ("torch", "tensorflow"):
        rates = interleaved({"plain": partial(plain_rate, fw, data, args.epochs, user_file),
                             "plain_val": partial(plain_rate, fw, data, args.epochs,
                                                  user_file, True),
                             "twinflow": partial(twinflow_rate, fw, data, args.epochs,
                                                 user_file)}, args.repeats)
        print(f"| {fw} | {rates['plain']:,.0f} | {rates['plain_val']:,.0f} | "
              f"{rates['twinflow']:,.0f} | {rates['twinflow'] / rates['plain']:.2f}x | "
              f"{rates['twinflow'] / rates['plain_val']:.2f}x |", flush=True)


def tracking(data: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Section 2: tracking on and off."""
    print("\n| framework | tracking off s | tracking on s | overhead |")
    print("|---|---|---|---|")
    for fw in ("torch", "tensorflow"):
        offs, ons = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            offs.append(tracked(fw, data, args.epochs, 1, False, tmp / "m")[0])
            ons.append(tracked(fw, data, args.epochs, 1, True, tmp / "m")[0])
        off, on = statistics.median(offs), statistics.median(ons)
        print(f"| {fw} | {off:.2f} | {on:.2f} | {(on - off) / off:+.1%} |", flush=True)


def workers(data: Path, tmp: Path, args: argparse.Namespace) -> None:
    """Section 3: 2 workers against 1."""
    print("\n| framework | 1 worker s/epoch | 2 workers s/epoch | 2w / 1w |")
    print("|---|---|---|---|")
    for fw in ("torch", "tensorflow"):
        one = tracked(fw, data, args.epochs, 1, True, tmp / "w1")[1]
        two = tracked(fw, data, args.epochs, 2, True, tmp / "w2")[1]
        print(f"| {fw} | {one:.2f} | {two:.2f} | {two / one:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale", type=int, default=8)
    parser.add_argument("--sections", nargs="+",
                        default=["throughput", "tracking", "workers"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), args.scale)
        peak = peak_flops()
        print(f"\nmatmul peak: {peak / 1e9:.1f} GFLOP/s; train rows: "
              f"{read_metadata(data).rows['train'] * args.scale}\n")
        if "throughput" in args.sections:
            throughput(data, peak, args)
        if "tracking" in args.sections:
            tracking(data, Path(tmp), args)
        if "workers" in args.sections:
            workers(data, Path(tmp), args)
        if "user" in args.sections:
            user_throughput(data, Path(tmp), args)


if __name__ == "__main__":
    main()
