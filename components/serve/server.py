"""Start KServe's ModelServer for one exports model, on a chosen address.

KServe 0.21 hard-codes ``0.0.0.0`` in its REST server's uvicorn config and
starts gRPC by default; a local server must listen on 127.0.0.1 only, so the
address is set on that config after KServe builds it and before it binds.
Access logging (four lines per request, about a third of the throughput) and
per-request latency logging are turned off in every worker. The REST server becomes
a :class:`components.serve.app.LimitedRESTServer` at the same point, so the request
limits, the 400 answers and the off-loop V2 route hold in every worker too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.errors import ConfigError
from components.serve.limits import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_ROWS, ServingLimits

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
PING_TIMEOUT = 60.0


@dataclass(frozen=True)
class ServeOptions:
    """What to serve and where. Exactly one of ``model_dir`` and ``model``."""

    model_dir: Path | None = None
    model: str | None = None
    export: str | None = None
    name: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_rows: int = DEFAULT_MAX_ROWS

    @property
    def limits(self) -> ServingLimits:
        """The per-request limits (validated: at least 1 each)."""
        return ServingLimits(max_request_bytes=self.max_request_bytes, max_rows=self.max_rows)


def build_model(options: ServeOptions):  # type: ignore[no-untyped-def]  # kserve is untyped
    """The loaded :class:`ServedModel` the options describe."""
    from components.serve.model import ServedModel
    from components.serve.resolve import download_exports

    if (options.model_dir is None) == (options.model is None):
        raise ConfigError("serve: give exactly one of --model-dir DIR and --model NAME[@alias]")
    if options.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {options.workers}")
    limits = options.limits
    if options.model is not None:
        registered, directory = download_exports(options.model)
        name = options.name or registered
    else:
        directory, name = Path(options.model_dir or ""), options.name or "model"
    model = ServedModel(name, directory, options.export, max_rows=limits.max_rows)
    model.load()
    return model


def _quiet_log_config() -> str:
    """KServe's log config with access and latency lines off, as a file every worker reads."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config = json.loads(json.dumps(KSERVE_LOG_CONFIG))
    config["loggers"]["uvicorn.access"]["level"] = "WARNING"
    config["loggers"]["kserve.trace"]["level"] = "WARNING"
    fd, path = tempfile.mkstemp(prefix="twinflow-serve-log-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(config, fh)
    return path


def _patient_liveness(multi: Any, timeout: float = PING_TIMEOUT) -> None:
    """Give KServe's worker liveness pings ``timeout`` seconds instead of 5.

    The parent kills a worker that does not answer a ping within 5 s, and a
    spawned worker needs longer than that just to import kserve on a busy
    machine, so it would be killed and restarted forever. Each check binds the
    longer timeout to the workers' ``is_alive`` before KServe's own check runs.
    """
    check = multi.keep_subprocess_alive

    async def keep_alive(sockets: Any) -> None:
        for process in multi._processes:
            process.is_alive = functools.partial(type(process).is_alive, process,
                                                 timeout=timeout)
        await check(sockets)

    multi.keep_subprocess_alive = keep_alive


def _use_uvloop() -> None:
    """Run the single-process server on uvloop.

    KServe's ``start`` runs its REST server under ``asyncio.run``, so uvicorn's own
    loop choice never applies to it (workers it spawns do pick uvloop): without this
    the one-worker server runs on the slower default asyncio loop. KServe's
    ``setup_event_loop`` then asks for the current loop, which uvloop's policy only
    hands out once one is set, so a fresh one is set here.
    """
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())


def serve(options: ServeOptions) -> None:
    """Load the model and serve it until interrupted (blocks)."""
    from kserve import ModelServer, model_server

    from components.serve.app import limit

    limits = options.limits

    class LocalModelServer(ModelServer):
        """ModelServer bound to ``options.host`` instead of KServe's fixed 0.0.0.0,
        whose REST server enforces ``limits``."""

        def setup_event_loop(self) -> None:
            # start() calls this after building the REST server(s), before they bind
            # or spawn workers (which unpickle the REST server, limits included).
            multi = self._rest_multiprocess_server
            rest = self._rest_server or getattr(multi, "_rest_server", None)
            if rest is not None:
                rest.config.host = options.host
                limit(rest, limits)
            if multi is not None:
                _patient_liveness(multi)
            _use_uvloop()
            super().setup_event_loop()

    model = build_model(options)
    log_config = _quiet_log_config()
    model_server.args.log_config_file = log_config  # read by ModelServer and each worker
    try:
        server = LocalModelServer(http_port=options.port, workers=options.workers,
                                  enable_grpc=False, enable_latency_logging=False,
                                  enable_docs_url=False)
        log.info("serving '%s' on http://%s:%d (%d worker(s); at most %d bytes and %d rows "
                 "per request)", model.name, options.host, options.port, options.workers,
                 limits.max_request_bytes, limits.max_rows)
        server.start([model])
    finally:
        Path(log_config).unlink(missing_ok=True)
