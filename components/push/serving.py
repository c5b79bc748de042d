"""The KServe InferenceService a pushed model is served with.

Three predictors:

- ``custom`` (default with an exports directory): the project's serving image
  (``python -m components.serve``) as the ``kserve-container``. KServe's
  storage initializer downloads ``STORAGE_URI`` (the version's ``exports/``
  artifacts) to ``/mnt/models``; the server answers V1 and V2 with class
  probabilities, the same for every export format.
- ``builtin``: KServe's own runtime for the export's format where one exists:
  ONNX (``modelFormat: onnx``, V2, needs ``model.onnx`` at the top of the
  exports directory) and SavedModel (``modelFormat: tensorflow``, TF Serving,
  needs a numeric version directory such as ``savedmodel/1``). KServe has no
  runtime for TFLite or a bare TorchScript file. These answer the raw model
  outputs (logits), not probabilities.
- ``mlflow`` (without an exports directory): the MLflow model at
  ``storage_uri`` on KServe's MLflow runtime (V2).

``canary_traffic_percent`` sends that share of traffic to the new revision
while the previous one keeps the rest (KServe's canary rollout).

The custom predictor's container gets the server's request limits as arguments
(``--max-request-bytes``, ``--max-rows``: 413 beyond them) and probes whose timeout
covers the longest the server's event loop may stall on one request of the largest
allowed size (see :func:`probe_timeout_seconds`), so that a large request never gets
the pod marked unready or restarted.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import PurePosixPath
from typing import Any, Literal

from components.errors import ConfigError, DataError
from components.export.manifest import FP32, ExportEntry, ExportFormat, ExportManifest
from components.images import image
from components.serve.limits import (
    MAX_REQUEST_BYTES_FLAG,
    MAX_ROWS_FLAG,
    MIB,
    ServingLimits,
)

log = logging.getLogger(__name__)

Predictor = Literal["custom", "builtin"]
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts STORAGE_URI
SERVING_PORT = 8080
# The server's event loop stalls for up to about 20 ms per MiB of one request (the JSON
# decode, which holds the GIL wherever it runs; the rest runs on worker threads, a chunk
# at a time): a probe waited at most 368 ms beside 20 MB requests on a loaded 2-core
# machine (bench/RESULTS.md, issue 17). The probes' timeout allows 20 times that for a
# request of the largest allowed size (a busy, CPU-limited pod), never under 5 s.
LOOP_STALL_S_PER_MIB = 0.02
PROBE_SAFETY_FACTOR = 20
PROBE_TIMEOUT_MIN_S = 5
PROBE_PERIOD_S = 10
READY_FAILURES = 3  # unready (no traffic) after 30 s without an answer
LIVE_FAILURES = 6  # restarted after a minute without an answer
# Start-up: importing KServe and the framework, loading the model (TensorFlow alone
# can take 15 s on a busy node): up to 5 minutes before liveness applies.
STARTUP_PERIOD_S = 5
STARTUP_FAILURES = 60
LIVE_PATH = "/v2/health/live"


def probe_timeout_seconds(limits: ServingLimits) -> int:
    """A probe timeout longer than the loop may stall on one request of the largest size."""
    stall = limits.max_request_bytes / MIB * LOOP_STALL_S_PER_MIB
    return max(PROBE_TIMEOUT_MIN_S, math.ceil(stall * PROBE_SAFETY_FACTOR))


def probes(model_name: str, limits: ServingLimits) -> dict[str, dict[str, Any]]:
    """Start-up, readiness (the model's) and liveness probes of the serving container."""
    timeout = probe_timeout_seconds(limits)

    def get(path: str, period: int, failures: int) -> dict[str, Any]:
        # A probe is not due again before the last one may have timed out.
        return {"httpGet": {"path": path, "port": SERVING_PORT},
                "periodSeconds": max(period, timeout), "timeoutSeconds": timeout,
                "failureThreshold": failures}

    return {"startupProbe": get(f"/v2/models/{model_name}/ready", STARTUP_PERIOD_S,
                                STARTUP_FAILURES),
            "readinessProbe": get(f"/v2/models/{model_name}/ready", PROBE_PERIOD_S,
                                  READY_FAILURES),
            "livenessProbe": get(LIVE_PATH, PROBE_PERIOD_S, LIVE_FAILURES)}


def service_name(model_name: str) -> str:
    """A DNS-1123 label derived from the registered model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    return (name or "model")[:63].rstrip("-")


def inference_service(model_name: str, version: str, storage_uri: str, namespace: str,
                      exports: ExportManifest | None = None, *, export: str | None = None,
                      predictor: Predictor = "custom",
                      canary_traffic_percent: int | None = None,
                      limits: ServingLimits | None = None) -> dict[str, Any]:
    """An InferenceService for ``model_name`` version ``version``.

    With ``exports`` (the manifest of the exports directory at ``storage_uri``)
    it serves entry ``export`` (default: the preferred one) with ``predictor``;
    without, ``storage_uri`` is an MLflow model served by KServe's MLflow runtime.
    ``limits`` (default: the server's defaults) are the custom predictor's request limits.
    """
    name = service_name(model_name)
    annotations = {"twinflow.io/registered-model": model_name,
                   "twinflow.io/model-version": str(version)}
    if exports is None:
        spec: dict[str, Any] = {"model": {"modelFormat": {"name": "mlflow"},
                                          "protocolVersion": "v2", "storageUri": storage_uri}}
    else:
        key = export or exports.preferred
        if key not in exports.entries:
            raise ConfigError(f"export {key!r} is not one of {sorted(exports.entries)}")
        annotations["twinflow.io/export"] = key
        spec = (_builtin(exports, key, storage_uri) if predictor == "builtin"
                else _custom(name, key, storage_uri, limits or ServingLimits()))
    if canary_traffic_percent is not None:
        if not 0 <= canary_traffic_percent <= 100:
            raise ConfigError(f"canary traffic percent must be 0-100, got "
                              f"{canary_traffic_percent}")
        spec["canaryTrafficPercent"] = canary_traffic_percent
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "twinflow"},
                     "annotations": annotations},
        "spec": {"predictor": spec},
    }


def _custom(name: str, export: str, storage_uri: str,
            limits: ServingLimits) -> dict[str, Any]:
    """The serving image as the predictor container, fed by the storage initializer."""
    return {"containers": [{
        "name": "kserve-container",  # the name KServe injects the storage initializer for
        "image": image("serving"),
        "args": ["--model-dir", MODEL_MOUNT, "--export", export, "--name", name,
                 "--host", "0.0.0.0", "--port", str(SERVING_PORT),
                 MAX_REQUEST_BYTES_FLAG, str(limits.max_request_bytes),
                 MAX_ROWS_FLAG, str(limits.max_rows)],
        "env": [{"name": "STORAGE_URI", "value": storage_uri}],
        "ports": [{"containerPort": SERVING_PORT, "protocol": "TCP"}],
        **probes(name, limits),
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "allowPrivilegeEscalation": False},
    }]}


def builtin_servable(entry: ExportEntry) -> bool:
    """Whether KServe's own ONNX or TensorFlow runtime can load ``entry`` where it lies
    (never a raw-input entry: those runtimes would not return probabilities by class)."""
    path = PurePosixPath(entry.path)
    if entry.input != "transformed":
        return False
    if entry.format == ExportFormat.ONNX:
        return path.name == "model.onnx"
    return entry.format == ExportFormat.SAVEDMODEL and path.name.isdigit()


def _builtin(exports: ExportManifest, export: str, storage_uri: str) -> dict[str, Any]:
    """KServe's own runtime for the entry's format, pointed at the directory it expects."""
    entry = exports.entries[export]
    path = PurePosixPath(entry.path)
    base = storage_uri.rstrip("/")
    if entry.format == ExportFormat.ONNX:
        if path.name != "model.onnx":
            raise ConfigError(f"export {export!r}: KServe's ONNX runtime loads model.onnx at "
                              f"the top of the storage URI, not {entry.path}")
        parent = str(path.parent)
        return {"model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2",
                          "storageUri": base if parent == "." else f"{base}/{parent}"}}
    if entry.format == ExportFormat.SAVEDMODEL:
        if not path.name.isdigit():
            raise ConfigError(f"export {export!r}: TF Serving needs the SavedModel in a "
                              f"numeric version directory (e.g. savedmodel/1), not {entry.path}")
        parent = str(path.parent)
        return {"model": {"modelFormat": {"name": "tensorflow"},
                          "storageUri": base if parent == "." else f"{base}/{parent}"}}
    raise ConfigError(f"export {export!r}: KServe has no built-in runtime for "
                      f"{entry.format.value}; use the custom predictor (the serving image)")


def exports_storage_uri(model_name: str, version: str) -> str:
    """Where the ``exports/`` artifacts of a registered version's run live.

    This is what the custom predictor's storage initializer downloads; push logs
    the exports directory there (see components.export.manifest).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from components.export.manifest import EXPORTS_ARTIFACT_PATH

    client = MlflowClient()
    try:
        found = client.get_model_version(model_name, version)
    except MlflowException as err:
        raise DataError(f"{model_name} version {version}: not in the registry "
                        f"({err.message})") from None
    if not found.run_id:
        raise ConfigError(f"{model_name} version {version} has no run holding its exports")
    base = str(client.get_run(found.run_id).info.artifact_uri).rstrip("/")
    return f"{base}/{EXPORTS_ARTIFACT_PATH}"


def pushed_inference_service(model_name: str, version: str, namespace: str,
                             exports: ExportManifest, *, predictor: Predictor = "custom",
                             canary_traffic_percent: int | None = None,
                             limits: ServingLimits | None = None) -> dict[str, Any]:
    """The InferenceService push writes for a version registered with its exports.

    The custom predictor serves the exports' serving default: the raw-input entry
    (transform inside, raw rows in) when there is one. KServe's built-in runtimes
    serve ONNX and SavedModel only, so with ``predictor="builtin"`` the preferred
    entry is served, or if they cannot load it the best entry they can (a compressed
    ONNX variant before fp32); clients then send transformed rows.
    """
    export = exports.serving_default if predictor == "custom" else exports.preferred
    if predictor == "builtin" and not builtin_servable(exports.entries[export]):
        ranked = sorted(exports.entries.items(), key=lambda kv: kv[1].variant == FP32)
        servable = [name for name, entry in ranked if builtin_servable(entry)]
        if not servable:
            raise ConfigError(f"{model_name}: no export a KServe built-in runtime can load "
                              f"({sorted(exports.entries)}); use the custom predictor")
        log.warning("built-in runtime cannot load %s; serving %s", export, servable[0])
        export = servable[0]
    return inference_service(model_name, version, exports_storage_uri(model_name, version),
                             namespace, exports, export=export, predictor=predictor,
                             canary_traffic_percent=canary_traffic_percent, limits=limits)
