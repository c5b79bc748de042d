"""KFP wrapper of the ingest step: parameters in, a dataset artifact out."""

from kfp.dsl import Dataset, Output

from components.images import step_component


def ingest(parent_run_id: str, source: str, label: str, val_fraction: float,
           test_fraction: float, seed: int, dataset: Output[Dataset]) -> None:
    """Load, validate and split ``source`` into train/val/test Parquet files."""
    from pathlib import Path

    from components.config import IngestConfig
    from components.errors import step_errors
    from components.ingest.core import run_ingest
    from components.tracking import step_run

    with step_errors("ingest"), step_run(parent_run_id, "ingest"):
        config = IngestConfig(source=source, label=label, val_fraction=val_fraction,
                              test_fraction=test_fraction, seed=seed)
        meta = run_ingest(config, Path(dataset.path))
        dataset.metadata.update({"name": meta.name, "digest": meta.digest, **meta.rows})


ingest_op = step_component(ingest, "base")
