"""The KServe model: one entry of an exports directory behind V1 and V2 predict.

By default the manifest's ``serving_default``: the raw-input entry (the fitted
transform inside, raw rows in; see components.serve.raw_protocol) when the
exports have one, else the preferred entry (a matrix of transformed inputs).

:class:`ExportsModel` answers synchronously (library use, in-process callers);
the server registers :class:`ServedModel`, which KServe awaits, so that a large
request is parsed, run and answered on a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from components.errors import ConfigError
from components.export.manifest import ExportEntry, ExportFormat, ExportManifest
from components.export.runtime import load_predictor
from components.serve import raw_protocol
from components.serve.limits import DEFAULT_MAX_ROWS, INLINE_BODY_BYTES, INLINE_ROWS
from components.serve.protocol import (
    CLASS,
    INPUT_NAME,
    PREDICTION,
    PROBABILITIES,
    v1_matrix,
    v1_response,
    v1_values,
    v2_matrix,
    v2_response,
    v2_values,
)

log = logging.getLogger(__name__)


class ExportsModel(kserve.Model):
    """Serves ``export`` (default: the manifest's serving default) of ``model_dir``.

    Answers class probabilities and the predicted class, or a regression model's
    values in the label's units (the manifest's ``output`` says which), the same
    for every format.
    """

    def __init__(self, name: str, model_dir: Path, export: str | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.export = export
        self.max_rows = max_rows
        self.manifest: ExportManifest | None = None
        self.entry: ExportEntry | None = None
        self._predict: Callable[[Any], np.ndarray] | None = None

    def load(self) -> bool:
        """Read the manifest and load the chosen entry with its format's loader."""
        manifest = ExportManifest.load(self.model_dir)
        key = self.export or manifest.serving_default
        if key not in manifest.entries:
            raise ConfigError(f"--export {key!r}: {self.model_dir} has exports "
                              f"{sorted(manifest.entries)}")
        self.manifest, self.entry = manifest, manifest.entries[key]
        self.export = key
        self._predict = self._load_predict()
        self.ready = True
        log.info("model '%s' ready: %s export '%s' (%s, %s, %s input)", self.name,
                 manifest.framework, key, self.entry.format.value, self.entry.variant,
                 self.entry.input)
        return self.ready

    # KServe pickles the model into each worker process (--workers N). A runtime
    # session is not picklable, and KServe kills a worker that does not answer
    # its liveness ping within 5 s of starting, so a worker must not load a
    # framework while unpickling: it loads its own runtime on its first request.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_predict"] = None
        return state

    def _load_predict(self) -> Callable[[Any], np.ndarray]:
        """Class probabilities of a parsed request (see :meth:`_parse`)."""
        assert self.manifest is not None and self.entry is not None, "load() first"
        path = self.model_dir / self.entry.path
        answers = self.manifest.output.answers
        if self.entry.input == "raw":
            from components.export.raw_runtime import load_raw_arrays

            raw = load_raw_arrays(self.entry.format, path)
            return lambda arrays: np.asarray(answers(raw(*arrays)), dtype=np.float32)
        scores = load_predictor(self.entry.format, path)
        return lambda x: np.asarray(answers(scores(x)), dtype=np.float32)

    @property
    def takes_raw_rows(self) -> bool:
        """Whether the served entry has the transform inside (raw rows in)."""
        return self.entry is not None and self.entry.input == "raw"

    def _parse(self, payload: dict[str, Any] | InferRequest) -> Any:
        """Raw (numeric, categorical) arrays for a raw-input entry, else a float32 matrix."""
        assert self.manifest is not None, "load() first"
        raw = self.manifest.raw_features if self.takes_raw_rows else None
        limit = self.max_rows
        if isinstance(payload, InferRequest):
            return (raw_protocol.v2_arrays(payload, raw, limit) if raw
                    else v2_matrix(payload, self.manifest.n_features, limit))
        return (raw_protocol.v1_arrays(payload, raw, limit) if raw
                else v1_matrix(payload, self.manifest.n_features, limit))

    def predict(self, payload: dict[str, Any] | InferRequest,
                headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        """V1 body -> ``{"predictions": [...]}``; V2 InferRequest -> InferResponse."""
        assert self.manifest is not None, "load() first"
        rows = self._parse(payload)
        if self._predict is None:  # a worker process after unpickling (see above)
            self._predict = self._load_predict()
        answers = self._predict(rows)
        if not self.manifest.output.is_classifier:
            return (v2_values(payload, self.name, answers) if isinstance(payload, InferRequest)
                    else v1_values(answers))
        if isinstance(payload, InferRequest):
            return v2_response(payload, self.name, answers, self.manifest.classes)
        return v1_response(answers, self.manifest.classes)

    @staticmethod
    def declared_rows(payload: Any) -> int:
        """How many rows a request says it holds, read without converting them.

        A body KServe passed on as bytes (a non-JSON content type) is parsed only
        later: counted as many rows when it is large.
        """
        if isinstance(payload, InferRequest):
            firsts = [list(t.shape)[:1] for t in payload.inputs]
            return max((f[0] for f in firsts if f and isinstance(f[0], int)), default=0)
        if isinstance(payload, dict):
            instances = payload.get("instances")
            return len(instances) if isinstance(instances, list) else 0
        if isinstance(payload, bytes | str):
            return INLINE_ROWS + 1 if len(payload) > INLINE_BODY_BYTES else 0
        return 0

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.takes_raw_rows and self.manifest and self.manifest.raw_features:
            return raw_protocol.input_types(self.manifest.raw_features)
        width = self.manifest.n_features if self.manifest else -1
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, width]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self.manifest and not self.manifest.output.is_classifier:
            return [{"name": PREDICTION, "datatype": "FP32", "shape": [-1]}]
        k = len(self.manifest.classes) if self.manifest else -1
        return [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, k]},
                {"name": CLASS, "datatype": "BYTES", "shape": [-1]}]


class ServedModel(ExportsModel):
    """The model the server registers: KServe awaits its ``predict``.

    KServe calls a synchronous ``predict`` on the event loop, so a large request
    (parsing, conversion, inference, the answer's lists) stalled every other
    request and the health and readiness probes until it was done. Here a request
    of more than ``INLINE_ROWS`` rows runs on a worker thread of the loop's
    executor: inference releases the GIL, and the pure-Python parts give it up
    every few milliseconds, so probes are answered meanwhile. Small requests stay
    inline, where a thread hop would cost a noticeable share of their time.

    A TFLite interpreter must not run on two threads at once, so a TFLite entry's
    requests take turns (an asyncio lock: waiting never blocks the loop).
    """

    _turns: asyncio.Lock | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_turns", None)  # bound to the parent's loop; a worker makes its own
        return state

    @property
    def serial_runtime(self) -> bool:
        """Whether the loaded runtime may not be called from two threads at once."""
        return self.entry is not None and self.entry.format == ExportFormat.TFLITE

    async def predict(self, payload: dict[str, Any] | InferRequest,
                      headers: dict[str, str] | None = None
                      ) -> dict[str, Any] | InferResponse:
        """:meth:`ExportsModel.predict`, on a worker thread for a large request."""
        if not self.serial_runtime:
            return await self._answer(payload, headers)
        if self._turns is None:
            self._turns = asyncio.Lock()
        async with self._turns:
            return await self._answer(payload, headers)

    async def _answer(self, payload: dict[str, Any] | InferRequest,
                      headers: dict[str, str] | None) -> dict[str, Any] | InferResponse:
        if self.declared_rows(payload) <= INLINE_ROWS:
            return ExportsModel.predict(self, payload, headers)
        return await asyncio.to_thread(ExportsModel.predict, self, payload, headers)
