"""Issue 3/5 figure: what serving raw rows costs against serving the transformed matrix.

A tabular model (2 numeric columns with gaps, 2 string columns, 2 classes) goes
through the real steps (ingest, transform, train with torch), then its network
is exported to ONNX and the raw-input entries are built as compress builds them
(components.export.raw.raw_exports). One `twinflow serve` per entry, the same
client as bench_serving.py (keep-alive http.client, batch-1 V1 requests from
``--concurrency`` threads, servers alternating over ``--rounds``, median round):

- ``onnx``: the network alone; the client sends transformed float rows (it would
  have to run the transform itself);
- ``raw_onnx``: the same network with the transform as ONNX operators in front;
  the client sends raw rows as JSON objects (column -> value, null for gaps);
- ``raw``: the TorchScript raw-input model, same raw rows.

Usage: .venv/bin/python bench/bench_raw_serving.py [--requests 400] [--concurrency 4]
       [--rounds 3]
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

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

ENTRIES = ["onnx", "raw_onnx", "raw"]


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


def build(root: Path) -> tuple[Path, Any, pd.DataFrame]:
    """(exports directory, fitted transform, raw test rows) from the real steps."""
    import mlflow

    from components.config import Framework, IngestConfig, TrainConfig
    from components.data.dataset import Split, read_frame
    from components.export.manifest import ExportEntry, ExportFormat, ExportManifest
    from components.export.raw import raw_exports
    from components.export.torch_export import export_onnx
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
            run_train(TrainConfig(framework=Framework.TORCH, epochs=5, show_progress=False),
                      root / "data", root / "model")
    model = get_adapter(Framework.TORCH).load_model(root / "model")
    exports = root / "exports"
    export_onnx(model, len(fitted.output_columns()), exports / "model.onnx")
    onnx_entry = ExportEntry(format=ExportFormat.ONNX, path="model.onnx")
    raw = raw_exports(Framework.TORCH, root / "model", exports, {"onnx": onnx_entry})
    assert raw is not None
    ExportManifest(framework="torch", features=fitted.output_columns(),
                   classes=fitted.classes, entries={"onnx": onnx_entry, **raw.entries},
                   preferred="onnx", raw_features=raw.features).save(exports)
    return exports, fitted, read_frame(root / "raw", Split.TEST)


def bodies(entry: str, fitted: Any, rows: pd.DataFrame, n: int) -> list[bytes]:
    """Batch-1 V1 bodies: transformed float rows for ``onnx``, raw objects otherwise."""
    rows = rows.drop(columns=["label"]).sample(n, replace=True, random_state=1)
    if entry == "onnx":
        return [json.dumps({"instances": [r.tolist()]}).encode() for r in fitted.apply(rows)]
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    return [json.dumps({"instances": [r]}).encode() for r in records]


def check(answer: Any) -> None:
    assert len(answer["predictions"]) == 1 and answer["predictions"][0]["class"]


def main() -> None:
    args = load_args(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="bench-raw-serving-") as tmp:
        root = Path(tmp)
        exports, fitted, rows = build(root)
        servers = {}
        try:
            for entry in ENTRIES:
                port = free_port()
                servers[entry] = (port, start(
                    [sys.executable, "-m", "pipelines.cli", "serve", "--model-dir", str(exports),
                     "--export", entry, "--name", "m", "--port", str(port)],
                    f"http://127.0.0.1:{port}/v2/models/m/ready", root / f"{entry}.log"))
            payload = {e: bodies(e, fitted, rows, args.requests) for e in ENTRIES}
            runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENTRIES}
            for _ in range(args.rounds):
                for entry, (port, proc) in servers.items():
                    runs[entry].append(load(port, proc.pid, "/v1/models/m:predict",
                                            payload[entry], check, args.concurrency))
        finally:
            for _, proc in servers.values():
                stop(proc)
    print(f"cwd {REPO}; {args.requests} requests x {args.rounds} rounds, "
          f"concurrency {args.concurrency}\n")
    print("| entry | request | p50 ms | p99 ms | req/s | req/s vs onnx | server CPU ms/req |")
    print("|---|---|---|---|---|---|---|")
    med = {e: {k: statistics.median(r[k] for r in runs[e]) for k in runs[e][0]}
           for e in ENTRIES}
    for e in ENTRIES:
        m = med[e]
        kind = "transformed floats" if e == "onnx" else "raw JSON object"
        print(f"| {e} | {kind} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:,.0f} "
              f"| {m['rps'] / med['onnx']['rps']:.2f}x | {m['cpu']:.2f} |")


if __name__ == "__main__":
    main()
