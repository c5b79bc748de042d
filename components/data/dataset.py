"""The on-disk contract between steps: Parquet splits plus a metadata file.

A dataset artifact is a directory holding ``train.parquet``, ``val.parquet``,
``test.parquet`` and ``metadata.json``. Feature columns are numeric; the label
column holds class indices after transform (raw values before).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from components.errors import DataError

METADATA_FILE = "metadata.json"


class Split(StrEnum):
    """The three splits every dataset artifact holds."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class DatasetMetadata(BaseModel):
    """What later steps need to know about the data without reading it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: str
    label: str
    features: list[str]
    classes: list[str]
    image_shape: list[int] | None = None
    digest: str
    rows: dict[str, int]

    @property
    def n_classes(self) -> int:
        """Number of label classes."""
        return len(self.classes)


@dataclass(frozen=True)
class ArraySplit:
    """One split as arrays: float32 features and int64 class indices."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def write_dataset(
    out_dir: Path, splits: dict[Split, pd.DataFrame], metadata: DatasetMetadata
) -> None:
    """Write the three splits and the metadata file into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, frame in splits.items():
        frame.to_parquet(out_dir / f"{split.value}.parquet", index=False)
    (out_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2), encoding="utf-8")


def read_metadata(data_dir: Path) -> DatasetMetadata:
    """Read ``metadata.json`` of a dataset artifact."""
    path = data_dir / METADATA_FILE
    if not path.is_file():
        raise DataError(f"{path}: not a twinflow dataset (no {METADATA_FILE})")
    return DatasetMetadata.model_validate_json(path.read_text(encoding="utf-8"))


def read_frame(data_dir: Path, split: Split) -> pd.DataFrame:
    """One split as a DataFrame."""
    return pd.read_parquet(data_dir / f"{split.value}.parquet")


def read_arrays(data_dir: Path, split: Split, meta: DatasetMetadata) -> ArraySplit:
    """One transformed split as arrays ready for a framework."""
    frame = read_frame(data_dir, split)
    x = frame[meta.features].to_numpy(dtype=np.float32, copy=True)
    y = frame[meta.label].to_numpy(dtype=np.int64, copy=True)
    return ArraySplit(x=x, y=y)
