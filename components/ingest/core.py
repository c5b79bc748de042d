"""Ingest: raw source -> validated, stratified train/val/test Parquet splits.

The split is seeded and stratified so that both frameworks (and reruns) see the
same rows. The dataset digest comes from MLflow's dataset tracking, so the
registry can tell which data a model was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from sklearn.model_selection import train_test_split

from components.config import IngestConfig
from components.data.dataset import DatasetMetadata, Split, write_dataset
from components.data.sources import RawData, load_source
from components.errors import DataError

log = logging.getLogger(__name__)


def run_ingest(config: IngestConfig, out_dir: Path) -> DatasetMetadata:
    """Load, validate, split and write the data; log counts and inputs to the active run."""
    raw = load_source(config.source, config.label)
    features = _validate(raw, config.source)
    frame = raw.frame[[*features, raw.label]].copy()
    frame[raw.label] = frame[raw.label].astype(str)
    splits = _split(frame, raw.label, config)
    classes = sorted(frame[raw.label].unique().tolist(), key=_class_sort_key)
    dataset = from_pandas(frame, name=raw.name, targets=raw.label)
    meta = DatasetMetadata(
        name=raw.name,
        source=config.source,
        label=raw.label,
        features=features,
        classes=classes,
        image_shape=raw.image_shape,
        digest=dataset.digest,
        rows={s.value: len(f) for s, f in splits.items()},
    )
    write_dataset(out_dir, splits, meta)
    _track(config, meta, splits)
    log.info("ingested %s: %s rows, %d classes, digest %s",
             raw.name, meta.rows, meta.n_classes, meta.digest)
    return meta


def _validate(raw: RawData, where: str) -> list[str]:
    """Check label and features; return the feature column names."""
    frame, label = raw.frame, raw.label
    features = [str(c) for c in frame.columns if c != label]
    if not features:
        raise DataError(f"{where}: no feature columns besides the label '{label}'")
    if frame[label].isna().any():
        rows = frame.index[frame[label].isna()].tolist()[:5]
        raise DataError(f"{where}: label column '{label}' has missing values (rows {rows})")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"{where}: non-numeric feature columns {non_numeric}; "
                        "categorical features are not supported yet")
    values = frame[features].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        cols = [features[i] for i in np.flatnonzero(bad.any(axis=0))][:10]
        raise DataError(f"{where}: missing or infinite values in feature columns {cols}")
    counts = frame[label].astype(str).value_counts()
    if len(counts) < 2:
        raise DataError(f"{where}: label column '{label}' has a single class "
                        f"'{counts.index[0]}'; need at least two")
    return features


def _split(frame: pd.DataFrame, label: str, config: IngestConfig) -> dict[Split, pd.DataFrame]:
    """Seeded, stratified split into train/val/test."""
    counts = frame[label].value_counts()
    small = counts[counts < 3]
    if not small.empty:
        raise DataError(f"{config.source}: classes {small.index.tolist()} have fewer than 3 rows; "
                        "cannot split into train/validation/test")
    holdout = config.val_fraction + config.test_fraction
    try:
        train, rest = train_test_split(frame, test_size=holdout, random_state=config.seed,
                                       stratify=frame[label])
        val, test = train_test_split(rest, test_size=config.test_fraction / holdout,
                                     random_state=config.seed, stratify=rest[label])
    except ValueError as err:
        raise DataError(f"{config.source}: cannot split {len(frame)} rows: {err}") from err
    return {Split.TRAIN: train, Split.VAL: val, Split.TEST: test}


def _track(config: IngestConfig, meta: DatasetMetadata, splits: dict[Split, pd.DataFrame]) -> None:
    mlflow.log_params(config.model_dump())
    mlflow.log_metrics({f"rows_{k}": float(v) for k, v in meta.rows.items()})
    mlflow.set_tags({"twinflow.dataset": meta.name, "twinflow.dataset_digest": meta.digest})
    for split, frame in splits.items():
        ds = from_pandas(frame, name=f"{meta.name}-{split.value}", targets=meta.label)
        mlflow.log_input(ds, context=split.value)


def _class_sort_key(value: str) -> tuple[int, float | str]:
    """Numeric labels sort numerically ('2' < '10'), others alphabetically."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)
