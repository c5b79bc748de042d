"""The on-disk contract between steps: Parquet splits plus a metadata file.

A dataset artifact is a directory holding one entry per split, ``train``,
``val`` and ``test``: either a folder of Parquet shards (what the Beam ingest
writes) or a single ``<split>.parquet`` file (what transform writes), plus
``metadata.json``. Feature columns are numeric; the label
column holds class indices after transform (raw values before).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from components.errors import DataError
from components.tasks import Task, TaskName, get_task

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
    classes: list[str]  # [] for regression
    image_shape: list[int] | None = None
    digest: str
    rows: dict[str, int]
    task: TaskName = TaskName.MULTICLASS
    # Regression: the label's standardisation, fitted on the train split by transform
    # (label = shift + scale * what the network learns).
    label_shift: float = 0.0
    label_scale: float = 1.0
    # Each source column's type as the source had it, in MLflow's column-type names
    # (long, double, boolean, string): ingest stores every number as float64, but the
    # registered model's signature takes rows as the training file had them.
    source_types: dict[str, str] = {}

    @property
    def n_classes(self) -> int:
        """Number of label classes (0 for regression)."""
        return len(self.classes)

    @property
    def task_object(self) -> Task:
        """The data set's task."""
        return get_task(self.task)


@dataclass(frozen=True)
class ArraySplit:
    """One split as arrays: float32 features and int64 class indices (regression: the
    float32 label in its own units)."""

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
    write_metadata(out_dir, metadata)


def write_metadata(out_dir: Path, metadata: DatasetMetadata) -> None:
    """Write ``metadata.json`` into a dataset directory."""
    (out_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2), encoding="utf-8")


def split_path(data_dir: Path, split: Split | str) -> Path:
    """The shard folder of a split if present, else its single Parquet file."""
    folder = data_dir / str(split)
    return folder if folder.is_dir() else data_dir / f"{split}.parquet"


def dataset_digest(data_dir: Path) -> str:
    """SHA-256 (first 16 hex digits) over the split names and bytes of every shard.

    Streams the files in 1 MiB chunks, so it never loads the data into memory.
    """
    digest = hashlib.sha256()
    for split in Split:
        path = split_path(data_dir, split)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        for file in files:
            digest.update(f"{split.value}/{file.name}".encode())
            with open(file, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def read_metadata(data_dir: Path) -> DatasetMetadata:
    """Read ``metadata.json`` of a dataset artifact."""
    path = data_dir / METADATA_FILE
    if not path.is_file():
        raise DataError(f"{path}: not a twinflow dataset (no {METADATA_FILE})")
    return DatasetMetadata.model_validate_json(path.read_text(encoding="utf-8"))


def read_frame(data_dir: Path, split: Split) -> pd.DataFrame:
    """One split as a DataFrame (from its shard folder or its single file)."""
    import pyarrow.dataset as pads

    path = split_path(data_dir, split)
    if not path.exists():
        raise DataError(f"{data_dir}: no '{split.value}' split")
    return pads.dataset(path, format="parquet").to_table().to_pandas()


def head_features(data_dir: Path, split: Split, meta: DatasetMetadata, rows: int) -> np.ndarray:
    """The first ``rows`` feature rows of a split, reading no more of it than that."""
    import pyarrow.dataset as pads

    path = split_path(data_dir, split)
    if not path.exists():
        raise DataError(f"{data_dir}: no '{split.value}' split")
    table = pads.dataset(path, format="parquet").head(rows, columns=meta.features)
    return table.to_pandas().to_numpy(dtype=np.float32, copy=True)


def read_arrays(data_dir: Path, split: Split, meta: DatasetMetadata) -> ArraySplit:
    """One transformed split as arrays ready for a framework."""
    frame = read_frame(data_dir, split)
    x = frame[meta.features].to_numpy(dtype=np.float32, copy=True)
    return ArraySplit(x=x, y=label_array(frame[meta.label], meta))


def label_array(column: pd.Series, meta: DatasetMetadata) -> np.ndarray:
    """A transformed label column as the trainers take it (class indices or values)."""
    dtype = np.int64 if meta.task_object.is_classifier else np.float32
    return column.to_numpy(dtype=dtype, copy=True)
