"""The KServe InferenceService a pushed model is served with."""

from __future__ import annotations

import re
from typing import Any


def service_name(model_name: str) -> str:
    """A DNS-1123 label derived from the registered model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    return (name or "model")[:63].rstrip("-")


def inference_service(model_name: str, version: str, storage_uri: str,
                      namespace: str) -> dict[str, Any]:
    """An InferenceService serving the MLflow model at ``storage_uri`` (V2 protocol)."""
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": service_name(model_name),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "twinflow"},
            "annotations": {"twinflow.io/registered-model": model_name,
                            "twinflow.io/model-version": str(version)},
        },
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                },
            },
        },
    }
