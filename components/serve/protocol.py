"""Request checks and responses of the V1 and V2 (Open Inference Protocol) APIs.

Every malformed request raises KServe's ``InvalidInput``, which the server turns
into a 400 answer carrying the message; the messages say what was expected. A
request of more rows than the server's limit raises :class:`TooManyRows` (a 413
answer, see components.serve.app) before its rows are converted to arrays.

Large requests are converted (JSON lists to arrays and back) a chunk of
``CHUNK_VALUES`` values at a time: one numpy call over millions of values holds
the GIL throughout (0.2 s for a 20 MB request here), and the server's event loop,
which answers the health and readiness probes, needs it in between.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse
from kserve.utils.numpy_codec import to_np_dtype

from components.serve.limits import DEFAULT_MAX_ROWS, too_many_rows_message

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
CLASS = "class"
PREDICTION = "prediction"  # a regression model's output: one value per row
CHUNK_VALUES = 65_536  # about 2 ms of conversion with the GIL held


class TooManyRows(InvalidInput):
    """More rows than the server's ``--max-rows``: answered 413 by the server.

    A subclass of ``InvalidInput`` so that a server without the 413 handler still
    answers 400 with the message rather than 500.
    """


def check_rows(rows: int, max_rows: int, where: str) -> None:
    """Raise :class:`TooManyRows` when ``rows`` is over ``max_rows``."""
    if rows > max_rows:
        raise TooManyRows(too_many_rows_message(rows, max_rows, where))


def tensor_rows(tensor: InferInput) -> int:
    """The row count a V2 tensor declares (its first dimension; 0 for a scalar), read
    from the shape so that an oversized tensor is refused before its data is converted."""
    shape = list(tensor.shape)
    try:
        return int(shape[0]) if shape else 0
    except (TypeError, ValueError):
        raise InvalidInput(f"input '{tensor.name}': shape must be a list of integers, "
                           f"got {shape}") from None


def parse_json_body(payload: Any) -> Any:
    """A V1 body KServe handed over as bytes (a non-JSON content type), parsed.

    KServe passes the raw bytes when the content type is not JSON (e.g. curl's
    default form type); they are parsed here so such clients still work.
    """
    if isinstance(payload, bytes | str):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            raise InvalidInput(f"request body is not JSON: {err}") from None
    return payload


def _chunks(n: int, width: int) -> range:
    """Start indices of chunks of about CHUNK_VALUES values, ``width`` values a row."""
    return range(0, n, max(1, CHUNK_VALUES // max(1, width)))


def _rows_array(instances: list[Any]) -> np.ndarray:
    """``np.asarray(instances)`` a chunk of rows at a time; ValueError if ragged."""
    first = instances[0]
    starts = _chunks(len(instances), len(first) if isinstance(first, list) else 1)
    parts = [np.asarray(instances[i:i + starts.step]) for i in starts]
    if len({p.shape[1:] for p in parts}) != 1:
        raise ValueError("the rows of different chunks differ in length")
    for part in parts:  # a non-numeric chunk, for the caller's check (concatenating
        if part.dtype.kind not in "iuf":  # would coerce it to the others' dtype)
            return part
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def tensor_numpy(tensor: InferInput) -> np.ndarray:
    """``tensor.as_numpy()``, converting a long flat JSON list a chunk at a time."""
    data, dtype = tensor.data, to_np_dtype(tensor.datatype)
    if (not isinstance(data, list) or len(data) <= CHUNK_VALUES or dtype in (None, np.object_)
            or isinstance(data[0], list)):
        return tensor.as_numpy()  # binary data, nested lists, strings: as KServe does
    parts = [np.asarray(data[i:i + CHUNK_VALUES], dtype=dtype)
             for i in range(0, len(data), CHUNK_VALUES)]
    return np.concatenate(parts).reshape(list(tensor.shape))


def listed(values: np.ndarray) -> list[Any]:
    """``values.tolist()`` a chunk of rows at a time."""
    starts = _chunks(len(values), int(np.prod(values.shape[1:])))
    out: list[Any] = []
    for i in starts:
        out.extend(values[i:i + starts.step].tolist())
    return out


def _finite_matrix(x: np.ndarray, n_features: int, where: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 (rows x n_features) matrix, or InvalidInput."""
    if x.ndim != 2 or x.shape[1] != n_features:
        raise InvalidInput(f"{where}: expected rows of {n_features} numbers (shape [N, "
                           f"{n_features}]), got shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidInput(f"{where}: no rows to predict")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = sorted({int(r) for r in np.nonzero(bad)[0][:5]})
        raise InvalidInput(f"{where}: non-finite value (NaN, null or out of float32 range) "
                           f"in row(s) {rows}")
    return x


def v1_matrix(payload: Any, n_features: int, max_rows: int = DEFAULT_MAX_ROWS) -> np.ndarray:
    """The rows of a V1 ``{"instances": [[...], ...]}`` body (bytes are parsed first)."""
    payload = parse_json_body(payload)
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('expected a JSON object {"instances": [[x1, ..., xN], ...]}')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of rows")
    check_rows(len(instances), max_rows, "'instances'")
    try:
        x = _rows_array(instances)
    except ValueError as err:  # ragged rows
        raise InvalidInput(f"'instances': rows of different lengths ({err})") from None
    if x.dtype.kind not in "iuf":
        kind = {"U": "string", "b": "boolean"}.get(x.dtype.kind, "null or non-numeric")
        raise InvalidInput(f"'instances' must hold only numbers (found {kind} values)")
    return _finite_matrix(x, n_features, "'instances'")


def v2_matrix(request: InferRequest, n_features: int,
              max_rows: int = DEFAULT_MAX_ROWS) -> np.ndarray:
    """The rows of a V2 request's single FP32 input tensor."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"expected one input tensor, got {len(request.inputs)}")
    tensor = request.inputs[0]
    check_rows(tensor_rows(tensor), max_rows, f"input '{tensor.name}'")
    if tensor.datatype != "FP32":
        raise InvalidInput(f"input '{tensor.name}': datatype must be FP32, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != n_features:
        raise InvalidInput(f"input '{tensor.name}': shape must be [N, {n_features}], got {shape}")
    try:
        x = tensor_numpy(tensor)
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"input '{tensor.name}': data does not match shape {shape} of "
                           f"numbers ({err})") from None
    return _finite_matrix(x, n_features, f"input '{tensor.name}'")


def v1_response(probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """One ``{"class", "probabilities"}`` object per row."""
    best = probabilities.argmax(axis=1)
    return {"predictions": [{CLASS: classes[i], PROBABILITIES: row}
                            for i, row in zip(best.tolist(), listed(probabilities),
                                              strict=True)]}


def v2_response(request: InferRequest, model_name: str, probabilities: np.ndarray,
                classes: list[str]) -> InferResponse:
    """FP32 ``probabilities`` [N, K] and BYTES ``class`` [N]; the id is the request's or new."""
    labels = [classes[i] for i in probabilities.argmax(axis=1).tolist()]
    outputs = [
        InferOutput(PROBABILITIES, list(probabilities.shape), "FP32",
                    listed(probabilities.ravel())),
        InferOutput(CLASS, [len(labels)], "BYTES", labels),
    ]
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model_name,
                         infer_outputs=outputs, requested_outputs=request.request_outputs)


def v1_values(values: np.ndarray) -> dict[str, Any]:
    """A regression answer: one number per row, in the label's units."""
    return {"predictions": listed(np.asarray(values, dtype=np.float64))}


def v2_values(request: InferRequest, model_name: str, values: np.ndarray) -> InferResponse:
    """FP32 ``prediction`` [N] of a regression model; the id is the request's or new."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    outputs = [InferOutput(PREDICTION, [len(flat)], "FP32", listed(flat))]
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model_name,
                         infer_outputs=outputs, requested_outputs=request.request_outputs)
