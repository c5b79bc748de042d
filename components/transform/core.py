"""Transform: standardise features with statistics of the train split only.

Fitting on train alone keeps validation/test honest; the fitted parameters are
written as their own artifact so that serving can apply the very same transform.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.preprocessing import StandardScaler

from components.data.dataset import DatasetMetadata, Split, read_frame, read_metadata, write_dataset
from components.errors import DataError

log = logging.getLogger(__name__)
PARAMS_FILE = "transform.json"


class TransformParams(BaseModel):
    """The fitted transform: per-feature mean and scale, and the label classes."""

    model_config = ConfigDict(extra="forbid")

    features: list[str]
    mean: list[float]
    scale: list[float]
    classes: list[str]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Standardise a raw feature matrix (rows x features) as float32."""
        return ((x - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

    def encode_labels(self, labels: pd.Series) -> np.ndarray:
        """Map raw label values (as strings) to class indices."""
        index = {c: i for i, c in enumerate(self.classes)}
        return labels.astype(str).map(index).to_numpy(dtype=np.int64)


def run_transform(data_dir: Path, out_dir: Path, params_path: Path) -> TransformParams:
    """Fit on train, transform every split, write splits and parameters."""
    meta = read_metadata(data_dir)
    frames = {s: read_frame(data_dir, s) for s in Split}
    for split, frame in frames.items():
        _check_features(frame, meta, f"{data_dir} ({split.value})")
    params = fit(frames[Split.TRAIN], meta)
    out = {s: _apply(params, f, meta) for s, f in frames.items()}
    write_dataset(out_dir, out, meta)
    save_params(params, params_path)
    mlflow.log_params({"transform": "standardize", "n_features": len(meta.features)})
    mlflow.log_artifact(str(params_path))
    log.info("standardised %d features of %s", len(meta.features), meta.name)
    return params


def _check_features(frame: pd.DataFrame, meta: DatasetMetadata, where: str) -> None:
    """The standardiser needs finite numbers: name the columns that are not."""
    non_numeric = [c for c in meta.features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"{where}: non-numeric feature columns {non_numeric[:10]}; "
                        "categorical features are not supported by the transform yet")
    bad = ~np.isfinite(frame[meta.features].to_numpy(dtype=np.float64))
    if bad.any():
        cols = [meta.features[i] for i in np.flatnonzero(bad.any(axis=0))][:10]
        raise DataError(f"{where}: missing or infinite values in feature columns {cols}; "
                        "imputation is not supported by the transform yet")


def fit(train: pd.DataFrame, meta: DatasetMetadata) -> TransformParams:
    """Fit a StandardScaler on the train split; constant features keep scale 1."""
    scaler = StandardScaler().fit(train[meta.features].to_numpy(dtype=np.float64))
    return TransformParams(
        features=meta.features,
        mean=scaler.mean_.tolist(),
        scale=scaler.scale_.tolist(),
        classes=meta.classes,
    )


def _apply(params: TransformParams, frame: pd.DataFrame, meta: DatasetMetadata) -> pd.DataFrame:
    x = params.apply(frame[meta.features].to_numpy(dtype=np.float64))
    out = pd.DataFrame(x, columns=meta.features)
    out[meta.label] = params.encode_labels(frame[meta.label])
    return out


def save_params(params: TransformParams, path: Path) -> None:
    """Write the fitted parameters as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(params.model_dump_json(indent=2), encoding="utf-8")


def load_params(path: Path) -> TransformParams:
    """Read fitted parameters written by :func:`save_params`."""
    return TransformParams.model_validate_json(path.read_text(encoding="utf-8"))
