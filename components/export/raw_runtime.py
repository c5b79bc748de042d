"""Load a raw-input export (the fitted transform inside) as a predict function, by format.

The counterpart of :mod:`components.export.runtime` for models that take raw
rows: two arrays, ``numeric`` (float64, NaN = missing) and ``categorical``
(object strings, '' = missing), columns in ``RawFeatures`` order. One loader
per file format, each importing only its own runtime: the model server and the
fresh-process check need no framework adapter (and no training code) to run a
shipped file, whichever framework wrote it. The loaders live in
:mod:`components.export.pyfunc_model`, which the registered MLflow model runs too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from components.export.manifest import ExportFormat
from components.export.pyfunc_model import PredictArrays, load_raw_arrays
from components.tasks import Outputs
from components.transform.fitted import FITTED_FILE, FittedTransform

PredictRaw = Callable[[pd.DataFrame], np.ndarray]
__all__ = ["PredictArrays", "PredictRaw", "load_raw_arrays", "load_raw_predictor"]


def load_raw_predictor(fmt: ExportFormat | str, path: Path,
                       outputs: Outputs = Outputs.LOGITS) -> PredictRaw:
    """Answers on raw rows (a DataFrame): class probabilities, or values; the transform
    JSON sits beside ``path`` and only orders the columns (the transform itself runs
    inside the model)."""
    predict = load_raw_arrays(fmt, path)
    fitted = FittedTransform.load(path.parent / FITTED_FILE)
    return lambda frame: outputs.answers(predict(*fitted.raw_arrays(frame)))
