"""Issue 18 figures: `twinflow predict` rows/s and peak memory against a plain loop.

A model is trained and registered first (`twinflow run` on a generated table with
numbers, words and gaps, torch, 3 epochs). Then, for each size, the same generated
CSV is scored three ways, each in a fresh Python process (so its peak RSS is its
own, read with ``resource.getrusage``; both import the same modules before the
clock starts, so peak RSS includes mlflow on both sides):

- plain: what a user would write without twinflow: ``pandas.read_csv`` in chunks of
  65,536 rows, the registered version's own raw-input export (the same file, through
  the same loader) on each chunk, a ``pyarrow.parquet.ParquetWriter``;
- core: twinflow's scoring step (``run_predict``: ingest's reader, the model,
  the statistics and the schema checks, the atomic write), model already downloaded;
- cli: `twinflow predict` end to end (the local KFP run, the MLflow run, the model
  download), wall seconds only (its step runs in a grandchild process).

Usage: .venv/bin/python bench/bench_predict.py [--rows 100000 1000000]
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BATCH = 65_536

SCRIPT = textwrap.dedent('''
    import json, resource, sys, time
    from pathlib import Path
    import mlflow, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
    from components.config import PredictConfig
    from components.export.pyfunc_model import RawRows
    from components.predict.core import run_predict
    mode, model_root, csv, out, batch = sys.argv[1:6]
    # the store exists and the run is open before the clock starts (the CLI's step
    # opens its run before scoring too); the model's load is timed on both sides
    mlflow.set_tracking_uri("sqlite:///" + str(Path(out).parent / "bench.db"))
    mlflow.start_run()
    start = time.perf_counter()
    if mode == "plain":
        model = RawRows(Path(model_root) / "artifacts" / "exports")
        writer, rows = None, 0
        for chunk in pd.read_csv(csv, chunksize=int(batch)):
            table = pa.Table.from_pandas(model.predict(chunk), preserve_index=False)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            rows += len(chunk)
        writer.close()
    else:
        config = PredictConfig(model="bench", data=csv, batch_rows=int(batch))
        rows = run_predict(config, Path(model_root), Path(out)).rows
    seconds = time.perf_counter() - start
    mlflow.end_run()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": seconds, "rss_mb": rss}))
''')


def frame(rows: int, seed: int) -> pd.DataFrame:
    """Numbers (one integer column), words and gaps; the label depends on both kinds."""
    rng = np.random.default_rng(seed)
    size = rng.normal(10.0, 3.0, rows).round(3)
    colour = rng.choice(["red", "green", "blue", "violet"], rows)
    out = pd.DataFrame({"size": size, "weight": rng.uniform(0, 50, rows).round(2),
                        "items": rng.integers(0, 9, rows), "colour": colour,
                        "shape": rng.choice(["round", "square"], rows)})
    out["label"] = np.where((size > 10) ^ (colour == "red"), "yes", "no")
    out.loc[rng.random(rows) < 0.05, "size"] = np.nan
    return out


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    return env | {"TWINFLOW_HOME": str(root / ".twinflow"), "PYTHONPATH": str(REPO)}


def train(root: Path) -> Path:
    """Register `bench` and download its MLflow model; return the model's directory."""
    frame(2_000, seed=1).to_csv(root / "train.csv", index=False)
    subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework", "torch",
                    "--data", "train.csv", "--label", "label", "--epochs", "3",
                    "--model-name", "bench", "--min-accuracy", "0.6"],
                   cwd=root, env=_env(root), check=True, capture_output=True)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / '.twinflow' / 'mlflow.db'}")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/bench@champion",
                                                    dst_path=str(root / "model")))


def measure(mode: str, model: Path, csv: Path, out: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(model), str(csv), str(out),
                           str(BATCH)],
                          env=_env(csv.parent) | {"OMP_NUM_THREADS": "1"}, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_seconds(root: Path, csv: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.cli", "predict", "-q", "--model",
                    "bench", "--data", str(csv), "-o", str(root / "cli.parquet")],
                   cwd=root, env=_env(root), check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = train(root)
        print("| rows | plain rows/s | twinflow core rows/s | ratio | plain peak MB | "
              "twinflow core peak MB | `twinflow predict` wall s (rows/s) |")
        print("|---|---|---|---|---|---|---|")
        for rows in args.rows:
            csv = root / f"new-{rows}.csv"
            frame(rows, seed=2).drop(columns=["label"]).to_csv(csv, index=False)
            plain = measure("plain", model, csv, root / "plain.parquet")
            core = measure("core", model, csv, root / "core.parquet")
            wall = cli_seconds(root, csv)
            p_rate, c_rate = rows / plain["seconds"], rows / core["seconds"]
            print(f"| {rows:,} | {p_rate:,.0f} | {c_rate:,.0f} | {c_rate / p_rate:.2f}x | "
                  f"{plain['rss_mb']:,.0f} | {core['rss_mb']:,.0f} | "
                  f"{wall:.1f} ({rows / wall:,.0f}) |", flush=True)


if __name__ == "__main__":
    main()
