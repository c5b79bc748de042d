"""The manifest of an exports directory: the contract between compress/push and serving.

An exports directory holds one or more exported model files of the same trained
model (fp32 formats and compressed variants) plus ``export.json`` describing
them. The model server loads any entry of it; push logs the whole directory to
the registered model's run under ``exports/``. Most entries take a float32
matrix of transformed model inputs (rows x ``n_features``) and return
``output`` (logits or probabilities) per class. A ``raw`` entry has the fitted
transform inside: it takes raw rows (the columns of ``raw_features``, numbers
and strings, missing values allowed) and returns class probabilities; the
server serves it by default, so clients send what the training data looked like.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.errors import DataError
from components.tasks import Outputs

MANIFEST_FILE = "export.json"
EXPORTS_ARTIFACT_PATH = "exports"

FP32 = "fp32"  # the variant name of an uncompressed export
# Variants whose answer for a row depends on the other rows of the call: dynamic
# quantization measures the activations' int8 scale on each call's batch (measured:
# a row's probability moved by up to 0.04 between a 256-row and a 3,000-row call).
BATCH_DEPENDENT_VARIANTS = frozenset({"dynamic_int8"})

class ExportFormat(StrEnum):
    """Serialisation formats a model server can load."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    SAVEDMODEL = "savedmodel"
    TFLITE = "tflite"


def path_bytes(path: Path) -> int:
    """Size of a file, or of all files under a directory (a SavedModel): ``entry.bytes``."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class ExportEntry(BaseModel):
    """One exported file (or SavedModel directory), relative to the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: ExportFormat
    path: str = Field(min_length=1)
    variant: str = Field(default=FP32, description="fp32, or the compression variant.")
    bytes: int = Field(default=0, ge=0)
    input: Literal["transformed", "raw"] = "transformed"


class RawFeatures(BaseModel):
    """The raw columns a ``raw`` entry takes, in its input order, and its transform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    numeric: list[str]
    categorical: list[str]
    transform: str = Field(min_length=1, description="The fitted transform's JSON, relative.")

    @property
    def names(self) -> list[str]:
        """Every raw column: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]


class ExportManifest(BaseModel):
    """What an exports directory holds and how to feed its models."""

    model_config = ConfigDict(extra="forbid")

    framework: str = Field(min_length=1, description="The framework adapter that wrote it.")
    features: list[str]
    classes: list[str]  # [] for regression
    # What every entry's network returns; the answers follow from it (components.tasks).
    output: Outputs = Outputs.LOGITS
    entries: dict[str, ExportEntry]
    preferred: str
    raw_features: RawFeatures | None = None
    skipped: dict[str, str] = Field(
        default_factory=dict, description="Exports or variants not written, and why.")

    @model_validator(mode="after")
    def _preferred_exists(self) -> ExportManifest:
        if self.preferred not in self.entries:
            raise ValueError(f"preferred export '{self.preferred}' is not one of "
                             f"{sorted(self.entries)}")
        raw = [k for k, e in self.entries.items() if e.input == "raw"]
        if raw and self.raw_features is None:
            raise ValueError(f"raw-input entries {raw} need 'raw_features'")
        return self

    @property
    def raw_entry(self) -> str | None:
        """The entry to serve raw rows with, None without any: the compressed variant
        with the transform inside if there is one whose answers do not depend on the
        other rows of a call (not :data:`BATCH_DEPENDENT_VARIANTS`: the registered
        MLflow model and batch scoring must answer a row the same in any batch), else
        an fp32 ONNX one (onnxruntime answers a batch-1 call several times faster than
        TorchScript or a SavedModel signature), else the first."""
        raw = [k for k, e in self.entries.items()
               if e.input == "raw" and e.variant not in BATCH_DEPENDENT_VARIANTS]
        ranked = sorted(raw, key=lambda k: (self.entries[k].variant == FP32,
                                            self.entries[k].format != ExportFormat.ONNX))
        return ranked[0] if ranked else None

    @property
    def serving_default(self) -> str:
        """What a server loads unless told otherwise: raw rows in if possible."""
        return self.raw_entry or self.preferred

    @property
    def n_features(self) -> int:
        """Width of the input matrix."""
        return len(self.features)

    def save(self, directory: Path) -> Path:
        """Write ``export.json`` into ``directory``."""
        path = directory / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: Path) -> ExportManifest:
        """Read ``export.json`` of ``directory``, checking that every entry exists."""
        path = directory / MANIFEST_FILE
        if not path.is_file():
            raise DataError(f"{directory}: not an exports directory (no {MANIFEST_FILE})")
        manifest = cls.model_validate_json(path.read_text(encoding="utf-8"))
        paths = [e.path for e in manifest.entries.values()]
        if manifest.raw_features is not None:
            paths.append(manifest.raw_features.transform)
        missing = [p for p in paths if not (directory / p).exists()]
        if missing:
            raise DataError(f"{path}: exported files missing: {missing}")
        return manifest
