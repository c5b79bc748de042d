"""Issue 17 figures: serving under a 20 MB request, and the 413 of an oversized one.

One digits-sized MLP (64 features, 10 classes, ONNX; bench_serving.py's model), served by
two `twinflow serve` processes (one worker each, 127.0.0.1):

1. ``load``: the server with raised limits (``--max-request-bytes 64 MiB --max-rows
   1000000``) takes ``--concurrency`` threads of batch-1 V1 requests (keep-alive
   http.client) and a readiness prober (``/v2/health/ready`` and the model's ready, one
   every 20 ms). Phases alternate over ``--rounds``: with a thread sending ``--big``
   20 MB requests (V1, then V2) back to back, and without it for as long as the loaded
   phase took. p99 of the small requests and of the probes, each loaded phase against the
   quiet one of the same round (same run), pooled over the rounds, as a ratio.
2. ``reject``: the server with the default limits and a 20 MB body: the time to its 413
   when only the headers are sent (what the server itself takes), and the time a client
   (`requests`, which sends the whole body first) waits, by Content-Length and chunked;
   beside it the time the raised server takes to answer the same body.

Usage: .venv/bin/python bench/bench_serving_limits.py [--concurrency 2] [--rounds 3]
       [--big 4] [--sections load reject]
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serving import export, free_port, start, stop, train_mlp

from components.serve.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_REQUEST_BYTES_FLAG,
    MAX_ROWS_FLAG,
    MIB,
)

BIG_BYTES = 20 * 10**6
RAISED = [MAX_REQUEST_BYTES_FLAG, str(64 * MIB), MAX_ROWS_FLAG, "1000000"]
READY = ("/v2/health/ready", "/v2/models/digits/ready")
V1, V2 = "/v1/models/digits:predict", "/v2/models/digits/infer"
HEADERS = {"Content-Type": "application/json"}
PROBE_EVERY_S = 0.02


def big_bodies(x: np.ndarray) -> dict[str, bytes]:
    """About 20 MB of V1 and of V2 JSON: digits rows repeated."""
    row_bytes = len(json.dumps(x[0].tolist())) + 1
    rows = np.resize(x, (BIG_BYTES // row_bytes, x.shape[1]))
    return {"V1": json.dumps({"instances": rows.tolist()}).encode(),
            "V2": json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape),
                                          "datatype": "FP32",
                                          "data": rows.ravel().tolist()}]}).encode()}


Send = Callable[[http.client.HTTPConnection], None]


def _loop(stop_at: threading.Event, port: int, send: Send, pause: float,
          out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while not stop_at.is_set():
        t0 = time.perf_counter()
        send(conn)
        out.append(time.perf_counter() - t0)
        if pause:
            stop_at.wait(pause)
    conn.close()


def _post(path: str, body: bytes) -> Send:
    def send(conn: http.client.HTTPConnection) -> None:
        conn.request("POST", path, body, HEADERS)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status}")
    return send


def _probe(conn: http.client.HTTPConnection) -> None:
    for path in READY:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status}")


def phase(port: int, small: bytes, concurrency: int, big: tuple[str, bytes, int] | None,
          seconds: float) -> tuple[list[float], list[float], float, list[float]]:
    """(small latencies, probe latencies, phase seconds, big latencies) of one phase:
    with ``big`` = (path, body, count) until those requests are answered, else for
    ``seconds``."""
    stop_at = threading.Event()
    small_lat: list[float] = []
    probe_lat: list[float] = []
    big_lat: list[float] = []
    threads = [threading.Thread(target=_loop, args=(stop_at, port, _post(V1, small), 0.0,
                                                    small_lat)) for _ in range(concurrency)]
    threads.append(threading.Thread(target=_loop, args=(stop_at, port, _probe, PROBE_EVERY_S,
                                                        probe_lat)))
    for thread in threads:
        thread.start()
    begin = time.perf_counter()
    if big is None:
        time.sleep(seconds)
    else:
        path, body, count = big
        send = _post(path, body)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for _ in range(count):
            t0 = time.perf_counter()
            send(conn)
            big_lat.append(time.perf_counter() - t0)
        conn.close()
    took = time.perf_counter() - begin
    stop_at.set()
    for thread in threads:
        thread.join()
    return small_lat, probe_lat, took, big_lat


def p99_ms(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values) * 1000, 99))


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MiB of a server process (VmHWM: Linux)."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    peak = int(next(s for s in status if s.startswith("VmHWM:")).split()[1]) * 1024
    return psutil.Process(pid).memory_info().rss / MIB, peak / MIB


def load_figures(port: int, pid: int, x: np.ndarray, args: argparse.Namespace) -> None:
    small = json.dumps({"instances": [x[0].tolist()]}).encode()
    bodies = big_bodies(x)
    before, _ = memory_mib(pid)
    pooled: dict[str, dict[str, list[float]]] = {}
    for i in range(args.rounds):
        for name, body in bodies.items():
            path = V1 if name == "V1" else V2
            s, p, took, b = phase(port, small, args.concurrency, (path, body, args.big), 0)
            qs, qp, _, _ = phase(port, small, args.concurrency, None, took)
            for key, values in ((f"with {name}", (s, p, b)), (f"quiet ({name} round)",
                                                             (qs, qp, []))):
                into = pooled.setdefault(key, {"small": [], "probe": [], "big": []})
                for part, got in zip(("small", "probe", "big"), values, strict=True):
                    into[part].extend(got)
            print(f"round {i + 1} {name}: {took:.1f} s, big {statistics.median(b):.2f} s, "
                  f"small p99 {p99_ms(s):.1f} vs {p99_ms(qs):.1f} ms, probe p99 "
                  f"{p99_ms(p):.1f} vs {p99_ms(qp):.1f} ms", file=sys.stderr, flush=True)
    print(f"\n{args.concurrency} threads of batch-1 V1 requests and one prober (both ready "
          f"endpoints every {PROBE_EVERY_S * 1000:.0f} ms), {args.rounds} rounds; loaded: "
          f"{args.big} requests of {BIG_BYTES / 1e6:.0f} MB back to back\n")
    print("| phase | small requests | small p99 ms | probes | probe p99 ms | probe max ms "
          "| 20 MB request s (median) |\n|---|---|---|---|---|---|---|")
    for key, m in pooled.items():
        big = f"{statistics.median(m['big']):.2f}" if m["big"] else ""
        print(f"| {key} | {len(m['small'])} | {p99_ms(m['small']):.1f} | {len(m['probe'])} | "
              f"{p99_ms(m['probe']):.1f} | {max(m['probe']) * 1000:.1f} | {big} |")
    after, peak = memory_mib(pid)
    print(f"\nServer resident memory: {before:.0f} MiB before the first 20 MB request, peak "
          f"{peak:.0f} MiB, {after:.0f} MiB after the last ({len(bodies) * args.rounds * args.big}"
          " of them)\n")
    for name in bodies:
        loaded, quiet = pooled[f"with {name}"], pooled[f"quiet ({name} round)"]
        print(f"- with a 20 MB {name} request: small p99 "
              f"{p99_ms(loaded['small']) / p99_ms(quiet['small']):.2f}x, probe p99 "
              f"{p99_ms(loaded['probe']) / p99_ms(quiet['probe']):.2f}x of the quiet phase")


def _headers_only(port: int, length: int) -> float:
    """Seconds from sending the headers of an oversized body to its 413 (no body sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        t0 = time.perf_counter()
        sock.sendall(f"POST {V1} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {length}\r\n\r\n".encode())
        status = sock.recv(64)
        took = time.perf_counter() - t0
    if b" 413 " not in status:
        raise RuntimeError(f"expected 413, got {status!r}")
    return took


def reject_figures(default_port: int, default_pid: int, raised_port: int, x: np.ndarray,
                   repeats: int) -> None:
    body = big_bodies(x)["V1"]
    before, _ = memory_mib(default_pid)

    def chunks() -> Iterator[bytes]:
        return (body[i:i + MIB] for i in range(0, len(body), MIB))

    def timed(port: int, data: object, want: int) -> float:
        t0 = time.perf_counter()
        response = requests.post(f"http://127.0.0.1:{port}{V1}", data=data, headers=HEADERS,
                                 timeout=300)
        took = time.perf_counter() - t0
        if response.status_code != want:
            raise RuntimeError(f"expected {want}, got {response.status_code}")
        return took

    cases = {
        "413, headers only (server's reaction)": lambda: _headers_only(default_port, len(body)),
        "413, Content-Length (client sends the body first)": lambda: timed(default_port, body,
                                                                            413),
        "413, chunked": lambda: timed(default_port, chunks(), 413),
        "200 from the raised server (the same body, answered)": lambda: timed(raised_port,
                                                                               body, 200),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(fn())
    print(f"\nA {len(body) / 1e6:.1f} MB V1 body against the default limit "
          f"({DEFAULT_MAX_REQUEST_BYTES} bytes), median of {repeats}:\n")
    print("| case | median ms | max ms |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1000:.1f} | "
              f"{max(values) * 1000:.1f} |")
    after, peak = memory_mib(default_pid)
    print(f"\nThe default-limit server's resident memory: {before:.0f} MiB before the "
          f"{3 * repeats} refusals, {after:.0f} MiB after, peak {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big", type=int, default=4, help="20 MB requests per loaded phase")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sections", nargs="+", default=["load", "reject"],
                        choices=["load", "reject"])
    args = parser.parse_args()
    model, x = train_mlp()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exports, _ = export(model, x, root)
        servers = []
        try:
            for name, extra in (("raised", RAISED), ("default", [])):
                port = free_port()
                servers.append((port, start(
                    [sys.executable, "-m", "pipelines.cli", "serve", "--model-dir",
                     str(exports), "--name", "digits", "--port", str(port), *extra],
                    f"http://127.0.0.1:{port}/v2/health/ready", root / f"{name}.log")))
            (raised_port, raised), (default_port, default) = servers
            if "load" in args.sections:
                load_figures(raised_port, raised.pid, x, args)
            if "reject" in args.sections:
                reject_figures(default_port, default.pid, raised_port, x, args.repeats)
        finally:
            for _, proc in servers:
                stop(proc)


if __name__ == "__main__":
    main()
