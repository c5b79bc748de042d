"""Per-slice metrics: how the model does on parts of the test split.

Slices are taken on the *raw* (ingested) test split when evaluate is given it,
so slice names read in the data's own units ("mean radius (6.98, 11.7]"); the
transformed split holds standardised values of the same rows in the same order
(transform maps rows one to one), and is the fallback. Standardisation is
monotonic, so quantile bins hold the same rows either way; only the labels differ.

A column with few distinct values (categorical-like, or the label) is sliced by
value; a numeric one by quantile bins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from components.data.dataset import Split, read_frame
from components.errors import DataError

MAX_VALUES = 10  # a column with at most this many distinct values is sliced by value


def slice_column(feature: str, data_dir: Path, raw_dir: Path | None, rows: int) -> pd.Series:
    """The test-split column ``feature``, raw if ``raw_dir`` is given, aligned to ``rows``."""
    source = raw_dir if raw_dir is not None else data_dir
    frame = read_frame(source, Split.TEST)
    if feature not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:20]))
        raise DataError(f"slice_feature '{feature}' is not a column of the test split in "
                        f"{source} (columns: {shown}{', ...' if frame.shape[1] > 20 else ''})")
    if len(frame) != rows:
        raise DataError(f"{source}: test split has {len(frame)} rows, the evaluated split "
                        f"{rows}; the raw and transformed data sets do not match")
    return frame[feature].reset_index(drop=True)


def slice_labels(values: pd.Series, bins: int) -> pd.Series:
    """Per row, its slice: the value itself, or the quantile bin of a numeric column.

    The result is categorical, its categories in ascending order of value.
    """
    if not pd.api.types.is_numeric_dtype(values) or values.nunique() <= MAX_VALUES:
        order = sorted(values.unique(), key=_value_key)
        return pd.Series(pd.Categorical(values.astype(str), [str(v) for v in order]))
    binned = pd.qcut(values, q=bins, duplicates="drop", precision=3)
    return binned.cat.rename_categories([str(c) for c in binned.cat.categories])


def slice_metrics(labels: pd.Series, y_true: np.ndarray, y_pred: np.ndarray,
                  classifier: bool = True) -> pd.DataFrame:
    """Rows, accuracy and macro F1 (over the classes present) of every slice; for
    regression, RMSE and MAE in the label's units."""
    rows = []
    for name in labels.cat.categories:
        mask = (labels == name).to_numpy()
        if not mask.any():
            continue
        yt, yp = y_true[mask], y_pred[mask]
        scores = ({"accuracy": float(accuracy_score(yt, yp)),
                   "f1_macro": float(f1_score(yt, yp, average="macro", zero_division=0))}
                  if classifier else
                  {"rmse": float(np.sqrt(np.mean((yt - yp) ** 2))),
                   "mae": float(np.mean(np.abs(yt - yp)))})
        rows.append({"slice": str(name), "rows": int(mask.sum()), **scores})
    return pd.DataFrame(rows)


def _value_key(value: object) -> tuple[int, float | str]:
    """Numbers (also numeric strings such as raw labels) numerically, the rest as text."""
    try:
        return (0, float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, str(value))
