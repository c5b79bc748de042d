"""The adapters: one interface that every registered framework implements, the registry
as the only place that knows framework names, and lazy imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.config import Framework
from components.data.dataset import Split, read_arrays, read_metadata
from components.errors import ConfigError
from components.frameworks import framework_names, get_adapter
from components.frameworks.base import FrameworkAdapter
from tests.conftest import REPO

FRAMEWORK_PACKAGES = REPO / "components" / "frameworks"


@pytest.mark.parametrize("name", ["torch", "tensorflow"])
def test_each_package_adapter_implements_the_interface(name: str) -> None:
    adapter = get_adapter(name)
    assert isinstance(adapter, FrameworkAdapter) and adapter.name == name
    assert not getattr(type(adapter), "__abstractmethods__", None)
    assert adapter.job_kinds and adapter.raw_format is not None and adapter.preload
    assert name in framework_names()


def test_unknown_framework_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown framework 'jax'; choose one of: torch"):
        get_adapter("jax")


def test_adapter_lookup_imports_no_framework() -> None:
    """Attributes (image, preload list, job kinds) are readable without torch or TF."""
    code = ("import sys; from components.frameworks import framework_names, get_adapter; "
            "[get_adapter(n).preload for n in framework_names()]; "
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_torch_step_never_imports_tensorflow() -> None:
    code = ("import sys; from components.frameworks import get_adapter; "
            "import components.train.core, components.evaluate.core, components.push.core; "
            "import components.compress.core, components.serve.model; "
            "get_adapter('torch').build_model; import components.frameworks.torch.variants; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def _framework_literals(tree: ast.AST) -> list[int]:
    """Lines comparing with, or keying by, a framework name or Framework.TORCH/TENSORFLOW."""
    names = set(framework_names())
    members = {"TORCH", "TENSORFLOW"}

    def is_name(node: ast.AST) -> bool:
        return ((isinstance(node, ast.Constant) and node.value in names)
                or (isinstance(node, ast.Attribute) and node.attr in members
                    and isinstance(node.value, ast.Name) and node.value.id == "Framework"))

    def flagged(node: ast.AST) -> bool:
        if isinstance(node, ast.Compare):
            return any(map(is_name, [node.left, *node.comparators]))
        if isinstance(node, ast.Dict):
            return any(k is not None and is_name(k) for k in node.keys)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(map(is_name, node.elts))
        return False

    lines = [node.lineno for node in ast.walk(tree) if flagged(node)]
    return lines


def test_only_the_registry_and_the_framework_packages_name_frameworks() -> None:
    """No `framework is Framework.TORCH` branch, no name-keyed table, no ("torch",
    "tensorflow") loop outside components/frameworks/: everything asks the registry."""
    found = {}
    for root in ("components", "pipelines"):
        for path in sorted((REPO / root).rglob("*.py")):
            if FRAMEWORK_PACKAGES in path.parents:
                continue
            lines = _framework_literals(ast.parse(path.read_text(), str(path)))
            if lines:
                found[str(path.relative_to(REPO))] = lines
    assert found == {}


def test_the_name_check_finds_a_branch() -> None:
    """The check above is not vacuous: it flags the shapes it looks for."""
    code = ("if config.framework is Framework.TORCH: pass\n"
            "X = {Framework.TENSORFLOW: 1}\nfor fw in ('torch', 'tensorflow'): pass\n")
    assert _framework_literals(ast.parse(code)) == [1, 2, 3]


def test_trained_model_roundtrip_and_accuracy(trained: tuple[Framework, Path],
                                              transformed: tuple[Path, Path]) -> None:
    fw, model_dir = trained
    adapter = get_adapter(fw)
    meta = read_metadata(transformed[0])
    test = read_arrays(transformed[0], Split.TEST, meta)
    model = adapter.load_model(model_dir)
    proba = adapter.predict(model, test.x)
    assert proba.shape == (len(test), 10)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(1) == test.y).mean() > 0.85
    again = adapter.predict(adapter.load_model(model_dir), test.x)
    assert np.allclose(proba, again, atol=1e-6)


@pytest.mark.parametrize("fw", [Framework.TORCH, Framework.TENSORFLOW])
def test_tabular_data_trains_an_mlp(fw: Framework, tmp_path: Path, store: str) -> None:
    import mlflow

    from components.config import IngestConfig, TrainConfig
    from components.frameworks.base import ModelSpec
    from components.ingest.core import run_ingest
    from components.train.core import run_train
    from components.transform.core import run_transform

    with mlflow.start_run():
        run_ingest(IngestConfig(source="sklearn:wine"), tmp_path / "raw")
    with mlflow.start_run():
        run_transform(tmp_path / "raw", tmp_path / "data", tmp_path / "t.json")
    with mlflow.start_run():
        run_train(TrainConfig(framework=fw, epochs=15, show_progress=False),
                  tmp_path / "data", tmp_path / "model")
    assert ModelSpec.load(tmp_path / "model").kind == "mlp"
    adapter = get_adapter(fw)
    meta = read_metadata(tmp_path / "data")
    test = read_arrays(tmp_path / "data", Split.TEST, meta)
    pred = adapter.predict(adapter.load_model(tmp_path / "model"), test.x).argmax(1)
    assert (pred == test.y).mean() > 0.85


def test_the_framework_shorthands_are_the_registry() -> None:
    """`Framework` only names the registry's packages (and `both`), and the pipeline's
    choice is validated by the registry, not by that enum."""
    from components.config import BOTH, check_choice

    assert {f.value for f in Framework} - {BOTH} == set(framework_names())
    assert check_choice(BOTH) == BOTH and check_choice("torch") == "torch"
    with pytest.raises(ValueError, match="unknown framework 'jax'; choose one of: torch, "
                                         "tensorflow, both"):
        check_choice("jax")


def test_export_and_serve_never_import_the_framework_packages() -> None:
    """Format-keyed code (loaders, manifest, candidates) and the model server load any
    export without an adapter: no import of components.frameworks, at any depth."""
    offenders = []
    for folder in ("export", "serve"):
        for path in sorted((REPO / "components" / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.name}:{node.lineno}" for n in names
                              if n.startswith("components.frameworks")]
    assert offenders == []
