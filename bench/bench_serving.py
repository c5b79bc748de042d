"""Issue 5 figure: `twinflow serve` against `mlflow models serve`, same model, same client.

One digits-sized MLP (64 features, 10 classes), briefly trained, exported once
to ONNX. twinflow serves the exports directory (KServe, onnxruntime, one
worker); MLflow serves the same ONNX graph logged with ``mlflow.onnx``
(``mlflow models serve --env-manager local --workers 1``, onnxruntime too).
One Python client sends the same batch-1 requests to each: ``--concurrency``
threads, each with its own keep-alive connection (http.client), after a warm-up;
servers alternate over ``--rounds`` rounds and the median round of each is
reported. Both servers listen on 127.0.0.1 and share the machine with the client;
each server's CPU milliseconds per request (its whole process tree) are reported
too, as they depend less than wall time on what else a shared machine runs.

Usage: .venv/bin/python bench/bench_serving.py [--requests 400] [--concurrency 4]
       [--rounds 3]
Prints a Markdown table for bench/RESULTS.md and the ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

REPO = Path(__file__).resolve().parents[1]


def train_mlp(seed: int = 0) -> tuple[Any, np.ndarray]:
    """A 64-128-10 MLP fitted for a few epochs on digits; (model, test rows)."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval(), x


def export(model: Any, x: np.ndarray, root: Path) -> tuple[Path, Path]:
    """(twinflow exports directory, MLflow onnx model directory) of the same graph."""
    import mlflow.onnx
    import onnx
    import torch
    from mlflow.models import infer_signature
    from torch.export import Dim

    from components.export.manifest import ExportEntry, ExportFormat, ExportManifest

    exports = root / "exports"
    exports.mkdir()
    torch.onnx.export(model, (torch.from_numpy(x[:2]),), str(exports / "model.onnx"),
                      dynamo=True, input_names=["input"], output_names=["logits"],
                      dynamic_shapes=({0: Dim("batch")},))
    ExportManifest(framework="torch", features=[f"pixel_{i}" for i in range(64)],
                   classes=[str(i) for i in range(10)],
                   entries={"onnx": ExportEntry(format=ExportFormat.ONNX, path="model.onnx")},
                   preferred="onnx").save(exports)
    graph = onnx.load(str(exports / "model.onnx"))  # external weights loaded inline
    out = model(torch.from_numpy(x[:5])).detach().numpy()
    mlflow.onnx.save_model(graph, str(root / "mlflow-model"),
                           signature=infer_signature(x[:5], out))
    return exports, root / "mlflow-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], ready_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited: see {log}")
        try:
            if requests.get(ready_url, timeout=2).ok:
                return proc
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"{cmd[:4]} not ready: see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def client(port: int, path: str) -> Callable[[bytes], tuple[int, bytes]]:
    """A POST function over one keep-alive connection.

    ``http.client`` with pre-encoded JSON: `requests` alone costs about as much
    per call as the server does here, which would hide the servers' difference.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}

    def post(body: bytes) -> tuple[int, bytes]:
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        return response.status, response.read()

    return post


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server process and all its children so far."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def load(port: int, pid: int, path: str, bodies: list[bytes], check: Callable[[Any], None],
         concurrency: int, warmup: int = 100) -> dict[str, float]:
    """Send ``bodies`` from ``concurrency`` threads: latency percentiles, req/s, and the
    server's CPU milliseconds per request (less sensitive than wall time to what
    else the shared machine is running)."""
    posts = [client(port, path) for _ in range(concurrency)]
    for i, body in enumerate(bodies[:warmup]):
        check(json.loads(posts[i % concurrency](body)[1]))
    shares = [bodies[i::concurrency] for i in range(concurrency)]

    def send(post: Callable[[bytes], tuple[int, bytes]], share: list[bytes]) -> list[float]:
        latencies = []
        for body in share:
            t0 = time.perf_counter()
            status, text = post(body)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{path}: {status} {text[:200]!r}")
        return latencies

    with ThreadPoolExecutor(concurrency) as pool:
        cpu, begin = cpu_seconds(pid), time.perf_counter()
        parts = list(pool.map(send, posts, shares))
        total, cpu = time.perf_counter() - begin, cpu_seconds(pid) - cpu
    ms = np.concatenate(parts) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "rps": len(bodies) / total, "cpu": cpu * 1000 / len(bodies)}


def load_args(description: str, parser: argparse.ArgumentParser | None = None
              ) -> argparse.Namespace:
    """The load generator's flags, shared with bench_raw_serving.py (which adds its own
    to ``parser``)."""
    parser = parser or argparse.ArgumentParser(description=description)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    args = load_args(__doc__.splitlines()[0])
    model, x = train_mlp()
    rows = x[np.random.default_rng(0).integers(0, len(x), args.requests)]
    expected = model(__import__("torch").from_numpy(rows[:1])).argmax(1).item()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exports, mlflow_model = export(model, x, root)
        tw_port, ml_port = free_port(), free_port()
        tw = start([sys.executable, "-m", "pipelines.cli", "serve", "--model-dir", str(exports),
                    "--name", "digits", "--port", str(tw_port)],
                   f"http://127.0.0.1:{tw_port}/v2/health/ready", root / "twinflow.log")
        try:
            ml = start([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                        str(mlflow_model), "--env-manager", "local", "--workers", "1",
                        "-h", "127.0.0.1", "-p", str(ml_port)],
                       f"http://127.0.0.1:{ml_port}/ping", root / "mlflow.log")
        except Exception:
            stop(tw)
            raise
        try:
            results = run_rounds(args, rows, (tw_port, tw.pid), (ml_port, ml.pid), expected)
        finally:
            stop(tw)
            stop(ml)
    report(results, args)


def run_rounds(args: argparse.Namespace, rows: np.ndarray, twinflow: tuple[int, int],
               mlflow: tuple[int, int], expected: int) -> dict[str, list[dict[str, float]]]:
    """Alternate the three cases ``args.rounds`` times; servers are (port, pid)."""
    (tw_port, tw_pid), (ml_port, ml_pid) = twinflow, mlflow
    v1 = [json.dumps({"instances": [r.tolist()]}).encode() for r in rows]
    v2 = [json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                  "data": r.tolist()}]}).encode() for r in rows]
    mlf = [json.dumps({"inputs": [r.tolist()]}).encode() for r in rows]

    def check_v1(a: Any) -> None:
        assert isinstance(a["predictions"][0]["class"], str), a

    def check_v2(a: Any) -> None:
        assert a["outputs"][0]["name"] == "probabilities", a

    def check_ml(a: Any) -> None:
        assert len(np.asarray(a["predictions"]["logits"]).ravel()) == 10, a

    first = requests.post(f"http://127.0.0.1:{tw_port}/v1/models/digits:predict", data=v1[0],
                          timeout=30).json()["predictions"][0]["class"]
    assert first == str(expected), (first, expected)
    cases = {
        "twinflow serve (KServe V1)": (tw_port, tw_pid, "/v1/models/digits:predict", v1,
                                       check_v1),
        "twinflow serve (KServe V2)": (tw_port, tw_pid, "/v2/models/digits/infer", v2,
                                       check_v2),
        "mlflow models serve": (ml_port, ml_pid, "/invocations", mlf, check_ml),
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in cases}
    for i in range(args.rounds):
        for name, (port, pid, path, bodies, check) in cases.items():
            results[name].append(load(port, pid, path, bodies, check, args.concurrency))
            print(f"round {i + 1} {name}: {results[name][-1]}", file=sys.stderr)
    return results


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    median = {k: {m: statistics.median(r[m] for r in rs) for m in ("p50", "p99", "rps", "cpu")}
              for k, rs in results.items()}
    base = median["mlflow models serve"]
    print(f"\n{args.requests} requests per server per round after 100 warm-up, batch 1, "
          f"{args.concurrency} client threads with a keep-alive connection each, median of "
          f"{args.rounds} rounds\n")
    print("| server | p50 ms | p99 ms | req/s | req/s vs mlflow | server CPU ms/req |")
    print("|---|---|---|---|---|---|")
    for name, m in median.items():
        print(f"| {name} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:,.0f} | "
              f"{m['rps'] / base['rps']:.2f}x | {m['cpu']:.2f} |")
    tw = median["twinflow serve (KServe V1)"]
    met = tw["rps"] >= 2 * base["rps"] and tw["p99"] < base["p99"]
    print(f"\nV1 req/s ratio {tw['rps'] / base['rps']:.2f}x, p99 {tw['p99']:.2f} ms vs "
          f"{base['p99']:.2f} ms: goal (>= 2x req/s and lower p99) "
          f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
