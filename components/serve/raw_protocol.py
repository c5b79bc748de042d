"""V1 and V2 requests of raw rows, for an entry with the fitted transform inside.

Raw rows carry the columns the training data had (``RawFeatures``): numbers
(``null`` = missing) and strings (``null`` or ``""`` = missing; words the
model never saw go to its out-of-vocabulary bucket). Every malformed request
raises KServe's ``InvalidInput`` (a 400 answer) naming the column and row; more rows
than the server's ``--max-rows`` raise ``TooManyRows`` (413) before any row is read.

- V1: ``{"instances": [{"size": 1.5, "colour": "red"}, ...]}`` (extra keys,
  such as an id or the label, are ignored), or rows as lists in the order of
  the model's input types (numeric columns, then string columns).
- V2: one input tensor per column, named by it, shape ``[N]`` or ``[N, 1]``
  (numeric datatypes for numbers, BYTES for strings); a model without string
  columns also takes a single numeric ``[N, n_numeric]`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from components.export.manifest import RawFeatures
from components.serve.limits import DEFAULT_MAX_ROWS
from components.serve.protocol import check_rows, parse_json_body, tensor_numpy, tensor_rows

RawArrays = tuple[np.ndarray, np.ndarray]  # float64 numeric (NaN = missing), object strings
_NUMERIC_TYPES = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                  "UINT8", "UINT16", "UINT32", "UINT64"}


def input_types(raw: RawFeatures) -> list[dict[str, Any]]:
    """The V2 metadata of a raw entry: one tensor per column."""
    return ([{"name": n, "datatype": "FP64", "shape": [-1]} for n in raw.numeric]
            + [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in raw.categorical])


def v1_arrays(payload: Any, raw: RawFeatures, max_rows: int = DEFAULT_MAX_ROWS) -> RawArrays:
    """The raw rows of a V1 body as the model's (numeric, categorical) arrays."""
    payload = parse_json_body(payload)
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise InvalidInput('expected a JSON object {"instances": [{"column": value, ...}, ...]}')
    instances = payload["instances"]
    if not instances:
        raise InvalidInput("'instances' must be a non-empty list of rows")
    check_rows(len(instances), max_rows, "'instances'")
    values = [_row_values(row, i, raw.names) for i, row in enumerate(instances)]
    columns = {name: [r[j] for r in values] for j, name in enumerate(raw.names)}
    return _arrays(columns, raw, "'instances'")


def _row_values(row: Any, i: int, names: list[str]) -> list[Any]:
    if isinstance(row, dict):
        absent = [n for n in names if n not in row]
        if absent:
            raise InvalidInput(f"'instances' row {i}: missing column(s) {absent} (send null "
                               "for a missing value)")
        return [row[n] for n in names]
    if isinstance(row, list) and len(row) == len(names):
        return row
    raise InvalidInput(f"'instances' row {i}: expected an object with columns {names} or a "
                       f"list of {len(names)} values")


def v2_arrays(request: InferRequest, raw: RawFeatures,
              max_rows: int = DEFAULT_MAX_ROWS) -> RawArrays:
    """The raw rows of a V2 request: a tensor per column (or one numeric matrix)."""
    for tensor in request.inputs:
        check_rows(tensor_rows(tensor), max_rows, f"input '{tensor.name}'")
    by_name = {t.name: t for t in request.inputs}
    if not raw.categorical and len(request.inputs) == 1 and raw.names[0] not in by_name:
        return _matrix_arrays(request.inputs[0], raw)
    absent = [n for n in raw.names if n not in by_name]
    if absent:
        raise InvalidInput(f"missing input tensor(s) {absent}: send one tensor per column, "
                           f"named {raw.names}")
    columns = {n: _column(by_name[n], n in raw.categorical) for n in raw.names}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise InvalidInput(f"input tensors have different row counts {sorted(lengths)}")
    return _arrays(columns, raw, "inputs")


def _column(tensor: InferInput, categorical: bool) -> list[Any] | np.ndarray:
    """A column's values: strings as a list, numbers as a float64 array (NaN = null)."""
    shape = list(tensor.shape)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidInput(f"input '{tensor.name}': shape must be [N] or [N, 1], got {shape}")
    want = "BYTES" if categorical else "a numeric datatype"
    if (tensor.datatype == "BYTES") != categorical or (
            not categorical and tensor.datatype not in _NUMERIC_TYPES):
        raise InvalidInput(f"input '{tensor.name}': datatype must be {want}, "
                           f"got {tensor.datatype}")
    try:
        values = tensor_numpy(tensor).reshape(-1)
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"input '{tensor.name}': data does not match shape {shape} "
                           f"({err})") from None
    if not categorical:
        return values.astype(np.float64)
    return [v.decode() if isinstance(v, bytes) else v for v in values.tolist()]


def _matrix_arrays(tensor: InferInput, raw: RawFeatures) -> RawArrays:
    shape = list(tensor.shape)
    if tensor.datatype not in _NUMERIC_TYPES or len(shape) != 2 or shape[1] != len(raw.numeric):
        raise InvalidInput(f"input '{tensor.name}': expected a numeric tensor of shape "
                           f"[N, {len(raw.numeric)}] or one tensor per column {raw.numeric[:5]}"
                           f"..., got {tensor.datatype} {shape}")
    try:
        x = tensor_numpy(tensor).astype(np.float64)
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"input '{tensor.name}': data does not match shape {shape} "
                           f"({err})") from None
    if not len(x):
        raise InvalidInput(f"input '{tensor.name}': no rows to predict")
    _check_finite(x, raw.numeric, f"input '{tensor.name}'")
    return x, np.empty((len(x), 0), dtype=object)


def _check_finite(x: np.ndarray, names: list[str], where: str) -> None:
    """No infinite numbers in the numeric block (NaN is a missing value, allowed)."""
    bad = np.isinf(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidInput(f"{where}: column '{names[col]}' row {row}: infinite value")


def _arrays(columns: Mapping[str, list[Any] | np.ndarray], raw: RawFeatures,
            where: str) -> RawArrays:
    """Check each value's type (numbers or null; strings or null) and build the arrays
    (no DataFrame: pandas would cost several times the model per batch-1 request)."""
    rows = len(columns[raw.names[0]])
    if not rows:
        raise InvalidInput(f"{where}: no rows to predict")
    num = np.empty((rows, len(raw.numeric)), dtype=np.float64)
    for j, name in enumerate(raw.numeric):
        col = columns[name]  # a V2 tensor's array, or JSON values to check one by one
        num[:, j] = col if isinstance(col, np.ndarray) else [
            _number(v, name, i, where) for i, v in enumerate(col)]
    _check_finite(num, raw.numeric, where)
    cat = np.empty((rows, len(raw.categorical)), dtype=object)
    for j, name in enumerate(raw.categorical):
        cat[:, j] = [_string(v, name, i, where) for i, v in enumerate(columns[name])]
    return num, cat


def _number(value: Any, name: str, row: int, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where}: column '{name}' row {row}: expected a number or null, "
                           f"got {value!r}")
    if math.isinf(value):
        raise InvalidInput(f"{where}: column '{name}' row {row}: infinite value")
    return float(value)


def _string(value: Any, name: str, row: int, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidInput(f"{where}: column '{name}' row {row}: expected a string or null, "
                       f"got {value!r}")
