"""A contract-test double of the KFP v2beta1 REST API, on 127.0.0.1.

No KFP backend can run on this machine, so this implements just the endpoints
that kfp 2.17's client calls to create an experiment, start a run and follow it
(healthz, experiments list/create, runs create/get), with the JSON shapes of
kfp_server_api's models. It records every request and plays scripted run states.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeKfp:
    """Server state: experiments, runs, scripted states, required token."""

    token: str | None = None
    states: list[str] = field(default_factory=lambda: ["RUNNING", "SUCCEEDED"])
    requests: list[Recorded] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self) -> str:
        """Serve on a free loopback port in a thread; return the base URL."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        """Shut the server down."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def route(self, method: str, path: str, query: dict[str, list[str]],
              body: Any) -> tuple[int, Any]:
        """The API: (status, JSON body)."""
        if path == "/apis/v2beta1/healthz" and method == "GET":
            return 200, {"multi_user": False}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            wanted = _display_name(query)
            found = [e for e in self.experiments.values()
                     if wanted is None or e["display_name"] == wanted]
            return 200, {"experiments": found, "total_size": len(found)}
        if path == "/apis/v2beta1/experiments" and method == "POST":
            exp = {**body, "experiment_id": str(uuid.uuid4())}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == "/apis/v2beta1/runs" and method == "POST":
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if path.startswith("/apis/v2beta1/runs/") and method == "GET":
            run = self.runs.get(path.rsplit("/", 1)[1])
            if run is None:
                return 404, {"error": "run not found", "code": 5}
            if self.states:
                run["state"] = self.states.pop(0)
            return 200, {k: v for k, v in run.items() if k != "pipeline_spec"}
        return 404, {"error": f"no route {method} {path}", "code": 5}


def _display_name(query: dict[str, list[str]]) -> str | None:
    if "filter" not in query:
        return None
    for predicate in json.loads(query["filter"][0]).get("predicates", []):
        if predicate.get("key") == "display_name":
            return str(predicate.get("stringValue") or predicate.get("string_value"))
    return None


def _handler(api: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            api.requests.append(Recorded(method, url.path, headers, body))
            if api.token and self.headers.get("Authorization") != f"Bearer {api.token}":
                status, payload = 401, {"error": "unauthenticated", "code": 16}
            else:
                status, payload = api.route(method, url.path, parse_qs(url.query), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # keep test output quiet

    return Handler
