"""Batch scoring: raw rows of any ingest format through a registered model, in batches.

The rows stream through ingest's own readers (components.data.readers) one record
batch at a time, so memory stays flat in the number of rows. Each batch is scored by
the registered version's MLflow model artifact (its raw-input export, the fitted
transform inside: components.export.pyfunc_model.RawRows) and appended to a
temporary Parquet file beside the output. While scoring, the batches feed ingest's
statistics accumulators; at the end the rows are checked against the training
schema the model carries (the same checks as ingest: missing columns, unseen
categories, ranges, missing-rate spikes, drift), the anomalies are logged to the
active MLflow run, and only when none is severe does the temporary file become the
output (``os.replace``): the output appears complete or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import PredictConfig
from components.data.readers import BadRows, list_files, read_batches
from components.data.schema import (
    SCHEMA_FILE,
    Anomaly,
    DataSchema,
    check_columns,
    check_statistics,
    load_schema,
    raise_severe,
)
from components.data.statistics import Acc, StatsCombineFn, column_kinds, finish
from components.errors import DataError
from components.export.pyfunc_model import EXPORTS_ARTIFACT, RawRows

log = logging.getLogger(__name__)
ROW_COLUMN = "row"  # the input's row number, when no --keep column is asked for
ANOMALIES_FILE = "anomalies.json"


@dataclass(frozen=True)
class PredictResult:
    """What was scored and how fast."""

    rows: int
    seconds: float
    anomalies: list[Anomaly]
    output: Path

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def run_predict(config: PredictConfig, model_root: Path, output: Path) -> PredictResult:
    """Score ``config.data`` with the MLflow model downloaded to ``model_root``."""
    exports = model_root / "artifacts" / EXPORTS_ARTIFACT
    if not (exports / "export.json").is_file():
        raise DataError(f"{config.model}: its MLflow model has no raw-input exports (registered "
                        "before raw-rows models existed): batch scoring needs raw rows in")
    model = RawRows(exports)
    schema = load_schema(exports / SCHEMA_FILE) if (exports / SCHEMA_FILE).is_file() else None
    if schema is None:
        log.warning("%s carries no training schema: the rows are not validated", config.model)
    files, fmt = list_files(config.data, config.format)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    start = time.perf_counter()
    try:
        rows, acc, early = _score(config, files, fmt, model, schema, tmp)
        anomalies = early + _check(acc, schema, config)
        _log(config, rows, time.perf_counter() - start, anomalies)
        raise_severe(anomalies, config.data)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    result = PredictResult(rows, time.perf_counter() - start, anomalies, output)
    log.info("scored %d rows of %s with %s in %.1fs (%.0f rows/s) -> %s", rows, config.data,
             config.model, result.seconds, result.rows_per_second, output)
    return result


def _score(config: PredictConfig, files: list[str], fmt: str, model: RawRows,
           schema: DataSchema | None, tmp: Path) -> tuple[int, Acc, list[Anomaly]]:
    """Score every batch into ``tmp``; return the row count, the statistics and the
    column warnings of the first batch."""
    stats = StatsCombineFn()
    acc: Acc = stats.create_accumulator()
    writer: pq.ParquetWriter | None = None
    rows, early = 0, []
    try:
        for path in files:
            for batch in read_batches(path, fmt, "", config.csv, config.batch_rows, None,
                                      BadRows(skip=False)):
                if rows == 0:
                    early = _check_first(batch, config, model, schema)
                frame = batch.to_pandas()
                table = _answers(frame, model, config.keep, rows)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                stats.add_input(acc, batch)
                rows += len(frame)
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise DataError(f"{config.data}: no data rows")
    return rows, acc, early


def _check_first(batch: pa.RecordBatch, config: PredictConfig, model: RawRows,
                 schema: DataSchema | None) -> list[Anomaly]:
    """Columns known before scoring: every feature present and numbers numeric (severe
    problems raise); returns the warnings (extra columns)."""
    found = column_kinds(batch.schema)
    absent = [k for k in config.keep if k not in found]
    if absent:
        raise DataError(f"{config.data}: --keep column(s) {absent} not in the data")
    problems = ([a for a in check_columns(schema, found) if a.column != schema.label]
                if schema is not None else [])
    raise_severe(problems, config.data)
    missing = [c for c in [*model.numeric, *model.categorical] if c not in found]
    if missing:
        raise DataError(f"{config.data}: missing column(s) {missing} that {config.model} "
                        "takes")
    return problems


def _answers(frame: pd.DataFrame, model: RawRows, keep: list[str], first: int) -> pa.Table:
    """The batch's kept columns (or its row numbers) beside the model's answers."""
    out = model.predict(frame)
    kept = (frame[keep].reset_index(drop=True) if keep else
            pd.DataFrame({ROW_COLUMN: range(first, first + len(frame))}))
    return pa.Table.from_pandas(pd.concat([kept, out], axis=1), preserve_index=False)


def _check(acc: Acc, schema: DataSchema | None, limits: PredictConfig) -> list[Anomaly]:
    """Ingest's checks of the scored rows' statistics against the training schema."""
    if schema is None:
        return []
    stats = finish(acc)
    return check_statistics(stats, schema.label, [], schema, stats, limits.drift_threshold,
                            limits.missing_spike)


def _log(config: PredictConfig, rows: int, seconds: float, anomalies: list[Anomaly]) -> None:
    """Rows, speed and anomalies (counts by severity and the list) on the active run
    (raise_severe logs each anomaly)."""
    severe = sum(a.severity == "error" for a in anomalies)
    mlflow.log_metrics({"rows": rows, "rows_per_second": rows / seconds if seconds else 0.0,
                        "anomalies_error": severe, "anomalies_warning": len(anomalies) - severe})
    mlflow.log_text(json.dumps([a.model_dump() for a in anomalies], indent=2), ANOMALIES_FILE)
