"""The KServe model: one entry of an exports directory behind V1 and V2 predict.

By default the manifest's ``serving_default``: the raw-input entry (the fitted
transform inside, raw rows in; see components.serve.raw_protocol) when the
exports have one, else the preferred entry (a matrix of transformed inputs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from components.errors import ConfigError
from components.export.manifest import ExportEntry, ExportManifest
from components.serve import raw_protocol
from components.serve.loaders import Runner, load_runner
from components.serve.protocol import (
    CLASS,
    INPUT_NAME,
    PROBABILITIES,
    softmax,
    v1_matrix,
    v1_response,
    v2_matrix,
    v2_response,
)

log = logging.getLogger(__name__)


class ExportsModel(kserve.Model):
    """Serves ``export`` (default: the manifest's serving default) of ``model_dir``.

    Answers class probabilities (softmax of the export's logits when its output
    is logits) and the predicted class, the same for every format.
    """

    def __init__(self, name: str, model_dir: Path, export: str | None = None) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.export = export
        self.manifest: ExportManifest | None = None
        self.entry: ExportEntry | None = None
        self._runner: Runner | None = None

    def load(self) -> bool:
        """Read the manifest and load the chosen entry with its format's loader."""
        manifest = ExportManifest.load(self.model_dir)
        key = self.export or manifest.serving_default
        if key not in manifest.entries:
            raise ConfigError(f"--export {key!r}: {self.model_dir} has exports "
                              f"{sorted(manifest.entries)}")
        self.manifest, self.entry = manifest, manifest.entries[key]
        self.export = key
        self._runner = self._load_runner()
        self.ready = True
        log.info("model '%s' ready: %s export '%s' (%s, %s)", self.name, manifest.framework,
                 key, self.entry.format.value, self.entry.variant)
        return self.ready

    # KServe pickles the model into each worker process (--workers N). A runtime
    # session is not picklable, and KServe kills a worker that does not answer
    # its liveness ping within 5 s of starting, so a worker must not load a
    # framework while unpickling: it loads its own runner on its first request.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_runner"] = None
        return state

    def _load_runner(self) -> Runner:
        assert self.manifest is not None and self.entry is not None, "load() first"
        path = self.model_dir / self.entry.path
        if self.entry.input == "raw":
            from components.export.raw import load_raw_arrays

            return load_raw_arrays(  # type: ignore[return-value]
                self.manifest.framework, self.entry.format, path)
        return load_runner(path, self.entry.format)

    def _loaded_runner(self) -> Runner:
        if self._runner is None:
            self._runner = self._load_runner()
        return self._runner

    @property
    def takes_raw_rows(self) -> bool:
        """Whether the served entry has the transform inside (raw rows in)."""
        return self.entry is not None and self.entry.input == "raw"

    def probabilities(self, x: np.ndarray | raw_protocol.RawArrays) -> np.ndarray:
        """Class probabilities of float32 rows, or of raw (numeric, categorical) arrays
        for a raw-input entry."""
        assert self.manifest is not None, "load() first"
        if self.takes_raw_rows:  # the raw models answer probabilities
            return np.asarray(self._loaded_runner()(*x), dtype=np.float32)
        scores = self._loaded_runner()(x)  # type: ignore[arg-type]
        return softmax(scores) if self.manifest.output == "logits" else scores

    def predict(self, payload: dict[str, Any] | InferRequest,
                headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        """V1 body -> ``{"predictions": [...]}``; V2 InferRequest -> InferResponse."""
        assert self.manifest is not None, "load() first"
        width, classes = self.manifest.n_features, self.manifest.classes
        raw = self.manifest.raw_features
        if self.takes_raw_rows and raw is not None:
            if isinstance(payload, InferRequest):
                return v2_response(payload, self.name,
                                   self.probabilities(raw_protocol.v2_arrays(payload, raw)),
                                   classes)
            return v1_response(self.probabilities(raw_protocol.v1_arrays(payload, raw)), classes)
        if isinstance(payload, InferRequest):
            return v2_response(payload, self.name, self.probabilities(v2_matrix(payload, width)),
                               classes)
        return v1_response(self.probabilities(v1_matrix(payload, width)), classes)

    def get_input_types(self) -> list[dict[str, Any]]:
        if self.takes_raw_rows and self.manifest and self.manifest.raw_features:
            return raw_protocol.input_types(self.manifest.raw_features)
        width = self.manifest.n_features if self.manifest else -1
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, width]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        k = len(self.manifest.classes) if self.manifest else -1
        return [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, k]},
                {"name": CLASS, "datatype": "BYTES", "shape": [-1]}]
