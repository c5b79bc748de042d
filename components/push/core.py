"""Push: log the blessed model with its framework's MLflow flavor, register it,
move the `champion` alias (keeping the previous one for rollback) and write the
KServe manifest that serves it.

The pipeline runs this step only for a blessed model, so nothing is registered
from a failed or rejected run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.config import PushConfig, model_name_for
from components.data.dataset import Split, read_arrays, read_metadata
from components.evaluate.core import ACCURACY_TAG
from components.frameworks import get_adapter
from components.push.serving import inference_service

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """The registered version and where its manifest was written."""

    model_name: str
    version: str
    manifest: Path


def run_push(config: PushConfig, data_dir: Path, model_dir: Path, compressed_dir: Path,
             metrics: dict[str, float], manifest_path: Path) -> PushResult:
    """Register the model from ``model_dir`` and make it the champion.

    The int8 variant from ``compressed_dir`` is kept beside it in the same run.
    """
    meta = read_metadata(data_dir)
    name = model_name_for(config.model_name, meta.name, config.framework)
    adapter = get_adapter(config.framework)
    sample = read_arrays(data_dir, Split.TEST, meta).x[:5]
    model_uri = adapter.log_model(adapter.load_model(model_dir), "model", sample)
    tags = {"framework": config.framework.value, "dataset": meta.name,
            "dataset_digest": meta.digest,
            **{k: f"{v:.6g}" for k, v in metrics.items() if k.startswith("test_")}}
    if ACCURACY_TAG not in tags:
        raise ValueError(f"push needs the '{ACCURACY_TAG}' metric from evaluate")
    mlflow.log_artifacts(str(compressed_dir), artifact_path="compressed")
    version = str(mlflow.register_model(model_uri, name, tags=tags).version)
    _move_champion(config, name, version)
    storage = MlflowClient().get_model_version_download_uri(name, version)
    manifest = inference_service(name, version, storage, config.namespace)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    mlflow.log_artifact(str(manifest_path), artifact_path="serving")
    mlflow.set_tags({"twinflow.registered_model": name, "twinflow.model_version": version})
    log.info("registered %s version %s as %s", name, version, config.champion_alias)
    return PushResult(name, version, manifest_path)


def _move_champion(config: PushConfig, name: str, version: str) -> None:
    """Point `champion` at ``version``; the replaced champion keeps `previous-champion`."""
    client = MlflowClient()
    try:
        old = client.get_model_version_by_alias(name, config.champion_alias)
        client.set_registered_model_alias(name, config.previous_alias, old.version)
    except MlflowException:
        pass  # first champion
    client.set_registered_model_alias(name, config.champion_alias, version)
