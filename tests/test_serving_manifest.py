"""The InferenceService push writes: valid against KServe's CRD for each predictor kind,
with the serving image's args accepted by the server's own entrypoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.errors import ConfigError, DataError
from components.export.manifest import ExportEntry, ExportFormat, ExportManifest
from components.push.serving import (
    LOOP_STALL_S_PER_MIB,
    inference_service,
    probe_timeout_seconds,
    pushed_inference_service,
)
from components.serve.__main__ import build_parser
from components.serve.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_ROWS,
    MIB,
    ServingLimits,
)
from tests.conftest import SHARED

CRD = SHARED / "crds" / "serving.kserve.io_inferenceservices.yaml"
URI = "s3://mlflow/1/abc/artifacts/exports"


@pytest.fixture(scope="module")
def schema() -> Any:
    """A validator of the CRD's v1beta1 schema.

    Built once and without ``check_schema`` (``jsonschema.validate`` re-checks the
    upstream CRD's huge schema against the metaschema on every call: ~20 s here).
    """
    if not CRD.is_file():
        pytest.skip("../shared/crds is absent")
    import jsonschema

    spec = yaml.safe_load(CRD.read_text())
    version = next(v for v in spec["spec"]["versions"] if v["name"] == "v1beta1")
    openapi = version["schema"]["openAPIV3Schema"]
    return jsonschema.validators.validator_for(openapi)(openapi)


def validate(manifest: dict[str, Any], validator: Any) -> None:
    # Through YAML and back: what push writes to disk is what must be valid.
    validator.validate(yaml.safe_load(yaml.safe_dump(manifest)))


def exports(**paths: tuple[ExportFormat, str]) -> ExportManifest:
    return ExportManifest(framework="torch", features=["a", "b"], classes=["x", "y"],
                          entries={k: ExportEntry(format=f, path=p)
                                   for k, (f, p) in paths.items()},
                          preferred=next(iter(paths)))


ALL = exports(onnx=(ExportFormat.ONNX, "model.onnx"),
              torchscript=(ExportFormat.TORCHSCRIPT, "model.ts"),
              savedmodel=(ExportFormat.SAVEDMODEL, "savedmodel/1"),
              tflite=(ExportFormat.TFLITE, "model_int8.tflite"))


@pytest.mark.parametrize("export", sorted(ALL.entries))
def test_custom_predictor_runs_the_serving_image_on_every_export(
        export: str, schema: Any) -> None:
    isvc = inference_service("Digits_Torch", "3", URI, "models", ALL, export=export)
    validate(isvc, schema)
    assert isvc["metadata"]["name"] == "digits-torch"
    assert isvc["metadata"]["annotations"]["twinflow.io/export"] == export
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].endswith("/serving:0.1.0")
    assert {"name": "STORAGE_URI", "value": URI} in container["env"]
    args = build_parser().parse_args(container["args"])
    assert (str(args.model_dir), args.export, args.name, args.port) == (
        "/mnt/models", export, "digits-torch", 8080)
    assert args.host == "0.0.0.0"  # in a pod the server must be reachable on the pod IP
    assert (args.max_request_bytes, args.max_rows) == (DEFAULT_MAX_REQUEST_BYTES,
                                                       DEFAULT_MAX_ROWS)


@pytest.mark.parametrize("limits", [ServingLimits(), ServingLimits(256 * MIB, 1_000_000)],
                         ids=["default", "raised"])
def test_the_container_carries_the_limits_and_probes_sized_to_them(
        limits: ServingLimits, schema: Any) -> None:
    isvc = inference_service("m", "1", URI, "ns", ALL, limits=limits)
    validate(isvc, schema)
    (container,) = isvc["spec"]["predictor"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.max_request_bytes, args.max_rows) == (limits.max_request_bytes,
                                                       limits.max_rows)
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe",
                                                 "livenessProbe")}
    assert probes["readinessProbe"]["httpGet"] == {"path": "/v2/models/m/ready", "port": 8080}
    assert probes["startupProbe"]["httpGet"] == probes["readinessProbe"]["httpGet"]
    assert probes["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    # The event loop may stall on one request of the largest size for about
    # LOOP_STALL_S_PER_MIB per MiB: every probe waits well beyond that, and answers
    # come in before the next probe is due.
    stall = limits.max_request_bytes / MIB * LOOP_STALL_S_PER_MIB
    for probe in probes.values():
        assert probe["timeoutSeconds"] == probe_timeout_seconds(limits) >= 10 * stall
        assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    # Liveness gives up last: a slow stretch marks the pod unready before it restarts it.
    ready, live = probes["readinessProbe"], probes["livenessProbe"]
    assert (live["periodSeconds"] * live["failureThreshold"]
            > ready["periodSeconds"] * ready["failureThreshold"])


def test_default_export_is_the_preferred_one(schema: Any) -> None:
    isvc = inference_service("m", "1", URI, "ns", ALL)
    validate(isvc, schema)
    assert isvc["metadata"]["annotations"]["twinflow.io/export"] == "onnx"


def test_builtin_runtimes_for_onnx_and_savedmodel(schema: Any) -> None:
    onnx = inference_service("m", "1", URI + "/", "ns", ALL, export="onnx", predictor="builtin")
    validate(onnx, schema)
    assert onnx["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "onnx"}, "protocolVersion": "v2", "storageUri": URI}
    tf = inference_service("m", "1", URI, "ns", ALL, export="savedmodel", predictor="builtin")
    validate(tf, schema)
    assert tf["spec"]["predictor"]["model"] == {
        "modelFormat": {"name": "tensorflow"}, "storageUri": f"{URI}/savedmodel"}


@pytest.mark.parametrize(("export", "message"), [
    ("tflite", "no built-in runtime for tflite"),
    ("torchscript", "no built-in runtime for torchscript"),
])
def test_builtin_refuses_formats_kserve_cannot_serve(export: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        inference_service("m", "1", URI, "ns", ALL, export=export, predictor="builtin")


def test_builtin_needs_the_layout_its_runtime_loads() -> None:
    odd = exports(onnx=(ExportFormat.ONNX, "fp32/net.onnx"),
                  savedmodel=(ExportFormat.SAVEDMODEL, "savedmodel"))
    with pytest.raises(ConfigError, match=r"model\.onnx at the top"):
        inference_service("m", "1", URI, "ns", odd, export="onnx", predictor="builtin")
    with pytest.raises(ConfigError, match="numeric version directory"):
        inference_service("m", "1", URI, "ns", odd, export="savedmodel", predictor="builtin")


def test_canary_traffic_percent(schema: Any) -> None:
    isvc = inference_service("m", "2", URI, "ns", ALL, canary_traffic_percent=10)
    validate(isvc, schema)
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert "canaryTrafficPercent" not in inference_service("m", "2", URI, "ns", ALL
                                                           )["spec"]["predictor"]
    with pytest.raises(ConfigError, match="0-100, got 101"):
        inference_service("m", "2", URI, "ns", ALL, canary_traffic_percent=101)


def test_unknown_export_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'int8' is not one of \['onnx'"):
        inference_service("m", "1", URI, "ns", ALL, export="int8")


def test_without_exports_the_mlflow_model_is_served(schema: Any) -> None:
    isvc = inference_service("m", "1", "models:/m/1", "ns")
    validate(isvc, schema)
    assert isvc["spec"]["predictor"]["model"]["modelFormat"] == {"name": "mlflow"}


def test_pushed_service_points_at_the_versions_exports(store: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    ALL.save(tmp_path)
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path), artifact_path="exports")
    client = MlflowClient()
    client.create_registered_model("pushed-isvc")
    version = client.create_model_version("pushed-isvc", f"runs:/{run.info.run_id}/exports",
                                          run_id=run.info.run_id).version
    isvc = pushed_inference_service("pushed-isvc", str(version), "ns", ALL,
                                    canary_traffic_percent=20)
    (container,) = isvc["spec"]["predictor"]["containers"]
    (uri,) = [e["value"] for e in container["env"] if e["name"] == "STORAGE_URI"]
    assert uri == f"{run.info.artifact_uri}/exports"
    # What the storage initializer would fetch from there is the exports directory.
    fetched = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                       dst_path=str(tmp_path / "got")))
    assert ExportManifest.model_validate_json((fetched / "export.json").read_text()) == ALL
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 20
    with pytest.raises(DataError, match="pushed-isvc version 99: not in the registry"):
        pushed_inference_service("pushed-isvc", "99", "ns", ALL)
