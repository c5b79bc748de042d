"""The manifest of an exports directory: the contract between compress/push and serving.

An exports directory holds one or more exported model files of the same trained
model (fp32 formats and compressed variants) plus ``export.json`` describing
them. The model server loads any entry of it; push logs the whole directory to
the registered model's run under ``exports/``. The files take a float32 matrix
of model inputs (rows x ``n_features``) and return ``output`` (logits or
probabilities) per class.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.errors import DataError

MANIFEST_FILE = "export.json"
EXPORTS_ARTIFACT_PATH = "exports"


class ExportFormat(StrEnum):
    """Serialisation formats a model server can load."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    SAVEDMODEL = "savedmodel"
    TFLITE = "tflite"


class ExportEntry(BaseModel):
    """One exported file (or SavedModel directory), relative to the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: ExportFormat
    path: str = Field(min_length=1)
    variant: str = Field(default="fp32", description="fp32, or the compression variant.")
    bytes: int = Field(default=0, ge=0)


class ExportManifest(BaseModel):
    """What an exports directory holds and how to feed its models."""

    model_config = ConfigDict(extra="forbid")

    framework: Literal["torch", "tensorflow"]
    features: list[str]
    classes: list[str]
    input: Literal["transformed", "raw"] = "transformed"
    output: Literal["logits", "probabilities"] = "logits"
    entries: dict[str, ExportEntry]
    preferred: str

    @model_validator(mode="after")
    def _preferred_exists(self) -> ExportManifest:
        if self.preferred not in self.entries:
            raise ValueError(f"preferred export '{self.preferred}' is not one of "
                             f"{sorted(self.entries)}")
        return self

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
        missing = [e.path for e in manifest.entries.values() if not (directory / e.path).exists()]
        if missing:
            raise DataError(f"{path}: exported files missing: {missing}")
        return manifest
