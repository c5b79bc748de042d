"""The two adapters: same functions, same behaviour, lazily imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from components.config import Framework
from components.data.dataset import Split, read_arrays, read_metadata
from components.errors import ConfigError
from components.frameworks import get_adapter
from components.frameworks.base import FrameworkAdapter


def test_adapters_expose_identical_functions() -> None:
    names = [n for n in dir(FrameworkAdapter) if not n.startswith("_")]
    for fw in (Framework.TORCH, Framework.TENSORFLOW):
        module = get_adapter(fw)
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, f"{fw}: missing {missing}"


def test_unknown_framework_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown framework 'jax'; choose one of: torch"):
        get_adapter("jax")


def test_torch_step_never_imports_tensorflow() -> None:
    code = ("import sys; from components.frameworks import get_adapter; "
            "import components.train.core, components.evaluate.core, components.push.core; "
            "get_adapter('torch'); print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_trained_model_roundtrip_and_accuracy(trained: tuple[Framework, Path],
                                              transformed: tuple[Path, Path]) -> None:
    fw, model_dir = trained
    adapter = get_adapter(fw)
    meta = read_metadata(transformed[0])
    test = read_arrays(transformed[0], Split.TEST, meta)
    model = adapter.load_model(model_dir)
    proba = adapter.predict_proba(model, test.x)
    assert proba.shape == (len(test), 10)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(1) == test.y).mean() > 0.85
    again = adapter.predict_proba(adapter.load_model(model_dir), test.x)
    assert np.allclose(proba, again, atol=1e-6)


def test_quantized_model_is_smaller_and_close(trained: tuple[Framework, Path],
                                              transformed: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    fw, model_dir = trained
    adapter = get_adapter(fw)
    meta = read_metadata(transformed[0])
    test = read_arrays(transformed[0], Split.TEST, meta)
    model = adapter.load_model(model_dir)
    fp32, int8 = adapter.quantize(model, None, test.x[:10], tmp_path)  # type: ignore[arg-type]
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size
    ref = adapter.predict_proba(model, test.x).argmax(1)
    assert (adapter.load_quantized(fp32)(test.x).argmax(1) == ref).mean() > 0.99
    assert (adapter.load_quantized(int8)(test.x).argmax(1) == ref).mean() > 0.95


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
    pred = adapter.predict_proba(adapter.load_model(tmp_path / "model"), test.x).argmax(1)
    assert (pred == test.y).mean() > 0.85
