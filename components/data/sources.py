"""Reading the raw data sources the ingest step accepts.

``sklearn:NAME`` loads a data set shipped with scikit-learn (no download);
``.csv`` and ``.parquet`` paths are read with pandas/pyarrow. Every failure is
reported as a :class:`DataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.errors import DataError

SKLEARN_PREFIX = "sklearn:"
_SKLEARN_IMAGE_SHAPES = {"digits": [8, 8, 1]}
_SKLEARN_LOADERS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


@dataclass(frozen=True)
class RawData:
    """A loaded source: the frame, its label column and (for images) the shape."""

    name: str
    frame: pd.DataFrame
    label: str
    image_shape: list[int] | None


def load_source(source: str, label: str = "") -> RawData:
    """Load ``source`` and check that ``label`` is one of its columns."""
    if source.startswith(SKLEARN_PREFIX):
        raw = _load_sklearn(source.removeprefix(SKLEARN_PREFIX))
        if label and label != raw.label:
            raise DataError(f"{source}: its label column is '{raw.label}', not '{label}'")
        return raw
    path = Path(source)
    frame = _read_file(path)
    if not label:
        raise DataError(f"{path}: no label column given (use --label COLUMN)")
    if label not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:20]))
        raise DataError(f"{path}: label column '{label}' not found; columns are: {shown}")
    return RawData(name=source_name(source), frame=frame, label=label, image_shape=None)


def _load_sklearn(name: str) -> RawData:
    if name not in _SKLEARN_LOADERS:
        raise DataError(
            f"unknown built-in data set 'sklearn:{name}'; choose one of: "
            + ", ".join(f"sklearn:{n}" for n in _SKLEARN_LOADERS)
        )
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "label"})
    return RawData(name=name, frame=frame, label="label",
                   image_shape=_SKLEARN_IMAGE_SHAPES.get(name))


def _read_file(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    except DataError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: cannot be read: {err}") from err
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    return frame


def source_name(source: str) -> str:
    """A short data set name: ``digits`` for ``sklearn:digits``, the file stem otherwise."""
    stem = source.removeprefix(SKLEARN_PREFIX) if source.startswith(SKLEARN_PREFIX) \
        else Path(source).stem
    name = "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-")
    return name or "data"
