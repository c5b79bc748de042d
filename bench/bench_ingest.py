"""Issue 3 figures: Beam ingest + statistics throughput against pyarrow, and peak memory.

For each size (default 0.5M and 5M rows) a CSV is generated in a temp dir
(8 float columns, 1 int, 1 categorical, a 5-class label). Each measurement runs
in its own Python process, which reports its wall time around the work (imports
excluded) and its own peak RSS (``ru_maxrss``):

- baseline: ``pyarrow.csv.read_csv`` + ``pyarrow.parquet.write_table``;
- ingest: ``run_ingest`` (Beam DirectRunner/FnApiRunner: read, split, Parquet shards,
  statistics, schema, digest, MLflow logging into a fresh SQLite store).

Usage: .venv/bin/python bench/bench_ingest.py [--rows 500000 5000000]
Prints a Markdown table (copy it into bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_BASELINE = """
import json, resource, sys, time
import pyarrow.csv as pc, pyarrow.parquet as pq
t = time.perf_counter()
table = pc.read_csv(sys.argv[1])
pq.write_table(table, sys.argv[2])
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rows": table.num_rows,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_INGEST = """
import json, logging, resource, sys, time
from pathlib import Path
import mlflow
from components.config import IngestConfig
from components.ingest.core import run_ingest
logging.disable(logging.WARNING)
mlflow.set_tracking_uri(f"sqlite:///{sys.argv[3]}/mlflow.db")
mlflow.set_experiment("bench")
with mlflow.start_run():
    t = time.perf_counter()
    meta = run_ingest(IngestConfig(source=sys.argv[1], label="label", schema_source="none"),
                      Path(sys.argv[2]))
    dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "rows": sum(meta.rows.values()),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def generate(path: Path, rows: int, chunk: int = 500_000) -> None:
    """Write a synthetic CSV in chunks (the generator itself stays small)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pc

    rng = np.random.default_rng(0)
    cats = np.array([f"cat{i}" for i in range(10)])
    schema = pa.schema([(f"f{i}", pa.float64()) for i in range(8)]
                       + [("n", pa.int64()), ("c", pa.string()), ("label", pa.string())])
    with pc.CSVWriter(str(path), schema) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cols = [pa.array(rng.normal(size=n).round(4)) for _ in range(8)]
            cols += [pa.array(rng.integers(0, 1000, n)), pa.array(cats[rng.integers(0, 10, n)]),
                     pa.array(np.array(["a", "b", "c", "d", "e"])[rng.integers(0, 5, n)])]
            writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))


def _run(code: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 5_000_000])
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for rows in args.rows:
            work = Path(tmp) / str(rows)
            work.mkdir()
            csv = work / "data.csv"
            generate(csv, rows)
            base = _run(_BASELINE, str(csv), str(work / "baseline.parquet"))
            ingest = _run(_INGEST, str(csv), str(work / "dataset"), str(work))
            results[rows] = (base, ingest, csv.stat().st_size / 1e6)
            print(f"{rows} rows done: {base} {ingest}", file=sys.stderr, flush=True)
    print("| rows | CSV MB | pyarrow rows/s | ingest+stats rows/s | ratio | pyarrow peak RSS MB "
          "| ingest peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for rows, (base, ingest, mb) in results.items():
        b, i = base["rows"] / base["seconds"], ingest["rows"] / ingest["seconds"]
        print(f"| {rows:,} | {mb:.0f} | {b:,.0f} | {i:,.0f} | {i / b:.2f}x "
              f"| {base['rss_mb']:.0f} | {ingest['rss_mb']:.0f} |")
    if len(results) >= 2:
        small, large = min(results), max(results)
        growth = results[large][1]["rss_mb"] / results[small][1]["rss_mb"]
        print(f"\ningest peak RSS {large:,} rows / {small:,} rows: {growth:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
