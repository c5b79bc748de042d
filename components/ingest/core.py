"""Ingest: raw source -> Beam pipeline -> Parquet shards per split, statistics, schema.

The data is read and split by an Apache Beam pipeline (components.ingest.
beam_pipeline) that streams Arrow record batches, so memory stays flat with
the input size and the same code runs on Flink, Spark or Dataflow. Statistics
are computed in the same pass. The first ingest of a data set infers a schema;
later ingests are validated against it (see components.data.schema), and
severe anomalies fail the step before anything is recorded.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa

from components.config import IngestConfig
from components.data.dataset import DatasetMetadata, dataset_digest, write_metadata
from components.data.image_reader import image_layout
from components.data.readers import BadRows, image_shape, list_files, read_batches
from components.data.schema import (
    DataSchema,
    check_columns,
    check_statistics,
    infer_schema,
    raise_severe,
)
from components.data.sources import SKLEARN_PREFIX, load_source, source_name
from components.data.statistics import FeatureStats, column_kinds, finish, merge_into
from components.errors import DataError
from components.ingest import beam_pipeline, tracking
from components.ingest.beam_pipeline import IngestPlan
from components.tags import TASK_REASON_TAG, TASK_TAG
from components.tasks import REGRESSION_BINS, Task, TaskChoice, TaskName, detect_task, get_task

log = logging.getLogger(__name__)


def run_ingest(config: IngestConfig, out_dir: Path) -> DatasetMetadata:
    """Read, split, profile and validate the data; log it all to the active MLflow run.

    On any failure ``out_dir`` is removed, so no half-written dataset remains.
    """
    existed = out_dir.exists()
    try:
        with tempfile.TemporaryDirectory(prefix="twinflow-ingest-") as tmp:
            return _ingest(config, out_dir, Path(tmp))
    except BaseException:
        if not existed:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _ingest(config: IngestConfig, out_dir: Path, tmp: Path) -> DatasetMetadata:
    name, files, fmt, label, shape = _resolve_source(config, tmp)
    where = config.source
    found, sample, source_types = _probe(files[0], fmt, label, config)
    previous = tracking.previous_schema(config.schema_source, name)
    if previous is not None:
        raise_severe(check_columns(previous, found), where)
        found = {c: previous.columns[c].kind for c in previous.columns}
    choice = _task(config, previous, found[label] == "numeric", sample, where, label)
    task = get_task(choice.task)
    features = [c for c in found if c != label]
    if not features:
        raise DataError(f"{where}: no feature columns besides the label '{label}'")
    schema = pa.schema([(c, pa.float64() if found[c] == "numeric" and
                         (c != label or not task.is_classifier) else pa.string())
                        for c in [*features, label]])
    plan = IngestPlan(fmt=fmt, label=label, csv=config.csv, batch_rows=config.batch_rows,
                      schema=schema, seed=config.seed,
                      fractions=(config.val_fraction, config.test_fraction),
                      split_method=config.split_method, key_column=config.key_column,
                      stratify=config.stratify, skip_bad=config.bad_rows == "skip",
                      label_bins=() if task.is_classifier else label_bins(sample))
    if config.split_method == "hash" and config.key_column not in found:
        raise DataError(f"{where}: key column '{config.key_column}' not found")
    out_dir.mkdir(parents=True, exist_ok=True)
    beam_pipeline.run(files, plan, str(out_dir), config.runner, config.pipeline_options)
    accs, bad = beam_pipeline.load_results(str(out_dir))
    merged: dict = {}
    for acc in accs.values():
        merge_into(merged, acc)
    stats_all = finish(merged)
    splits = {s: finish(accs.get(s, {})) for s in beam_pipeline.SPLITS}
    rows = {s: (st[label].count if label in st else 0) for s, st in splits.items()}
    if task.is_classifier:
        classes = _check_classes(stats_all[label].frequencies, rows, where, label,
                                 stats_all[label].count, task)
        _check_split_room(stats_all[label], rows, where, label, plan.fractions)
    else:
        classes = _check_values(stats_all[label], rows, where, label)
    anomalies = check_statistics(stats_all, label, classes, previous, splits["train"],
                                 config.drift_threshold, config.missing_spike)
    raise_severe(anomalies, where)
    schema_out = previous or infer_schema(name, label, classes, stats_all, splits["train"],
                                          choice.task)
    meta = DatasetMetadata(
        name=name, source=config.source, label=label, features=features,
        classes=schema_out.classes if previous else classes, image_shape=shape,
        digest=dataset_digest(out_dir), rows=rows, task=choice.task,
        source_types=source_types)
    write_metadata(out_dir, meta)
    tracking.write_reports(out_dir, {"all": stats_all, **splits}, schema_out, anomalies, bad)
    tracking.track(config, meta, out_dir, bad, inferred=previous is None)
    mlflow.set_tags({TASK_TAG: choice.task.value, TASK_REASON_TAG: choice.reason[:500]})
    if bad["count"]:
        log.warning("%s: skipped %d bad rows, e.g. %s", where, bad["count"], bad["sample"][:3])
    log.info("ingested %s: %s rows, task %s (%s), %d classes, digest %s",
             name, meta.rows, choice.task.value, choice.reason, meta.n_classes, meta.digest)
    return meta


def _resolve_source(config: IngestConfig,
                    tmp: Path) -> tuple[str, list[str], str, str, list[int] | None]:
    """Name, files, format, label column and image shape of the source."""
    if config.source.startswith(SKLEARN_PREFIX):
        raw = load_source(config.source, config.label)
        path = tmp / f"{raw.name}.parquet"
        raw.frame.to_parquet(path, index=False)
        return raw.name, [str(path)], "parquet", raw.label, raw.image_shape
    files, fmt = list_files(config.source, config.format)
    label = config.label or ("label" if fmt in ("images", "idx") else "")
    if not label:
        raise DataError(_no_label(config.source, files, fmt))
    return source_name(config.source), files, fmt, label, image_shape(files[0], fmt)


def _no_label(source: str, files: list[str], fmt: str) -> str:
    """Tables need ``--label``; a folder read as tables may have been meant to hold
    images, so its message says why it was not taken for an image folder too."""
    message = f"{source}: no label column given (use --label COLUMN)"
    if Path(source).is_dir():
        message += (f" for its {len(files)} {fmt} file(s); if it is meant to hold images: "
                    f"no images found ({image_layout(Path(source))})")
    return message


def _probe(path: str, fmt: str, label: str,
           config: IngestConfig) -> tuple[dict[str, str], np.ndarray, dict[str, str]]:
    """Column kinds (numeric | categorical), the label's values and the columns' source
    types (:func:`source_type`), from the first batch of the first file."""
    batches = read_batches(path, fmt, label, config.csv, min(config.batch_rows, 4096), None,
                           BadRows(skip=True))
    first = next(iter(batches), None)
    if first is None:
        raise DataError(f"{path}: no data rows")
    kinds = column_kinds(first.schema)
    if label not in kinds:
        shown = ", ".join(list(kinds)[:20])
        raise DataError(f"{path}: label column '{label}' not found; columns are: {shown}")
    _check_flat(first.schema, path)
    types = {f.name: source_type(f.type) for f in first.schema}
    return kinds, first.column(label).to_numpy(zero_copy_only=False), types


def _check_flat(schema: pa.Schema, path: str) -> None:
    """Every column becomes one feature (or the label): nested values (lists, structs,
    maps) have no such column; say which, before the pipeline fails to cast it."""
    nested = [f for f in schema if pa.types.is_nested(f.type)]
    if nested:
        raise DataError(f"{path}: column '{nested[0].name}' holds nested values "
                        f"({nested[0].type}), which cannot be one feature; flatten it into "
                        "one column per value, or drop it")


def source_type(dtype: pa.DataType) -> str:
    """MLflow's column type for an Arrow type of the source (what pandas reading the same
    file gives: int64 -> long, float64 -> double; a column of gaps only is double)."""
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype):
        return "long"
    if pa.types.is_floating(dtype) or pa.types.is_null(dtype):
        return "double"
    return "string"


def _task(config: IngestConfig, previous: DataSchema | None, numeric: bool,
          sample: np.ndarray, where: str, label: str) -> TaskChoice:
    """The run's task: the user's, the schema's (a data set keeps its task), or detected."""
    if config.task == TaskName.AUTO and previous is not None and previous.task:
        return TaskChoice(TaskName(previous.task), f"the schema of '{previous.name}'")
    choice = detect_task(sample, numeric, config.task)
    if choice.task == TaskName.REGRESSION and not numeric:
        raise DataError(f"{where}: label column '{label}' is not numeric; regression needs "
                        "numbers (use --task multiclass or binary)")
    return choice


def label_bins(sample: np.ndarray) -> tuple[float, ...]:
    """Inner quantile edges of the probed label values, for a binned stratified split."""
    values = sample.astype(np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return ()
    edges = np.quantile(values, np.linspace(0.0, 1.0, REGRESSION_BINS + 1)[1:-1])
    return tuple(float(e) for e in np.unique(edges))


def _check_values(stats: FeatureStats, rows: dict[str, int], where: str,
                  label: str) -> list[str]:
    """A regression label needs rows in every split and more than one value."""
    if stats.count == 0:
        raise DataError(f"{where}: no data rows")
    if not stats.std:
        raise DataError(f"{where}: label column '{label}' is constant ({stats.min}); "
                        "nothing to regress")
    empty = [s for s, n in rows.items() if n == 0]
    if empty:
        raise DataError(f"{where}: cannot split {stats.count} rows: split(s) {empty} would "
                        "be empty")
    return []


def _check_classes(freq: dict[str, float], rows: dict[str, int], where: str, label: str,
                   total: int, task: Task) -> list[str]:
    """Sorted class names; at least two (binary: exactly two), each with enough rows for
    three splits."""
    classes = sorted(freq, key=_class_sort_key)
    if total == 0:
        raise DataError(f"{where}: no data rows")
    if len(classes) < 2:
        raise DataError(f"{where}: label column '{label}' has a single class "
                        f"'{classes[0]}'; need at least two")
    if task.name == TaskName.BINARY and len(classes) != 2:
        raise DataError(f"{where}: --task binary needs two classes; label column '{label}' "
                        f"has {len(classes)}: {classes[:10]}")
    small = [c for c in classes if round(freq[c] * total) < 3]
    if small:
        raise DataError(f"{where}: classes {small[:10]} have fewer than 3 rows; "
                        "cannot split into train/validation/test")
    empty = [s for s, n in rows.items() if n == 0]
    if empty:
        raise DataError(f"{where}: cannot split {total} rows: split(s) {empty} would be empty")
    return classes


def _check_split_room(stats: FeatureStats, rows: dict[str, int], where: str, label: str,
                      fractions: tuple[float, float]) -> None:
    """Most classes must be able to get a test row: with fewer test rows than half the
    classes, most go untested (per-class metrics of nothing), and a label of hundreds
    of tiny classes would only fail, or crawl, in evaluate, after training. Tiny data
    sets of a few classes (a test row short of one per class) still pass."""
    n_classes = stats.distinct or len(stats.frequencies)
    untested = n_classes - rows["test"]  # at least this many classes have no test row
    if untested <= n_classes / 2:
        return
    counts = sorted(round(f * stats.count) for f in stats.frequencies.values())
    val, test = fractions
    need = math.ceil(1 / min(val, test))  # rows to expect one in the smaller split
    rare = sum(c < need for c in counts)
    split = "/".join(str(round(100 * f)) for f in (1 - val - test, val, test))
    raise DataError(
        f"{where}: too many classes for the split: label column '{label}' has {n_classes} "
        f"classes but the test split holds {rows['test']} rows, so at least {untested} "
        f"classes go untested; {rare} classes have fewer than the {need} rows a stratified "
        f"{split} split needs to put one in each split (the smallest has {counts[0]}); "
        "merge or drop the rare classes, add rows, or raise --test-fraction")


def _class_sort_key(value: str) -> tuple[int, float | str]:
    """Numeric labels sort numerically ('2' < '10'), others alphabetically."""
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)

