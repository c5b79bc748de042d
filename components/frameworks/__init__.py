"""Framework adapters: PyTorch and TensorFlow behind one set of function names.

Like MLflow's flavor modules, :mod:`.pytorch` and :mod:`.tensorflow` expose the
same functions (``build_model``, ``train``, ``predict_proba``, ``save_model``,
``load_model``, ``quantize``, ``load_quantized``, ``log_model``). A step asks
:func:`get_adapter` for the one it needs; the other framework is never imported.
"""

from __future__ import annotations

import importlib
from typing import cast

from components.config import Framework
from components.errors import ConfigError
from components.frameworks.base import FrameworkAdapter

_MODULES = {
    Framework.TORCH: "components.frameworks.pytorch",
    Framework.TENSORFLOW: "components.frameworks.tensorflow",
}


def get_adapter(framework: Framework | str) -> FrameworkAdapter:
    """Import (lazily) and return the adapter module of ``framework``."""
    try:
        module = _MODULES[Framework(framework)]
    except (KeyError, ValueError):
        choices = ", ".join(f.value for f in _MODULES)
        raise ConfigError(f"unknown framework '{framework}'; choose one of: {choices}") from None
    return cast(FrameworkAdapter, importlib.import_module(module))
