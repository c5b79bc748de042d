"""Request checks and responses of the V1 and V2 (Open Inference Protocol) APIs.

Every malformed request raises KServe's ``InvalidInput``, which the server turns
into a 400 answer carrying the message; the messages say what was expected.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
CLASS = "class"
PREDICTION = "prediction"  # a regression model's output: one value per row


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


def v1_matrix(payload: Any, n_features: int) -> np.ndarray:
    """The rows of a V1 ``{"instances": [[...], ...]}`` body.

    KServe hands over the raw bytes when the content type is not JSON (e.g.
    curl's default form type); they are parsed here so such clients still work.
    """
    if isinstance(payload, bytes | str):
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            raise InvalidInput(f"request body is not JSON: {err}") from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidInput('expected a JSON object {"instances": [[x1, ..., xN], ...]}')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list of rows")
    try:
        x = np.asarray(instances)
    except ValueError as err:  # ragged rows
        raise InvalidInput(f"'instances': rows of different lengths ({err})") from None
    if x.dtype.kind not in "iuf":
        kind = {"U": "string", "b": "boolean"}.get(x.dtype.kind, "null or non-numeric")
        raise InvalidInput(f"'instances' must hold only numbers (found {kind} values)")
    return _finite_matrix(x, n_features, "'instances'")


def v2_matrix(request: InferRequest, n_features: int) -> np.ndarray:
    """The rows of a V2 request's single FP32 input tensor."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"expected one input tensor, got {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype != "FP32":
        raise InvalidInput(f"input '{tensor.name}': datatype must be FP32, got {tensor.datatype}")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != n_features:
        raise InvalidInput(f"input '{tensor.name}': shape must be [N, {n_features}], got {shape}")
    try:
        x = tensor.as_numpy()
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"input '{tensor.name}': data does not match shape {shape} of "
                           f"numbers ({err})") from None
    return _finite_matrix(x, n_features, f"input '{tensor.name}'")


def v1_response(probabilities: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """One ``{"class", "probabilities"}`` object per row."""
    best = probabilities.argmax(axis=1)
    return {"predictions": [{CLASS: classes[i], PROBABILITIES: row}
                            for i, row in zip(best.tolist(), probabilities.tolist(),
                                              strict=True)]}


def v2_response(request: InferRequest, model_name: str, probabilities: np.ndarray,
                classes: list[str]) -> InferResponse:
    """FP32 ``probabilities`` [N, K] and BYTES ``class`` [N]; the id is the request's or new."""
    labels = [classes[i] for i in probabilities.argmax(axis=1).tolist()]
    outputs = [
        InferOutput(PROBABILITIES, list(probabilities.shape), "FP32",
                    probabilities.ravel().tolist()),
        InferOutput(CLASS, [len(labels)], "BYTES", labels),
    ]
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model_name,
                         infer_outputs=outputs, requested_outputs=request.request_outputs)


def v1_values(values: np.ndarray) -> dict[str, Any]:
    """A regression answer: one number per row, in the label's units."""
    return {"predictions": np.asarray(values, dtype=np.float64).tolist()}


def v2_values(request: InferRequest, model_name: str, values: np.ndarray) -> InferResponse:
    """FP32 ``prediction`` [N] of a regression model; the id is the request's or new."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    outputs = [InferOutput(PREDICTION, [len(flat)], "FP32", flat.tolist())]
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model_name,
                         infer_outputs=outputs, requested_outputs=request.request_outputs)
