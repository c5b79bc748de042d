"""KFP wrapper of the ingest step: parameters in; dataset, statistics and schema out."""

from kfp.dsl import Artifact, Dataset, Output

from components.images import step_component


def ingest(parent_run_id: str, source: str, label: str, val_fraction: float,
           test_fraction: float, seed: int, task: str, dataset: Output[Dataset],
           statistics: Output[Artifact], schema: Output[Artifact],
           ingest_options: str = "{}") -> None:
    """Read, split, profile and validate ``source`` with a Beam pipeline.

    ``ingest_options`` is the rest of IngestConfig as JSON (format, csv, split_method,
    key_column, bad_rows, runner, pipeline_options, schema_source, thresholds).
    """
    import json
    import shutil
    from pathlib import Path

    from components.config import IngestConfig
    from components.errors import ConfigError, step_errors
    from components.ingest.core import run_ingest
    from components.tags import Step
    from components.tracking import step_run

    with step_errors(Step.INGEST), step_run(parent_run_id, Step.INGEST):
        try:
            extra = json.loads(ingest_options or "{}")
        except json.JSONDecodeError as err:
            raise ConfigError(f"ingest_options is not JSON: {err}") from None
        config = IngestConfig(source=source, label=label, val_fraction=val_fraction,
                              test_fraction=test_fraction, seed=seed, task=task, **extra)
        out = Path(dataset.path)
        meta = run_ingest(config, out)
        dataset.metadata.update({"name": meta.name, "digest": meta.digest,
                                 "task": meta.task.value, **meta.rows})
        Path(statistics.path).mkdir(parents=True, exist_ok=True)
        for name in ("statistics.json", "statistics.html", "anomalies.json"):
            shutil.copy(out / name, Path(statistics.path) / name)
        shutil.copy(out / "schema.json", schema.path)


ingest_op = step_component(ingest, "base")
