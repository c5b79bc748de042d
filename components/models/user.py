"""Resolve ``--model`` and load the user's builder, with errors that name the module.

A file's source is read once, on the user's machine, and carried as text in the
model spec; a step writes it into a cache folder named by its digest and
imports it from there, so tracebacks, ``inspect`` and TorchScript see a real
file, and two runs with different code never share a module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from components.errors import ConfigError
from components.models.package import install, is_package, shipped_modules

ZOO = ("linear", "mlp", "cnn", "resnet")
IMAGE_ONLY = frozenset({"cnn", "resnet"})
BUILDER_PREFIX = "build_"  # a file defines build_<framework>(spec, **options)
_CACHE = Path(tempfile.gettempdir()) / "twinflow-model-code"
_MODULE_PREFIX = "twinflow_user_"


@dataclass(frozen=True)
class ModelRef:
    """What ``--model`` named: a zoo entry, a file (its source and digest) or a
    ``module:function``."""

    name: str  # as the user wrote it (a file: its name only), shown and logged
    source: str = ""  # a file's code
    digest: str = ""  # sha256 of ``source``

    @property
    def builtin(self) -> bool:
        """A zoo architecture."""
        return self.name in ZOO

    @property
    def is_file(self) -> bool:
        """A file's code carried as source."""
        return bool(self.source) and not is_package(self.source)

    @property
    def is_package(self) -> bool:
        """A ``module:function`` builder whose package travels with the run."""
        return is_package(self.source)


def resolve(model: str) -> ModelRef:
    """The reference of ``--model``: a zoo name, a ``.py`` file (read now) or
    ``module:function``; ConfigError naming what is wrong otherwise."""
    if not model or model in ZOO:
        return ModelRef(model)
    if model.endswith(".py") or Path(model).is_file():
        path = Path(model)
        if not path.is_file():
            raise ConfigError(f"--model {model}: no such file")
        source = path.read_text(encoding="utf-8")
        return ModelRef(path.name, source, digest(source))
    if ":" in model:
        return ModelRef(model)
    raise ConfigError(f"--model {model}: not a built-in model ({', '.join(ZOO)}), a .py file "
                      "or module:function")


def digest(source: str) -> str:
    """Content digest of user code (tagged on the runs and the registered version)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def load_builder(ref: ModelRef, framework: str) -> Callable[..., Any]:
    """The user's builder for ``framework``; a ``module:function`` builder gets
    ``framework=`` bound."""
    if ref.is_file:
        module = _import_source(ref)
        name = f"{BUILDER_PREFIX}{framework}"
        builder = getattr(module, name, None)
        if not callable(builder):
            raise ConfigError(f"model {ref.name}: defines no function {name}(spec, **options) "
                              f"for --framework {framework}")
        return builder
    module_name, _, function = ref.name.partition(":")
    if ref.is_package:
        if digest(ref.source) != ref.digest:
            raise ConfigError(f"model {ref.name}: code digest mismatch (the spec was edited)")
        install(ref.name, ref.source, ref.digest)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ConfigError(f"model {ref.name}: cannot import {module_name}: "
                          f"{type(err).__name__}: {err}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise ConfigError(f"model {ref.name}: {module_name} has no function {function!r}")

    def bound(spec: Any, **options: Any) -> Any:
        return builder(spec, framework=framework, **options)

    return bound


def user_modules() -> list[ModuleType]:
    """The user code modules imported in this process: files (see :func:`_import_source`)
    and shipped packages (components.models.package)."""
    shipped = set(shipped_modules())
    return [m for name, m in list(sys.modules.items())
            if name.startswith(_MODULE_PREFIX) or name in shipped]


def _import_source(ref: ModelRef) -> ModuleType:
    if digest(ref.source) != ref.digest:
        raise ConfigError(f"model {ref.name}: code digest mismatch (the spec was edited)")
    stem = Path(ref.name).stem.replace("-", "_")
    module_name = f"{_MODULE_PREFIX}{stem}_{ref.digest[:12]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = _CACHE / ref.digest[:16] / f"{stem}.py"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(ref.source, encoding="utf-8")
        tmp.replace(path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise ConfigError(f"model {ref.name}: importing it failed: "
                          f"{type(err).__name__}: {err}") from None
    return module


def pick_builder(ref: ModelRef, framework: str,
                 zoo: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The zoo's builder of a built-in name, else the user's."""
    return zoo[ref.name] if ref.builtin else load_builder(ref, framework)


def call_builder(builder: Callable[..., Any], ref: ModelRef, spec: Any,
                 options: dict[str, Any], model_type: type, type_hint: str) -> Any:
    """Build, turning the builder's own failure or a wrong return type into one error
    naming the model."""
    try:
        model = builder(spec, **options)
    except TypeError as err:
        raise ConfigError(f"model {ref.name}: the builder does not take these options "
                          f"{sorted(options)}: {err}") from None
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"model {ref.name}: the builder raised {type(err).__name__}: "
                          f"{err}") from None
    if not isinstance(model, model_type):
        raise ConfigError(f"model {ref.name}: the builder returned "
                          f"{type(model).__module__}.{type(model).__qualname__}, not "
                          f"{type_hint}")
    return model
