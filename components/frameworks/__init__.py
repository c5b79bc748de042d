"""The framework registry: a framework name to its adapter, and nothing else keyed by name.

Each framework is one package here (``torch/``, ``tensorflow/``) holding every
module that imports it (training loop, exporters, compression variants, the
transform-in-front layer) and exposing the same names, like MLflow's flavor
modules; its ``ADAPTER`` (a :class:`~components.frameworks.base.FrameworkAdapter`)
is what the steps talk to. A third framework is one more package and one more
line in ``_PACKAGES`` (or, for code that lives elsewhere, one
:func:`register_adapter` call). Looking up an adapter imports its package but
not the framework: the adapter's methods import it when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from components.errors import ConfigError

if TYPE_CHECKING:
    from components.frameworks.base import FrameworkAdapter

_PACKAGES: dict[str, str] = {
    "torch": "components.frameworks.torch",
    "tensorflow": "components.frameworks.tensorflow",
}
_REGISTERED: dict[str, FrameworkAdapter] = {}


def framework_names() -> tuple[str, ...]:
    """Every registered framework, in registry order."""
    return (*_PACKAGES, *(n for n in _REGISTERED if n not in _PACKAGES))


def register_adapter(adapter: FrameworkAdapter) -> None:
    """Make ``adapter`` available under ``adapter.name`` in this process."""
    _REGISTERED[adapter.name] = adapter


def unregister_adapter(name: str) -> None:
    """Forget ``name`` (a registered adapter, or the cached one of a package)."""
    _REGISTERED.pop(name, None)


def get_adapter(name: str) -> FrameworkAdapter:
    """The adapter of framework ``name`` (its package imported lazily, on first use)."""
    from components.frameworks.base import FrameworkAdapter

    name = str(name)
    if name not in _REGISTERED:
        if name not in _PACKAGES:
            raise ConfigError(f"unknown framework '{name}'; choose one of: "
                              f"{', '.join(framework_names())}")
        adapter = importlib.import_module(_PACKAGES[name]).ADAPTER
        if not isinstance(adapter, FrameworkAdapter) or adapter.name != name:
            raise ConfigError(f"{_PACKAGES[name]}.ADAPTER is not the FrameworkAdapter of "
                              f"'{name}'")
        _REGISTERED[name] = adapter
    return _REGISTERED[name]


def check_framework(name: str) -> str:
    """A pydantic validator: ``name`` must be a registered framework."""
    if name not in framework_names():
        raise ValueError(f"unknown framework '{name}'; choose one of: "
                         f"{', '.join(framework_names())}")
    return name
