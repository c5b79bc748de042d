"""Serving request limits (issue 17): a real KServe server on 127.0.0.1 refuses bodies over
``--max-request-bytes`` (by Content-Length and while streaming a chunked body) and requests
of more than ``--max-rows`` rows with 413 and a message naming the limit, answers every
malformed V2 body with 400 (not FastAPI's 422), keeps answering readiness probes while a
large request is being worked on, and gives the memory of a large request back."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
import pytest
import requests

from components.export.manifest import RawFeatures
from components.serve import raw_protocol
from components.serve.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_ROWS,
    MAX_REQUEST_BYTES_FLAG,
    MAX_ROWS_FLAG,
    MIB,
)
from components.serve.protocol import TooManyRows
from tests.serving_fixtures import N_FEATURES, sample, torch_exports
from tests.test_serve import Server, serve_module

ROW = [0.5] * N_FEATURES
JSON = {"content-type": "application/json"}
READY_PATHS = ("/v2/health/ready", "/v2/models/model/ready")
# The server whose limits are raised takes the "20 MB request" of the issue.
RAISED = [MAX_REQUEST_BYTES_FLAG, str(64 * MIB), MAX_ROWS_FLAG, "1000000"]
BIG_ROWS = 120_000  # about 20 MB of JSON either way


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("limits-exports")
    torch_exports(directory)
    return directory


@pytest.fixture(scope="module")
def started() -> Iterator[list[Server]]:
    """This module's servers, stopped at its end (as test_serve's fixture does)."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def _start(started: list[Server], exports: Path, *args: str) -> Server:
    server = Server(serve_module("--model-dir", str(exports), "--export", "onnx", *args))
    started.append(server)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def default_server(exports: Path, started: list[Server]) -> Server:
    """The default limits."""
    return _start(started, exports)


@pytest.fixture(scope="module")
def raised_server(exports: Path, started: list[Server]) -> Server:
    return _start(started, exports, *RAISED)


def padded(size: int) -> bytes:
    """A valid V1 body of exactly ``size`` bytes (one row, then spaces)."""
    body = orjson.dumps({"instances": [ROW]})
    return body + b" " * (size - len(body))


def v1_url(server: Server) -> str:
    return f"{server.url}/v1/models/{server.name}:predict"


def v2_url(server: Server) -> str:
    return f"{server.url}/v2/models/{server.name}/infer"


def v2_body(x: np.ndarray, shape: list[int] | None = None) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape or list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}


def big_request(protocol: str, rows: int = BIG_ROWS) -> tuple[str, bytes]:
    """(path, body) of a request of ``rows`` random rows."""
    x = sample(rows, seed=5)
    if protocol == "v1":
        return "/v1/models/model:predict", orjson.dumps({"instances": x.tolist()})
    return "/v2/models/model/infer", orjson.dumps(v2_body(x))


def assert_still_serving(server: Server) -> None:
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).json() == {"ready": True}
    response = requests.post(v1_url(server), json={"instances": [ROW]}, timeout=10)
    assert response.status_code == 200, response.text


# --- the body limit ---------------------------------------------------------------------


def test_a_body_at_the_limit_is_served_and_one_byte_more_gets_413(default_server: Server
                                                                  ) -> None:
    with requests.Session() as session:  # one keep-alive connection throughout
        ok = session.post(v1_url(default_server), data=padded(DEFAULT_MAX_REQUEST_BYTES),
                          headers=JSON, timeout=60)
        assert ok.status_code == 200, ok.text
        refused = session.post(v1_url(default_server),
                               data=padded(DEFAULT_MAX_REQUEST_BYTES + 1), headers=JSON,
                               timeout=60)
        assert refused.status_code == 413
        message = refused.json()["error"]
        assert f"{DEFAULT_MAX_REQUEST_BYTES + 1} bytes" in message
        assert f"limit of {DEFAULT_MAX_REQUEST_BYTES} bytes" in message
        assert MAX_REQUEST_BYTES_FLAG in message
        # The unread rest of the body was dropped: the same connection still works.
        again = session.post(v1_url(default_server), json={"instances": [ROW]}, timeout=10)
        assert again.status_code == 200, again.text
    assert_still_serving(default_server)


@pytest.mark.parametrize("route", ["v1", "v2"])
def test_a_chunked_body_over_the_limit_gets_413(default_server: Server, route: str) -> None:
    body = padded(DEFAULT_MAX_REQUEST_BYTES + 64 * 1024)

    def chunks() -> Iterator[bytes]:  # no Content-Length: requests sends it chunked
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    url = v1_url(default_server) if route == "v1" else v2_url(default_server)
    response = requests.post(url, data=chunks(), headers=JSON, timeout=60)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413, response.text
    message = response.json()["error"]
    assert "streamed" in message and f"{DEFAULT_MAX_REQUEST_BYTES} bytes" in message
    assert MAX_REQUEST_BYTES_FLAG in message
    assert_still_serving(default_server)


# --- the row limit ----------------------------------------------------------------------


def test_too_many_rows_get_413_naming_the_limit(default_server: Server) -> None:
    at_limit = sample(DEFAULT_MAX_ROWS, seed=6)
    over = np.vstack([at_limit, at_limit[:1]])
    assert requests.post(v1_url(default_server), json={"instances": at_limit.tolist()},
                         timeout=60).status_code == 200
    assert requests.post(v2_url(default_server), json=v2_body(at_limit),
                         timeout=60).status_code == 200
    refused = [requests.post(v1_url(default_server), json={"instances": over.tolist()},
                             timeout=60),
               requests.post(v2_url(default_server), json=v2_body(over), timeout=60),
               # A shape claiming a billion rows is refused before its data is read.
               requests.post(v2_url(default_server),
                             json=v2_body(np.asarray([ROW]), [10**9, N_FEATURES]),
                             timeout=60)]
    for response in refused:
        assert response.status_code == 413, response.text
        message = response.json()["error"]
        assert f"limit of {DEFAULT_MAX_ROWS} rows" in message and MAX_ROWS_FLAG in message
    assert f"{DEFAULT_MAX_ROWS + 1} rows" in refused[0].json()["error"]
    assert f"{10**9} rows" in refused[2].json()["error"]
    assert_still_serving(default_server)


def test_raw_rows_are_counted_before_they_are_read() -> None:
    from kserve.protocol.infer_type import InferInput, InferRequest

    raw = RawFeatures(numeric=["size"], categorical=["colour"], transform="t.json")
    rows = [{"size": 1.0, "colour": "red"}] * 3
    assert raw_protocol.v1_arrays({"instances": rows}, raw, max_rows=3)[0].shape == (3, 1)
    with pytest.raises(TooManyRows, match=r"'instances': 4 rows exceed .* limit of 3 rows"):
        raw_protocol.v1_arrays({"instances": [*rows, "not even a row"]}, raw, max_rows=3)
    tensors = [InferInput("size", [4], "FP64", [1.0] * 4),
               InferInput("colour", [4], "BYTES", ["red"] * 4)]
    with pytest.raises(TooManyRows, match="input 'size': 4 rows"):
        raw_protocol.v2_arrays(InferRequest("m", tensors), raw, max_rows=3)


# --- malformed bodies: 400 ----------------------------------------------------------------


BAD_V2 = {
    "not JSON": (b'{"inputs": [', "not valid JSON"),
    "not an object": (b"[1, 2]", "malformed V2 request"),
    "inputs not a list": (b'{"inputs": "x"}', "inputs"),
    "no shape": (b'{"inputs": [{"name": "input", "datatype": "FP32", "data": [1]}]}',
                 "shape"),
    "shape not numbers": (b'{"inputs": [{"name": "input", "shape": ["a"], "datatype": '
                          b'"FP32", "data": [1]}]}', "shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_V2))
def test_malformed_v2_bodies_get_400_not_422(default_server: Server, case: str) -> None:
    body, message = BAD_V2[case]
    response = requests.post(v2_url(default_server), data=body, headers=JSON, timeout=10)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_fastapi_validation_errors_are_400_with_a_message(default_server: Server) -> None:
    # The versioned V2 route is still KServe's: FastAPI parses its body.
    url = f"{default_server.url}/v2/models/model/versions/1/infer"
    response = requests.post(url, data=b'{"inputs": [', headers=JSON, timeout=10)
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["error"]
    response = requests.post(url, json={"inputs": "x"}, timeout=10)
    assert response.status_code == 400, response.text
    assert "inputs" in response.json()["error"]


# --- large requests: probes answered, memory given back ------------------------------------


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_probes_are_answered_while_a_large_request_is_worked_on(raised_server: Server,
                                                                protocol: str) -> None:
    """Readiness probes sent after the whole large body went out are answered before the
    large request's answer starts: the work on it does not hold the event loop."""
    path, body = big_request(protocol)
    sent, answered = threading.Event(), threading.Event()
    before: list[int] = []  # statuses of probes answered before the large answer began
    failures: list[BaseException] = []

    def probe() -> None:
        sent.wait()
        connection = http.client.HTTPConnection("127.0.0.1", raised_server.port, timeout=120)
        try:
            while not answered.is_set():
                for ready in READY_PATHS:
                    connection.request("GET", ready)
                    response = connection.getresponse()
                    response.read()
                    if not answered.is_set():
                        before.append(response.status)
        except BaseException as err:  # reported by the test thread below
            failures.append(err)
        finally:
            connection.close()

    prober = threading.Thread(target=probe)
    prober.start()
    connection = http.client.HTTPConnection("127.0.0.1", raised_server.port, timeout=120)
    try:
        connection.connect()
        assert connection.sock is not None
        # A small send buffer: request() returns only when the server has read nearly all
        # of the body, so the probes start while the server works on it, not uploads it.
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        connection.request("POST", path, body, JSON)
        sent.set()
        response = connection.getresponse()  # the status line: the answer has begun
        answered.set()
        assert response.status == 200, response.read()[:300]
        response.read()
    finally:
        sent.set()
        answered.set()
        connection.close()
        prober.join()
    assert not failures, failures
    assert len(before) >= 3, f"only {len(before)} probe(s) answered while the request ran"
    assert set(before) == {200}


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _peak_rss(pid: int) -> int:
    """The process's resident high-water mark (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    (line,) = [s for s in status if s.startswith("VmHWM:")]
    return int(line.split()[1]) * 1024


def _restart_peak(pid: int) -> None:
    """Linux: "5" resets VmHWM to the current resident size. Where that is refused the
    mark stays the process's lifetime peak: a looser, still valid bound."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def test_an_oversized_body_costs_at_most_the_limit_in_memory(default_server: Server) -> None:
    """The issue's 52 MB body (accepted, +427 MB resident that stayed) is refused; read in
    full it is not: the server's peak grows by less than twice the limit."""
    pid = default_server.proc.pid
    assert_still_serving(default_server)
    _restart_peak(pid)
    base = _rss(pid)
    body = padded(52 * 10**6)
    by_length = requests.post(v1_url(default_server), data=body, headers=JSON, timeout=120)
    chunked = requests.post(v1_url(default_server), headers=JSON, timeout=120,
                            data=(body[i:i + MIB] for i in range(0, len(body), MIB)))
    assert (by_length.status_code, chunked.status_code) == (413, 413)
    assert _peak_rss(pid) - base < 2 * DEFAULT_MAX_REQUEST_BYTES
    assert_still_serving(default_server)


def test_memory_of_large_requests_is_given_back(raised_server: Server) -> None:
    """After large V1 and V2 requests the server's resident memory stays within half of
    what the requests took at their peak (the issue's probe: +427 MB that stayed)."""
    pid = raised_server.proc.pid  # one worker: the server is this process
    assert_still_serving(raised_server)
    _restart_peak(pid)
    base = _rss(pid)
    sizes = []
    for protocol in ("v1", "v2"):
        path, body = big_request(protocol)
        sizes.append(len(body))
        response = requests.post(f"{raised_server.url}{path}", data=body, headers=JSON,
                                 timeout=120)
        assert response.status_code == 200, response.text[:300]
        del response
    after, peak = _rss(pid), _peak_rss(pid)
    assert peak - base >= max(sizes), "the requests should have cost memory to give back"
    assert after - base <= (peak - base) / 2, (
        f"baseline {base / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, after {after / MIB:.0f} MiB")


@pytest.mark.slow  # two spawned workers each import kserve: about a minute here
def test_two_workers_enforce_the_limits(exports: Path, started: list[Server]) -> None:
    server = _start(started, exports, "--workers", "2", MAX_ROWS_FLAG, "5",
                    MAX_REQUEST_BYTES_FLAG, "4096")
    for _ in range(4):  # spread over both workers
        too_big = requests.post(v1_url(server), data=padded(4097), headers=JSON, timeout=30)
        assert too_big.status_code == 413 and "4096 bytes" in too_big.json()["error"]
        too_many = requests.post(v1_url(server), json={"instances": [ROW] * 6}, timeout=30)
        assert too_many.status_code == 413 and "limit of 5 rows" in too_many.json()["error"]
        malformed = requests.post(v2_url(server), data=b"{", headers=JSON, timeout=30)
        assert malformed.status_code == 400, malformed.text
        assert requests.post(v1_url(server), json={"instances": [ROW] * 5},
                             timeout=30).status_code == 200
    server.stop()
