"""Issue 3/5 figure: what serving raw rows costs against serving the transformed matrix.

A tabular model (2 numeric columns with gaps, 2 string columns, 2 classes) goes
through the real steps (ingest, transform, train with ``--framework``), then its
network is exported to ONNX (and TFLite for TensorFlow) and the raw-input
entries are built as compress builds them (components.export.raw.raw_exports).
One `twinflow serve` per entry, the same client as bench_serving.py (keep-alive
http.client, batch-1 V1 requests from ``--concurrency`` threads, servers
alternating over ``--rounds``, median round):

- ``onnx`` / ``tflite``: the network alone; the client sends transformed float
  rows (it would have to run the transform itself): the baselines;
- ``raw_onnx`` / ``raw_tflite``: the same network with the transform inside
  (ONNX operators; TFLite builtin ops); the client sends raw rows as JSON objects
  (column -> value, null for gaps);
- ``raw``: the framework's raw-input model (TorchScript / SavedModel), same rows.

Usage: .venv/bin/python bench/bench_raw_serving.py [--framework torch|tensorflow]
       [--requests 400] [--concurrency 4] [--rounds 3]
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import REPO, free_port, load, load_args, start, stop

ENTRIES = {"torch": ["onnx", "raw_onnx", "raw"],
           "tensorflow": ["onnx", "raw_onnx", "raw", "tflite", "raw_tflite"]}
BASELINE = {"raw_onnx": "onnx", "raw": "onnx", "raw_tflite": "tflite"}


def frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Numeric and string features with gaps; the label depends on both kinds."""
    rng = np.random.default_rng(seed)
    size = rng.normal(10.0, 3.0, n).round(3)
    colour = rng.choice(["red", "green", "blue", "violet"], n)
    out = pd.DataFrame({"size": size, "weight": rng.uniform(0, 50, n).round(2),
                        "colour": colour.astype(object),
                        "shape": rng.choice(["round", "square"], n).astype(object),
                        "label": np.where((size > 10) ^ (colour == "red"), "yes", "no")})
    out.loc[rng.random(n) < 0.1, "size"] = np.nan
    out.loc[rng.random(n) < 0.1, "colour"] = None
    return out


def build(root: Path, framework: str) -> tuple[Path, Any, pd.DataFrame]:
    """(exports directory, fitted transform, raw test rows) from the real steps."""
    import mlflow

    from components.config import Framework, IngestConfig, TrainConfig
    from components.data.dataset import Split, read_frame
    from components.export.candidates import RawExporter
    from components.export.manifest import ExportEntry, ExportFormat, ExportManifest
    from components.export.raw import raw_exports
    from components.frameworks import get_adapter
    from components.ingest.core import run_ingest
    from components.train.core import run_train
    from components.transform.core import run_transform

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_experiment("bench-raw-serving")
    frame(2000).to_csv(root / "shop.csv", index=False)
    with mlflow.start_run():
        run_ingest(IngestConfig(source=str(root / "shop.csv"), label="label",
                                schema_source="none"), root / "raw")
        fitted = run_transform(root / "raw", root / "data", root / "t.json")
        with mlflow.start_run(nested=True):
            run_train(TrainConfig(framework=Framework(framework), epochs=5,
                                  show_progress=False), root / "data", root / "model")
    model = get_adapter(framework).load_model(root / "model")
    exports, width = root / "exports", len(fitted.output_columns())
    entries = {"onnx": ExportEntry(format=ExportFormat.ONNX, path="model.onnx")}
    exporters: dict[str, RawExporter] = {}
    if framework == Framework.TENSORFLOW:  # TFLite: the transform converted with the network
        from functools import partial

        from components.frameworks.tensorflow.export import export_tflite
        from components.frameworks.tensorflow.tflite_raw import export_raw_tflite

        export_tflite(model, width, exports / "model.tflite")
        entries["tflite"] = ExportEntry(format=ExportFormat.TFLITE, path="model.tflite")
        exporters["tflite"] = partial(export_raw_tflite, model)
    package = importlib.import_module(f"components.frameworks.{framework}.export")
    package.export_onnx(model, width, exports / "model.onnx")
    raw = raw_exports(get_adapter(framework).raw_model(root / "model"), exports, entries,
                      exporters)
    assert raw is not None
    ExportManifest(framework=framework, features=fitted.output_columns(),
                   classes=fitted.classes, entries={**entries, **raw.entries},
                   preferred="onnx", raw_features=raw.features).save(exports)
    return exports, fitted, read_frame(root / "raw", Split.TEST)


def bodies(entry: str, fitted: Any, rows: pd.DataFrame, n: int) -> list[bytes]:
    """Batch-1 V1 bodies: transformed float rows for a baseline, raw objects otherwise."""
    rows = rows.drop(columns=["label"]).sample(n, replace=True, random_state=1)
    if entry not in BASELINE:
        return [json.dumps({"instances": [r.tolist()]}).encode() for r in fitted.apply(rows)]
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    return [json.dumps({"instances": [r]}).encode() for r in records]


def check(answer: Any) -> None:
    assert len(answer["predictions"]) == 1 and answer["predictions"][0]["class"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=sorted(ENTRIES), default="torch")
    args = load_args("", parser)
    names = ENTRIES[args.framework]
    with tempfile.TemporaryDirectory(prefix="bench-raw-serving-") as tmp:
        root = Path(tmp)
        exports, fitted, rows = build(root, args.framework)
        servers = {}
        try:
            for entry in names:
                port = free_port()
                servers[entry] = (port, start(
                    [sys.executable, "-m", "pipelines.cli", "serve", "--model-dir", str(exports),
                     "--export", entry, "--name", "m", "--port", str(port)],
                    f"http://127.0.0.1:{port}/v2/models/m/ready", root / f"{entry}.log"))
            payload = {e: bodies(e, fitted, rows, args.requests) for e in names}
            runs: dict[str, list[dict[str, float]]] = {e: [] for e in names}
            for _ in range(args.rounds):
                for entry, (port, proc) in servers.items():
                    runs[entry].append(load(port, proc.pid, "/v1/models/m:predict",
                                            payload[entry], check, args.concurrency))
        finally:
            for _, proc in servers.values():
                stop(proc)
    print(f"cwd {REPO}; {args.framework}; {args.requests} requests x {args.rounds} rounds, "
          f"concurrency {args.concurrency}\n")
    print("| entry | request | p50 ms | p99 ms | req/s | req/s vs baseline | "
          "server CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    med = {e: {k: statistics.median(r[k] for r in runs[e]) for k in runs[e][0]}
           for e in names}
    for e in names:
        m, base = med[e], BASELINE.get(e, e)
        kind = "transformed floats" if e not in BASELINE else "raw JSON object"
        print(f"| {e} | {kind} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:,.0f} "
              f"| {m['rps'] / med[base]['rps']:.2f}x ({base}) | {m['cpu']:.2f} |")


if __name__ == "__main__":
    main()
