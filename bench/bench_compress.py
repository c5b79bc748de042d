"""Issue 5 figure: the compression table for both frameworks, each variant against the
fp32 export of its own format (and the framework's native fp32 format) measured in
the same run, with the issue's goals checked for the variant the gate picks.

Goals: int8 size <= 0.3x fp32, accuracy drop <= 0.5 points, batch-1 CPU latency
>= 1.5x faster for the best passing variant.

Usage: .venv/bin/python bench/bench_compress.py [--epochs 10] [--calls 500]
Prints Markdown for bench/RESULTS.md (the load average shows CPU contention).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import mlflow

from components.compress.core import CompressResult, run_compress
from components.compress.report import markdown, ratios
from components.compress.variants import Selection
from components.config import CompressConfig, Framework, IngestConfig, TrainConfig
from components.ingest.core import run_ingest
from components.tracking import experiment_id
from components.train.core import run_train
from components.transform.core import run_transform

NATIVE = {Framework.TORCH: "torchscript", Framework.TENSORFLOW: "savedmodel"}


def _goals(fw: Framework, result: CompressResult, max_drop: float) -> list[str]:
    rows = {r.name: r for r in result.results}
    lines = []
    int8 = [r for r in result.results if "int8" in r.variant]
    smallest = min(int8, key=lambda r: ratios(r, result.results)["size_x"])
    size_x = ratios(smallest, result.results)["size_x"]
    lines.append(f"- int8 size <= 0.3x fp32: smallest int8 variant {smallest.name} is "
                 f"{size_x:.3f}x -> **{'met' if size_x <= 0.3 else 'not met'}**")
    if not result.variant:
        return [*lines, f"- no variant passed the gate (max drop {max_drop})"]
    chosen = rows[result.variant]
    r = ratios(chosen, result.results)
    chosen_x = r["size_x"]
    lines.append(f"- chosen variant {chosen.name}: size {chosen_x:.3f}x its fp32 "
                 f"{chosen.baseline} -> **{'met' if chosen_x <= 0.3 else 'not met'}**")
    drop_pts = r["accuracy_drop"] * 100
    lines.append(f"- accuracy drop <= 0.5 points: {drop_pts:.2f} points -> "
                 f"**{'met' if drop_pts <= 0.5 else 'not met'}**")
    native = rows[NATIVE[fw]]
    vs_native = native.p50_b1_ms / chosen.p50_b1_ms
    lines.append(f"- batch-1 p50 >= 1.5x faster: {r['speedup_b1']:.2f}x against fp32 "
                 f"{chosen.baseline} (same runtime) -> "
                 f"**{'met' if r['speedup_b1'] >= 1.5 else 'not met'}**; {vs_native:.2f}x "
                 f"against the native fp32 {native.name}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--calls", type=int, default=500, help="timed batch-1 calls")
    parser.add_argument("--max-drop", type=float, default=0.005)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        root = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        # An experiment whose artifacts stay in the temporary directory, not in ./mlruns.
        mlflow.set_experiment(experiment_id=experiment_id("bench-compress"))
        with mlflow.start_run():
            run_ingest(IngestConfig(), root / "raw")
            run_transform(root / "raw", root / "data", root / "transform.json")
        for fw in (Framework.TORCH, Framework.TENSORFLOW):
            with mlflow.start_run():
                run_train(TrainConfig(framework=fw, epochs=args.epochs, show_progress=False),
                          root / "data", root / f"model-{fw.value}")
                load_before = os.getloadavg()[0]
                config = CompressConfig(framework=fw, latency_calls=args.calls,
                                        max_accuracy_drop=args.max_drop)
                result = run_compress(config, root / "data", root / f"model-{fw.value}",
                                      root / f"exports-{fw.value}")
                load_after = os.getloadavg()[0]
            print(f"\n### {fw.value}\n")
            print(markdown(result.results, Selection(None, result.rejected), result.preferred))
            print(f"\nload average (1 min) before/after: {load_before:.2f} / {load_after:.2f} "
                  f"on {os.cpu_count()} cores\n")
            print("\n".join(_goals(fw, result, args.max_drop)))


if __name__ == "__main__":
    main()
