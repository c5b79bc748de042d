"""The MLflow models push logs: the registered one (raw rows in) and the bare network.

The registered version's model is the pyfunc of :mod:`components.export.pyfunc_model`
over the exports' serving default with the fitted transform inside, so
``mlflow.pyfunc.load_model("models:/NAME@champion").predict(raw_rows)`` answers what
``twinflow serve`` answers: class names and probabilities, or values. Its signature
names every raw column with the type the ingested training rows had (as MLflow's
``infer_signature`` would record it) and its input example is real test rows. The
bare network is logged beside it with its framework's flavor under ``network``,
for users who want the framework object (it takes transformed features).
"""

from __future__ import annotations

import logging
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from components.data.schema import SCHEMA_FILE
from components.export import pyfunc_model
from components.export.manifest import ExportFormat, ExportManifest

log = logging.getLogger(__name__)
REGISTERED_ARTIFACT = "model"  # the run's logged model that the version points at
NETWORK_ARTIFACT = "network"  # the bare network, framework flavor
EXAMPLE_ROWS = 5
_CASTS = {"long": "int64", "boolean": "bool"}  # column types that cannot hold a gap
# The runtime each raw-input format needs when the MLflow model loads.
_RUNTIMES = {ExportFormat.ONNX: "onnxruntime", ExportFormat.TORCHSCRIPT: "torch",
             ExportFormat.SAVEDMODEL: "tensorflow", ExportFormat.TFLITE: "tensorflow"}


def input_types(manifest: ExportManifest, source_types: dict[str, str]) -> dict[str, str]:
    """Each raw column's MLflow type: as the source had it (ingest's ``source_types``),
    else double for numbers and string for words."""
    raw = manifest.raw_features
    assert raw is not None, "a raw-input entry has raw_features"
    types = {n: "double" for n in raw.numeric} | {n: "string" for n in raw.categorical}
    return types | {n: t for n, t in source_types.items() if n in types}


def raw_signature(manifest: ExportManifest, types: dict[str, str]) -> ModelSignature:
    """Inputs: every raw column by name and type (:func:`input_types`). Outputs:
    ``prediction`` and, for a classifier, ``probability_<class>``."""
    inputs = Schema([ColSpec(t, n) for n, t in types.items()])
    if not manifest.classes:
        return ModelSignature(inputs, Schema([ColSpec("double", pyfunc_model.PREDICTION_COLUMN)]))
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string", pyfunc_model.PREDICTION_COLUMN)]
    outputs += [ColSpec("double", f"{pyfunc_model.PROBABILITY_PREFIX}{c}")
                for c in manifest.classes]
    return ModelSignature(inputs, Schema(outputs))


def input_example(rows: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame | None:
    """Up to :data:`EXAMPLE_ROWS` real rows typed as the signature says: rows with a gap in
    an integer or boolean column are passed over (the source had none there)."""
    frame = rows[[n for n in types if n in rows.columns]]
    strict = [n for n in frame.columns if types[n] in _CASTS]
    frame = frame[frame[strict].notna().all(axis=1)].head(EXAMPLE_ROWS)
    if frame.empty or len(frame.columns) != len(types):
        return None
    return frame.astype({n: _CASTS[types[n]] for n in strict}).reset_index(drop=True)


def stage_exports(exports_dir: Path, manifest: ExportManifest, out: Path,
                  schema: Path | None = None) -> Path:
    """A copy of ``exports_dir`` holding only the serving default's raw-input entry and
    its transform, with a manifest naming it preferred: the MLflow model's artifact.
    ``schema``: the training data's schema.json, copied in for batch scoring's checks."""
    key = manifest.raw_entry
    assert key is not None and manifest.raw_features is not None, "a raw-input entry"
    entry = manifest.entries[key]
    out.mkdir(parents=True)
    for rel in (entry.path, manifest.raw_features.transform):
        src, dst = exports_dir / rel, out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    manifest.model_copy(update={"entries": {key: entry}, "preferred": key,
                                "skipped": {}}).save(out)
    if schema is not None and schema.is_file():
        shutil.copy2(schema, out / SCHEMA_FILE)
    return out


def _pin(package: str) -> str:
    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def log_raw_model(exports_dir: Path, manifest: ExportManifest, source_types: dict[str, str],
                  raw: tuple[pd.DataFrame | None, Path | None], work: Path) -> str:
    """Log the raw-rows pyfunc (models from code, no pickle) in the active run; return its
    URI. ``raw``: raw test rows (for the input example) and the data's schema.json."""
    assert manifest.raw_entry is not None
    rows, schema = raw
    staged = stage_exports(exports_dir, manifest, work / pyfunc_model.EXPORTS_ARTIFACT, schema)
    types = input_types(manifest, source_types)
    fmt = manifest.entries[manifest.raw_entry].format
    info = mlflow.pyfunc.log_model(
        name=REGISTERED_ARTIFACT, python_model=pyfunc_model.__file__,
        artifacts={pyfunc_model.EXPORTS_ARTIFACT: str(staged)},
        signature=raw_signature(manifest, types),
        input_example=None if rows is None else input_example(rows, types),
        pip_requirements=[_pin("mlflow"), _pin("numpy"), _pin("pandas"), _pin(_RUNTIMES[fmt])],
    )
    log.info("logged the raw-rows MLflow model (%s export '%s')", fmt.value,
             manifest.raw_entry)
    return str(info.model_uri)
