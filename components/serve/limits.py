"""The serving limits: how large a request the model server accepts, and how it says no.

Without limits one 52 MB body was parsed for 14 s on the event loop (readiness probes
timed out, so Kubernetes would have restarted the pod) and left the process 400 MB
larger. The limits bound both. A body above ``max_request_bytes`` is answered 413
before it is read (its Content-Length) or as soon as the streamed bytes pass the
limit (chunked); a request of more than ``max_rows`` rows is answered 413 before its
rows become arrays. 413 for both, because both say "too large", and a client can
tell a request to split from a malformed one (400).

No kserve import here: the CLI's option definitions read these constants at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from components.errors import ConfigError

MIB = 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 8 * MIB
DEFAULT_MAX_ROWS = 10_000
MAX_REQUEST_BYTES_FLAG = "--max-request-bytes"
MAX_ROWS_FLAG = "--max-rows"
MAX_REQUEST_BYTES_ENV = "MAX_REQUEST_BYTES"
MAX_ROWS_ENV = "MAX_ROWS"
# A request of more rows than this is parsed, run and answered on a worker thread, so
# that the event loop keeps answering health and readiness probes; smaller ones run
# inline (a thread hop would cost a batch-1 request a noticeable share of its time).
INLINE_ROWS = 256
# The same for a body's parsing and the answer's encoding, by the body's size.
INLINE_BODY_BYTES = 64 * 1024
# After a request body of at least this many bytes, freed heap is handed back to the
# OS (glibc malloc_trim) before the answer is sent: see components.serve.app.
TRIM_AFTER_BYTES = 1 * MIB


def size_text(n: int) -> str:
    """``n`` bytes for a message: exact bytes, and MiB when that is shorter to read."""
    return f"{n} bytes ({n / MIB:.1f} MiB)" if n >= MIB else f"{n} bytes"


def body_too_large_message(limit: int, length: int | None) -> str:
    """The 413 answer to a body over the limit (``length`` None: a chunked body)."""
    what = (f"request body of {size_text(length)}" if length is not None
            else "request body (streamed)")
    return (f"{what} exceeds the server's limit of {size_text(limit)}; send fewer rows "
            f"per request, or start the server with a larger {MAX_REQUEST_BYTES_FLAG} "
            f"(env {MAX_REQUEST_BYTES_ENV})")


def too_many_rows_message(rows: int, limit: int, where: str) -> str:
    """The 413 answer to a request of more rows than ``limit``."""
    return (f"{where}: {rows} rows exceed the server's limit of {limit} rows per request; "
            f"split the request, or start the server with a larger {MAX_ROWS_FLAG} "
            f"(env {MAX_ROWS_ENV})")


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment (the serving image's way), else ``default``."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"env {name}={value!r}: expected a whole number") from None


@dataclass(frozen=True)
class ServingLimits:
    """Per-request limits; pickled into each worker process with the REST server."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_rows: int = DEFAULT_MAX_ROWS

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1:
            raise ConfigError(f"{MAX_REQUEST_BYTES_FLAG} must be at least 1, got "
                              f"{self.max_request_bytes}")
        if self.max_rows < 1:
            raise ConfigError(f"{MAX_ROWS_FLAG} must be at least 1, got {self.max_rows}")
