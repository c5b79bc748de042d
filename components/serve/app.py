"""What the model server adds to KServe's FastAPI app: limits, 400s and an off-loop V2 route.

KServe 0.21 builds its app in ``RESTServer.create_application`` (the module-level
``kserve.model_server.app``: middleware, routes, exception handlers), in the server
process or, with ``--workers N``, again in each spawned worker, which unpickles the
RESTServer and calls ``run``. :class:`LimitedRESTServer` is that class with the
additions below; the server turns KServe's instance into one before it starts, so the
additions travel into every worker with the pickled server (see components.serve.server).

- :class:`BodyLimit`, a pure ASGI middleware (``BaseHTTPMiddleware`` would buffer and
  copy every body): 413 before reading a body whose Content-Length is over the limit,
  or as soon as a streamed (chunked) body passes it. After a large body the last bytes
  of the answer go out only once the request's objects are freed and the free heap is
  returned to the OS, so a client that got its answer sees the memory given back.
- glibc's mmap threshold is fixed (:func:`fix_mmap_threshold`), so the large arrays of a
  request are unmapped when freed instead of fragmenting the heap.
- 400 with a message for every malformed body: FastAPI answers a V2 body it cannot
  parse with 422 and its own error list; here it is KServe's ``{"error": ...}`` and 400.
  ``TooManyRows`` becomes 413.
- ``/v2/models/{name}/infer`` ahead of KServe's own: FastAPI parses a V2 body with the
  standard library's ``json`` on the event loop (0.6 s for 19 MB here, every probe
  waiting), and encodes the answer with ``jsonable_encoder``, pure Python, on the loop
  too. This route parses with orjson (4.5x faster) and encodes with pydantic's
  serializer, on a worker thread for a large body, and answers the same JSON.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER, PredictorProtocol
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from components.serve.limits import (
    INLINE_BODY_BYTES,
    TRIM_AFTER_BYTES,
    ServingLimits,
    body_too_large_message,
)
from components.serve.protocol import TooManyRows

log = logging.getLogger(__name__)
T = TypeVar("T")
V2_INFER_PATH = "/v2/models/{model_name}/infer"
JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_LISTED_ERRORS = 5
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial threshold
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own tunable


class BodyTooLarge(Exception):
    """Raised into the app by :class:`BodyLimit` when a streamed body passes the limit."""


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    """A glibc function, or None where the C library has none (musl, macOS)."""
    library = ctypes.util.find_library("c")
    function = getattr(ctypes.CDLL(library), name, None) if library else None
    if function is not None:
        function.restype = ctypes.c_int
    return function


def release_memory() -> None:
    """Hand the heap that a large request freed back to the OS.

    glibc keeps freed small blocks in its arenas (one per thread that allocated, the
    worker threads' too); ``malloc_trim(0)`` returns their free pages (ctypes releases
    the GIL meanwhile). Measured over 40 requests of 20 MB: 4 MiB less left resident
    with the fixed mmap threshold below (which does most of the work), 50-70 MiB less
    after a V2 request without it (e.g. when MALLOC_MMAP_THRESHOLD_ is set high).
    """
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(ctypes.c_size_t(0))


def fix_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at its initial 128 KiB in this process.

    glibc raises the threshold each time a large block is freed (up to 32 MiB), so
    the arrays of the next large request come from the heap instead, fragment it
    and stay resident. Fixed, every block from 128 KiB up is mapped and unmapped on
    its own; small requests allocate nothing that large. Measured over 40 requests of
    20 MB: 61 MiB left resident instead of 85-99, and a peak of 136 MiB above the
    baseline instead of 195. A MALLOC_MMAP_THRESHOLD_ set in the environment wins.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is not None and MMAP_THRESHOLD_ENV not in os.environ:
        mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD_BYTES))


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses such a request before it gets here
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 and a message naming the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            # Not read: uvicorn drops the rest of the body and keeps the connection.
            log.warning("413: %s", body_too_large_message(self.max_bytes, length))
            await _send_error(send, 413, body_too_large_message(self.max_bytes, length))
            return
        received, exceeded, started = 0, False, False
        held: list[Message] = []

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(body_too_large_message(self.max_bytes, None))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to a cut-off body is replaced by the 413
            started = started or message["type"] == "http.response.start"
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and received >= TRIM_AFTER_BYTES:
                held.append(message)  # sent once the request's memory is released
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                for message in held:
                    await send(message)
                raise
        if exceeded and not started:
            log.warning("413: %s", body_too_large_message(self.max_bytes, None))
            await _send_error(send, 413, body_too_large_message(self.max_bytes, None))
            return
        if received >= TRIM_AFTER_BYTES:
            await asyncio.to_thread(release_memory)
        for message in held:
            await send(message)


def errors_text(errors: Any) -> str:
    """A pydantic/FastAPI error list as one line: where and what, the first few."""
    parts = []
    for error in list(errors)[:MAX_LISTED_ERRORS]:
        loc = ".".join(str(p) for p in error.get("loc", ()))
        detail = (error.get("ctx") or {}).get("error") or error.get("msg", "invalid")
        parts.append(f"{loc}: {detail}" if loc else str(detail))
    more = len(list(errors)) - MAX_LISTED_ERRORS
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def validation_error_handler(_: Request, exc: RequestValidationError) -> JSONResponse:
    """400, not FastAPI's 422: a body the route could not parse is a malformed request."""
    errors = list(exc.errors())
    invalid = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if invalid is not None:  # loc is ("body", position in the body)
        where = invalid.get("loc", ())[1:]
        detail = (invalid.get("ctx") or {}).get("error") or invalid.get("msg")
        message = (f"request body is not valid JSON: {detail}"
                   + (f" (at character {where[0]})" if where else ""))
    else:
        message = f"malformed request: {errors_text(errors)}"
    return JSONResponse(status_code=400, content={"error": message})


async def too_many_rows_handler(_: Request, exc: Exception) -> JSONResponse:
    """413 for a request of more rows than ``--max-rows``."""
    return JSONResponse(status_code=413, content={"error": str(exc)})


async def _off_loop(big: bool, fn: Callable[[], T]) -> T:
    """``fn()`` on a worker thread when the request is big, else inline."""
    return await asyncio.to_thread(fn) if big else fn()


def _decode_v2(dataplane: DataPlane, body: bytes, headers: dict[str, str],
               model_name: str) -> InferRequest:
    """KServe's InferRequest of a V2 body, or InvalidInput (400) naming the problem."""
    if INFERENCE_CONTENT_LENGTH_HEADER in headers:  # the binary tensor extension
        decoded, _ = dataplane.decode(body, headers, PredictorProtocol.REST_V2.value,
                                      model_name)
        return decoded  # a V2 decode is an InferRequest
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(f"request body is not valid JSON: {err}") from None
    try:
        request = InferenceRequest.model_validate(parsed)
    except ValidationError as err:
        raise InvalidInput(f"malformed V2 request: {errors_text(err.errors())}") from None
    return InferRequest.from_inference_request(request, model_name)


def _encode_v2(dataplane: DataPlane, model_name: str, response: Any,
               headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The answer's bytes as KServe's route would send them, and its headers."""
    content, response_headers = dataplane.encode(model_name=model_name, response=response,
                                                 headers=headers, req_attributes={})
    if isinstance(content, bytes):
        return content, response_headers
    return InferenceResponse.model_validate(content).model_dump_json().encode(), response_headers


def add_v2_infer_route(app: FastAPI, dataplane: DataPlane) -> None:
    """Serve V2 ``infer`` here, ahead of KServe's route for the same path (first match wins)."""

    async def infer(request: Request, model_name: str) -> Response:
        if not await dataplane.model_ready(model_name, True):
            raise ModelNotReady(model_name)
        body = await request.body()
        headers = dict(request.headers)
        big = len(body) > INLINE_BODY_BYTES
        infer_request = await _off_loop(
            big, functools.partial(_decode_v2, dataplane, body, headers, model_name))
        del body  # the parsed request is all that is needed from here on
        response, response_headers = await dataplane.infer(
            model_name=model_name, request=infer_request, headers=headers)
        content, encoded_headers = await _off_loop(
            big, functools.partial(_encode_v2, dataplane, model_name, response, headers))
        response_headers.update(encoded_headers)
        for name in ("content-length", "content-type"):
            response_headers.pop(name, None)
        return Response(content=content, media_type="application/json",
                        headers=response_headers)

    app.add_api_route(V2_INFER_PATH, infer, methods=["POST"], response_model=None,
                      include_in_schema=False)


class LimitedRESTServer(RESTServer):
    """KServe's REST server whose app carries the limits, the 400s and the V2 route.

    Not constructed: :func:`limit` turns KServe's instance into one (the same state),
    so that nothing of how KServe configured it has to be repeated here.
    """

    limits: ServingLimits

    def create_application(self) -> None:
        from kserve.model_server import app  # the module-level app KServe configures

        fix_mmap_threshold()  # here: once in the server process and in each worker
        add_v2_infer_route(app, self.dataplane)  # before KServe's routes: the first match wins
        super().create_application()
        # After KServe's: the last middleware added is the outermost, and these
        # handlers must not be replaced by KServe's.
        app.add_middleware(BodyLimit, max_bytes=self.limits.max_request_bytes)
        app.add_exception_handler(RequestValidationError, validation_error_handler)
        app.add_exception_handler(TooManyRows, too_many_rows_handler)


def limit(server: RESTServer, limits: ServingLimits) -> None:
    """Make KServe's REST server a :class:`LimitedRESTServer` with ``limits``."""
    server.__class__ = LimitedRESTServer
    server.limits = limits
