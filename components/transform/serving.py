"""Pick the framework's raw-input exporter (torch_layer or tf_layer), imported lazily.

Both modules expose the same functions: ``build_raw_model``, ``export_raw_model``,
``load_raw_model``, ``load_raw_arrays`` and ``raw_model_path``. The train step calls
:func:`export_raw_for_model_dir`; export code that packages a model for serving
calls ``layer_module(framework).export_raw_model(model, fitted, out_dir)``.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from components.config import Framework
from components.transform.fitted import FITTED_FILE, FittedTransform

log = logging.getLogger(__name__)
_MODULES = {Framework.TORCH: "components.transform.torch_layer",
            Framework.TENSORFLOW: "components.transform.tf_layer"}


def layer_module(framework: Framework | str) -> ModuleType:
    """The raw-input exporter of ``framework`` (imports only that framework)."""
    return importlib.import_module(_MODULES[Framework(framework)])


def export_raw_for_model_dir(framework: Framework | str, model: Any, data_dir: Path,
                             model_dir: Path) -> Path | None:
    """Export the raw-input model into ``model_dir/raw`` if ``data_dir`` holds a fitted
    transform (a transformed data set); returns its path, or None."""
    fitted_path = data_dir / FITTED_FILE
    if not fitted_path.is_file():
        return None
    layer = layer_module(framework)
    out_dir = layer.raw_model_path(model_dir).parent
    path: Path = layer.export_raw_model(model, FittedTransform.load(fitted_path), out_dir)
    log.info("raw-input model (transform + network) written to %s", path)
    return path
