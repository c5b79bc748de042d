"""Transform: fit analyzers on the train split (in Beam), apply them to every split.

Fitting on train alone keeps validation/test honest. The fitted transform is
written as its own artifact (JSON, :class:`FittedTransform`) and also into the
transformed data set, so the train step can put the very same transform in
front of the network it exports (each framework package's ``raw_layer``): a
served model then takes raw rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pandas as pd

from components.data.dataset import Split, read_frame, read_metadata, write_dataset
from components.errors import DataError
from components.transform.analyze import fit_transform
from components.transform.fitted import FITTED_FILE, FittedTransform, TransformConfig

log = logging.getLogger(__name__)


def run_transform(data_dir: Path, out_dir: Path, params_path: Path,
                  config: TransformConfig | None = None) -> FittedTransform:
    """Fit on train, transform every split, write the splits and the fitted transform."""
    config = config or TransformConfig()
    meta = read_metadata(data_dir)
    fitted = fit_transform(data_dir, meta, config)
    out_meta = meta.model_copy(update={"features": fitted.output_columns(),
                                       "label_shift": fitted.label_shift,
                                       "label_scale": fitted.label_scale})
    if meta.image_shape and len(out_meta.features) != len(meta.features):
        raise DataError(f"{data_dir}: image data must keep one column per pixel; "
                        "use scale 'standard', 'minmax' or 'none' for its features")
    out = {s: _apply(fitted, read_frame(data_dir, s), f"{data_dir} ({s.value})")
           for s in Split}
    write_dataset(out_dir, out, out_meta)
    fitted.save(out_dir / FITTED_FILE)
    fitted.save(params_path)
    _log(fitted, config, params_path)
    log.info("transformed %d raw features of %s into %d columns",
             len(meta.features), meta.name, len(out_meta.features))
    return fitted


def _apply(fitted: FittedTransform, frame: pd.DataFrame, where: str) -> pd.DataFrame:
    try:
        x = fitted.apply(frame)
        y = fitted.encode_labels(frame[fitted.label])
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    out = pd.DataFrame(x, columns=fitted.output_columns())
    out[fitted.label] = y
    return out


def _log(fitted: FittedTransform, config: TransformConfig, params_path: Path) -> None:
    modes = [f.mode for f in fitted.numeric] + [c.encoding for c in fitted.categorical]
    mlflow.log_params({
        "transform": ",".join(sorted(set(modes))) or "none",
        "n_features": len(fitted.raw_features),
        "n_numeric": len(fitted.numeric), "n_categorical": len(fitted.categorical),
        "n_transformed_columns": len(fitted.output_columns()),
        "transform_options": config.model_dump_json(exclude_defaults=True)[:500],
    })
    mlflow.log_artifact(str(params_path))


def load_params(path: Path) -> FittedTransform:
    """Read a fitted transform written by :func:`run_transform`."""
    return FittedTransform.load(path)


def fitted_for(data_dir: Path) -> FittedTransform | None:
    """The fitted transform stored in a transformed data set, if any."""
    path = data_dir / FITTED_FILE
    return FittedTransform.load(path) if path.is_file() else None


__all__ = ["FittedTransform", "TransformConfig", "fitted_for",
           "load_params", "run_transform"]
