"""Push: log the blessed model with its framework's MLflow flavor, register it,
move the `champion` alias (keeping the previous one for rollback) and write the
KServe manifest that serves it.

The pipeline runs this step only for a blessed model, so nothing is registered
from a failed or rejected run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from components.compress.core import COMPRESSION_FILE
from components.config import PushConfig, model_name_for
from components.data.dataset import (
    DatasetMetadata,
    Split,
    read_arrays,
    read_frame,
    read_metadata,
)
from components.data.schema import SCHEMA_FILE
from components.errors import DataError, TwinflowError
from components.export.manifest import EXPORTS_ARTIFACT_PATH, FP32, ExportManifest
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec
from components.push.card import CardFacts, gather, write_card
from components.push.crown import champion_version, crown, judged_for, registry_lock
from components.push.registered import NETWORK_ARTIFACT, log_raw_model
from components.push.serving import pushed_inference_service
from components.tags import (
    COMPRESSION_ACCURACY_TAG,
    COMPRESSION_BYTES_TAG,
    COMPRESSION_FORMAT_TAG,
    COMPRESSION_VARIANT_TAG,
    CROWN_REASON_TAG,
    CROWNED_TAG,
    ERROR_TAG_CHARS,
    MODEL_CARD_TAG,
    MODEL_INPUT_TAG,
    MODEL_VERSION_TAG,
    NETWORK_MODEL_TAG,
    PIPELINE_RUN_TAG,
    REGISTERED_MODEL_TAG,
    SERVING_EXPORT_TAG,
    SERVING_INPUT_TAG,
    VERSION_DATASET_DIGEST_TAG,
    VERSION_DATASET_TAG,
    VERSION_FRAMEWORK_TAG,
    VERSION_MODEL_DIGEST_TAG,
    VERSION_MODEL_TAG,
    VERSION_TASK_TAG,
)
from components.tune.result import Tuned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushResult:
    """The registered version and where its manifest was written."""

    model_name: str
    version: str
    manifest: Path


def run_push(config: PushConfig, data_dir: Path, model_dir: Path, exports_dir: Path,
             metrics: dict[str, float], manifest_path: Path,
             raw_dir: Path | None = None) -> PushResult:
    """Register the model from ``model_dir`` and make it the champion.

    The version's MLflow model takes raw rows (components.push.registered; ``raw_dir``,
    the ingested data set, gives its input example). The exports directory from
    compress (fp32 exports and the chosen compressed variant, see
    components.export.manifest) is logged beside it in the same run under
    ``exports/``; the version is tagged with the preferred variant.
    """
    meta = read_metadata(data_dir)
    exports = _check_exports(exports_dir, config)
    name = model_name_for(config.model_name, meta.name, config.framework)
    pipeline_run = _pipeline_run()
    version = _existing_version(name, pipeline_run, config.framework)
    if version is None:
        version = _register(config, name, meta, (data_dir, raw_dir), model_dir,
                            (exports_dir, exports),
                            {**metrics, **_compression_tags(exports_dir, exports)}, pipeline_run)
        facts = CardFacts(name, version, config.framework, ModelSpec.load(model_dir).kind,
                          meta, exports, metrics, pipeline_run)
        card = write_card(gather(facts, raw_dir, exports_dir))
        mlflow.set_tag(MODEL_CARD_TAG, card)
        log.info("model card of %s version %s: %s", name, version, card)
    else:
        log.info("%s version %s already holds pipeline run %s; not registering again",
                 name, version, pipeline_run)
    crowning = crown(config, name, version, judged_for(pipeline_run, config.framework))
    mlflow.set_tags({CROWNED_TAG: str(crowning.crowned).lower(),
                     CROWN_REASON_TAG: crowning.reason[:ERROR_TAG_CHARS]})
    canary = config.canary_percent if config.canary_percent < 100 else None
    manifest = pushed_inference_service(name, version, config.namespace, exports,
                                        predictor=config.predictor,
                                        canary_traffic_percent=canary)
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    mlflow.log_artifact(str(manifest_path), artifact_path="serving")
    mlflow.set_tags({REGISTERED_MODEL_TAG: name, MODEL_VERSION_TAG: version})
    log.info("registered %s version %s%s: %s", name, version,
             f" as {config.champion_alias}" if crowning.crowned else ", not champion",
             crowning.reason)
    return PushResult(name, version, manifest_path)


def _check_exports(exports_dir: Path, config: PushConfig) -> ExportManifest:
    """The exports directory's manifest, checked before anything is registered."""
    manifest = ExportManifest.load(exports_dir)
    if manifest.framework != config.framework:
        raise DataError(f"{exports_dir}: exports of framework '{manifest.framework}', "
                        f"pushing '{config.framework}'")
    return manifest


def _compression_tags(exports_dir: Path, manifest: ExportManifest) -> dict[str, str]:
    """Version tags of the preferred export (its variant, format, size and test accuracy)
    and of what the model server serves by default (raw rows in, or transformed)."""
    entry = manifest.entries[manifest.preferred]
    tags = {COMPRESSION_VARIANT_TAG: manifest.preferred if entry.variant != FP32 else "none",
            COMPRESSION_FORMAT_TAG: entry.format.value, COMPRESSION_BYTES_TAG: str(entry.bytes),
            SERVING_EXPORT_TAG: manifest.serving_default,
            SERVING_INPUT_TAG: manifest.entries[manifest.serving_default].input}
    table = exports_dir / COMPRESSION_FILE
    if table.is_file():
        rows = json.loads(table.read_text(encoding="utf-8")).get("variants", [])
        row = next((r for r in rows if r.get("name") == manifest.preferred), None)
        if row is not None:
            # the variant's test score: accuracy, or RMSE for regression
            tags[COMPRESSION_ACCURACY_TAG] = f"{row['score']:.6g}"
    return tags


def _register(config: PushConfig, name: str, meta: DatasetMetadata,
              data: tuple[Path, Path | None], model_dir: Path,
              exports: tuple[Path, ExportManifest], extra: dict[str, float | str],
              pipeline_run: str) -> str:
    """Log the MLflow models and the exports; create a registry version."""
    tags = {VERSION_FRAMEWORK_TAG: config.framework, VERSION_DATASET_TAG: meta.name,
            VERSION_DATASET_DIGEST_TAG: meta.digest, PIPELINE_RUN_TAG: pipeline_run,
            **{k: f"{v:.6g}" for k, v in extra.items()
               if k.startswith("test_") and not isinstance(v, str)},
            **{k: v for k, v in extra.items() if isinstance(v, str)}}
    spec = ModelSpec.load(model_dir)
    headline = spec.task_object.headline[0]
    if headline not in tags:
        raise ValueError(f"push needs the '{headline}' metric from evaluate")
    tags[VERSION_MODEL_TAG] = spec.kind
    tags[VERSION_TASK_TAG] = spec.task
    tuned = Tuned.load(model_dir)
    tags.update(tuned.version_tags() if tuned else {})
    if spec.digest:
        tags[VERSION_MODEL_DIGEST_TAG] = spec.digest
    model_uri = _log_models(config, meta, data, model_dir, exports, tags)
    mlflow.log_artifacts(str(exports[0]), artifact_path=EXPORTS_ARTIFACT_PATH)
    return str(mlflow.register_model(model_uri, name, tags=tags).version)


def _log_models(config: PushConfig, meta: DatasetMetadata, data: tuple[Path, Path | None],
                model_dir: Path, exports: tuple[Path, ExportManifest],
                tags: dict[str, str]) -> str:
    """Log the bare network (framework flavor) and the raw-rows model; return the URI to
    register: the raw-rows one, or the network when the exports have no raw entry."""
    (data_dir, raw_dir), (exports_dir, manifest) = data, exports
    adapter = get_adapter(config.framework)
    sample = read_arrays(data_dir, Split.TEST, meta).x[:5]
    network = adapter.log_model(adapter.load_model(model_dir), NETWORK_ARTIFACT, sample)
    tags[NETWORK_MODEL_TAG] = network
    if manifest.raw_entry is None:
        log.warning("exports have no raw-input entry: the registered MLflow model is the bare "
                    "network, which takes transformed features")
        tags[MODEL_INPUT_TAG] = "transformed"
        return network
    rows = read_frame(raw_dir, Split.TEST) if raw_dir is not None else None
    tags[MODEL_INPUT_TAG] = "raw"
    with tempfile.TemporaryDirectory(prefix="twinflow-push-") as work:
        schema = raw_dir / SCHEMA_FILE if raw_dir is not None else None
        return log_raw_model(exports_dir, manifest, meta.source_types, (rows, schema),
                             Path(work))


def _pipeline_run() -> str:
    """The parent (pipeline) run of the active step run; '' outside a pipeline."""
    run = mlflow.active_run()
    return run.data.tags.get("mlflow.parentRunId", "") if run else ""


def _existing_version(name: str, pipeline_run: str, framework: str) -> str | None:
    """The version an earlier push of the same pipeline run and framework registered, if
    any (with --framework both and one --model-name, the other branch's is not a retry)."""
    if not pipeline_run:
        return None
    try:
        found = MlflowClient().search_model_versions(
            f"name = '{name}' and tags.{PIPELINE_RUN_TAG} = '{pipeline_run}' "
            f"and tags.{VERSION_FRAMEWORK_TAG} = '{framework}'")
    except MlflowException:
        return None
    return str(found[0].version) if found else None


def rollback(name: str, champion_alias: str = "champion",
             previous_alias: str = "previous-champion") -> tuple[str, str]:
    """Swap `champion` and `previous-champion`; return (new champion, new previous).

    Swapping (rather than dropping) makes a second rollback undo the first.
    """
    with registry_lock(name):  # not in the middle of a push moving them
        current = champion_version(name, champion_alias)
        previous = champion_version(name, previous_alias)
        if current is None or previous is None:
            raise TwinflowError(f"model '{name}' has no '{champion_alias}' and "
                                f"'{previous_alias}' pair to roll back")
        client = MlflowClient()
        client.set_registered_model_alias(name, champion_alias, previous)
        client.set_registered_model_alias(name, previous_alias, current)
    return previous, current
