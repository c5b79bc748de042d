"""Compress and push: int8 re-measured; registration, aliases and the KServe manifest."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.compress.core import run_compress
from components.config import CompressConfig, Framework, PushConfig
from components.push.core import run_push
from tests.conftest import SHARED


def test_compress_measures_int8(trained: tuple[Framework, Path], transformed: tuple[Path, Path],
                                tmp_path: Path, active_run: mlflow.ActiveRun) -> None:
    fw, model_dir = trained
    result = run_compress(CompressConfig(framework=fw), transformed[0], model_dir, tmp_path)
    assert result.size_ratio < 0.6
    assert result.fp32_accuracy - result.int8_accuracy < 0.05
    suffix = ".ts" if fw == "torch" else ".tflite"
    assert [p.name for p in tmp_path.iterdir()] == [f"model_int8{suffix}"]
    metrics = MlflowClient().get_run(active_run.info.run_id).data.metrics
    assert metrics["size_ratio"] == pytest.approx(result.size_ratio)


def _push(fw: Framework, model_dir: Path, data_dir: Path, tmp: Path, name: str) -> str:
    compressed = tmp / "compressed"
    compressed.mkdir(exist_ok=True)
    (compressed / "model_int8.bin").write_bytes(b"int8")
    with mlflow.start_run():
        result = run_push(PushConfig(framework=fw, model_name=name), data_dir, model_dir,
                          compressed, {"test_accuracy": 0.95}, tmp / "isvc.yaml")
    return result.version


def test_push_registers_moves_champion_and_keeps_previous(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path], tmp_path: Path) -> None:
    fw, model_dir = trained
    name = f"push-{fw.value}"
    first = _push(fw, model_dir, transformed[0], tmp_path, name)
    second = _push(fw, model_dir, transformed[0], tmp_path, name)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == second
    assert str(client.get_model_version_by_alias(name, "previous-champion").version) == first
    version = client.get_model_version(name, second)
    assert version.tags["framework"] == fw.value
    assert version.tags["test_accuracy"] == "0.95" and version.tags["dataset_digest"]
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    sample = json.loads(loaded.metadata.get_input_schema().to_json())
    assert sample, "the model carries an input signature"


def test_manifest_is_a_valid_inference_service(trained: tuple[Framework, Path],
                                               transformed: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    crd = SHARED / "crds" / "serving.kserve.io_inferenceservices.yaml"
    if not crd.is_file():
        pytest.skip("../shared/crds is absent")
    import jsonschema

    fw, model_dir = trained
    _push(fw, model_dir, transformed[0], tmp_path, f"Manifest_{fw.value}")
    manifest = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    spec = yaml.safe_load(crd.read_text())
    version = next(v for v in spec["spec"]["versions"] if v["name"] == "v1beta1")
    jsonschema.validate(manifest, version["schema"]["openAPIV3Schema"])
    assert manifest["metadata"]["name"] == f"manifest-{fw.value}"
    assert manifest["spec"]["predictor"]["model"]["storageUri"]


def test_pushing_the_same_pipeline_run_twice_creates_nothing_new(
        trained: tuple[Framework, Path], transformed: tuple[Path, Path], tmp_path: Path) -> None:
    fw, model_dir = trained
    name = f"idempotent-{fw.value}"
    (tmp_path / "int8").mkdir()
    versions = []
    with mlflow.start_run():  # the pipeline's parent run; its push step runs twice (a retry)
        for attempt in range(2):
            with mlflow.start_run(nested=True):
                result = run_push(PushConfig(framework=fw, model_name=name), transformed[0],
                                  model_dir, tmp_path / "int8", {"test_accuracy": 0.9},
                                  tmp_path / f"isvc-{attempt}.yaml")
            versions.append(result.version)
    assert versions == ["1", "1"]
    assert len(MlflowClient().search_model_versions(f"name = '{name}'")) == 1


def test_rollback_swaps_champion_and_previous(trained: tuple[Framework, Path],
                                              transformed: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    from components.errors import TwinflowError
    from components.push.core import rollback

    fw, model_dir = trained
    name = f"rollback-{fw.value}"
    first = _push(fw, model_dir, transformed[0], tmp_path, name)
    with pytest.raises(TwinflowError, match="no 'champion' and 'previous-champion' pair"):
        rollback(name)
    second = _push(fw, model_dir, transformed[0], tmp_path, name)
    assert rollback(name) == (first, second)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == first
    assert rollback(name) == (second, first)  # undo
