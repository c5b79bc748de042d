"""The ingest as an Apache Beam pipeline: files -> record batches -> split shards + statistics.

One element per input file; a DoFn streams the file as Arrow record batches
(see components.data.readers), conforms them to the target Arrow schema,
assigns each row a split, and emits one table per split and batch. Those go
to ``WriteToParquetBatched`` (Parquet shards per split) and, in the same fused
stage, to a lifted ``CombinePerKey`` that folds batches into per-column
statistics accumulators. Nothing holds more than one batch per file in memory.

The runner and its options come from the step's config: ``DirectRunner``
locally; ``FlinkRunner``/``SparkRunner``/``DataflowRunner`` with their options
(``flink_master``, ``spark_master_url``, ``project``, ``temp_location``...) to
run big data on an existing engine; the output directory must then be on a
file system the workers share (e.g. gs://, s3://, hdfs://).
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from components.config import CsvOptions
from components.data.readers import BadRows, read_batches
from components.data.statistics import StatsCombineFn, merge_into
from components.errors import DataError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
STATS_FILE = "_stats.pkl"
BAD_ROWS_FILE = "_bad_rows.json"
_PHI = (5 ** 0.5 - 1) / 2
_T = TypeVar("_T")
_END = object()


def pipeline_options(runner: str, options: dict[str, Any]) -> PipelineOptions:
    """Beam options from the step config; ``options`` keys are Beam's flag names."""
    flags = {"runner": runner, **options}
    return PipelineOptions.from_dictionary(flags)


@dataclass(frozen=True)
class IngestPlan:
    """Everything a worker needs to read, conform and split one file."""

    fmt: str
    label: str
    csv: CsvOptions
    batch_rows: int
    schema: pa.Schema
    seed: int
    fractions: tuple[float, float]
    split_method: str
    key_column: str
    stratify: bool
    skip_bad: bool
    # Regression: the label's quantile edges; rows are stratified by bin, not by value.
    label_bins: tuple[float, ...] = ()


class ReadAndSplit(beam.DoFn):
    """Stream one file; emit (split, batch) for statistics and tagged tables for writing."""

    def __init__(self, plan: IngestPlan) -> None:
        self.plan = plan

    def process(self, element: tuple[int, str]) -> Iterator[Any]:
        index, path = element
        plan, bad = self.plan, BadRows(skip=self.plan.skip_bad)
        types = {f.name: f.type for f in plan.schema} if plan.fmt == "csv" else None
        counters: dict[str, int] = {}
        offset = 0
        for raw in read_ahead(read_batches(path, plan.fmt, plan.label, plan.csv,
                                           plan.batch_rows, types, bad)):
            batch = self._conform(raw, path, offset, bad)
            codes = self._assign(batch, index, offset, counters)
            offset += raw.num_rows
            for code, split in enumerate(SPLITS):
                part = batch.filter(pa.array(codes == code))
                if part.num_rows:
                    yield split, part
                    yield beam.pvalue.TaggedOutput(split, pa.Table.from_batches([part]))
        if offset == 0:
            raise DataError(f"{path}: no data rows")
        if bad.count:
            yield beam.pvalue.TaggedOutput("bad", (bad.count, bad.sample))

    def _conform(self, batch: pa.RecordBatch, path: str, offset: int,
                 bad: BadRows) -> pa.RecordBatch:
        """Select the schema's columns, cast them, and reject rows without a label."""
        schema = self.plan.schema
        missing = [n for n in schema.names if n not in batch.schema.names]
        if missing:
            raise DataError(f"{path}: missing columns {missing}")
        arrays = []
        for f in schema:
            column = batch.column(f.name)
            try:
                arrays.append(column if column.type == f.type else column.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise DataError(f"{path}: column '{f.name}': wrong type: cannot convert "
                                f"{column.type} to {f.type}: {err}") from None
        out = pa.RecordBatch.from_arrays(arrays, schema=schema)
        label = out.column(self.plan.label)
        missing_label = label.is_null(nan_is_null=True)
        if pc.sum(missing_label).as_py():
            first = self.plan.csv.header + 1 if self.plan.fmt == "csv" else 1
            for i in np.flatnonzero(missing_label.to_numpy(zero_copy_only=False)):
                bad.reject(path, bad.line_of(offset + int(i) + first),
                           f"label column '{self.plan.label}' is missing")
            out = out.filter(pc.invert(missing_label))
        return out

    def _assign(self, batch: pa.RecordBatch, index: int, offset: int,
                counters: dict[str, int]) -> np.ndarray:
        """0/1/2 = train/val/test for each row; see :func:`split_codes`."""
        plan = self.plan
        labels = batch.column(plan.label)
        keys = (batch.column(plan.key_column).cast(pa.string()).to_numpy(zero_copy_only=False)
                if plan.split_method == "hash" else None)
        return split_codes(labels, keys, index, offset, counters, plan)


def read_ahead(items: Iterator[_T]) -> Iterator[_T]:
    """``items``, with the next one produced in a background thread meanwhile.

    Parsing a batch (pyarrow, which releases the GIL) then overlaps with splitting,
    statistics and the Parquet write of the previous one: two cores busy instead of
    one. One batch ahead at most, so memory stays flat; the iterator is only ever
    advanced by one thread at a time, and its exceptions surface here.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]


def split_codes(labels: pa.Array, keys: np.ndarray | None, file_index: int, offset: int,
                counters: dict[str, int], plan: IngestPlan) -> np.ndarray:
    """Seeded split of one batch into train (0), val (1) and test (2).

    - hash: a seeded 64-bit hash of the key column (stable however the data grows
      or is reordered; stratified only in expectation).
    - random, stratified: the k-th row of class c in a file gets
      u = frac(h(seed, file, c) + k * golden ratio): a low-discrepancy sequence, so
      every class splits in the configured ratios (up to one row) while streaming,
      with a per-class counter as the only state.
    - random, not stratified: a seeded hash of (file index, row position).
    """
    hash_key = f"{plan.seed & 0xFFFFFFFFFFFFFFFF:016x}"
    if keys is not None:
        u = _unit(pd.util.hash_array(keys.astype(object), hash_key=hash_key))
    elif plan.stratify:
        strata = (pa.array(np.searchsorted(np.asarray(plan.label_bins),
                                           labels.to_numpy(zero_copy_only=False)))
                  if plan.label_bins else labels)
        u = _stratified_unit(strata, file_index, counters, hash_key)
    else:
        rows = (np.uint64(file_index) << np.uint64(40)) + np.arange(
            offset, offset + len(labels), dtype=np.uint64)
        u = _unit(pd.util.hash_array(rows, hash_key=hash_key))
    val, test = plan.fractions
    return np.where(u < 1.0 - val - test, 0, np.where(u < 1.0 - test, 1, 2))


def _stratified_unit(labels: pa.Array, file_index: int, counters: dict[str, int],
                     hash_key: str) -> np.ndarray:
    """frac(h(seed, file, class) + k * golden ratio), k = the row's rank within its class."""
    encoded = labels.dictionary_encode()
    classes = [str(c) for c in encoded.dictionary.to_pylist()]
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(classes)))
    rank = np.empty(len(codes), dtype=np.float64)
    rank[order] = np.arange(len(codes)) - starts[codes[order]]
    base = np.array([counters.get(c, 0) for c in classes], dtype=np.float64)
    for c, n in zip(classes, np.bincount(codes, minlength=len(classes)), strict=True):
        counters[c] = counters.get(c, 0) + int(n)
    names = np.array([f"{file_index}\x1f{c}" for c in classes], dtype=object)
    start = _unit(pd.util.hash_array(names, hash_key=hash_key))
    return np.modf(start[codes] + (base[codes] + rank) * _PHI)[0]


def _unit(hashes: np.ndarray) -> np.ndarray:
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class _WriteStats(beam.DoFn):
    """Write the per-split accumulators (pickled; read back by the driver)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, items: list[tuple[str, Any]]) -> None:
        merged: dict[str, dict[str, Any]] = {}
        for split, acc in items:
            merge_into(merged.setdefault(split, {}), acc)
        with FileSystems.create(self.path) as fh:
            fh.write(pickle.dumps(merged))


def _merge_bad(items: list[tuple[int, list[dict[str, str]]]]) -> dict[str, Any]:
    sample = [row for _, rows in items for row in rows][:20]
    return {"count": sum(n for n, _ in items), "sample": sample}


def _write_json(path: str, value: dict[str, Any]) -> None:
    with FileSystems.create(path) as fh:
        fh.write(json.dumps(value, indent=2).encode("utf-8"))


def build(p: beam.Pipeline, files: list[str], plan: IngestPlan, out: str) -> None:
    """Add the ingest transforms to pipeline ``p``; outputs land under ``out``."""
    results = (p | "Files" >> beam.Create(list(enumerate(files)))
               | "ReadAndSplit" >> beam.ParDo(ReadAndSplit(plan)).with_outputs(
                   *SPLITS, "bad", main="batches"))
    for split in SPLITS:
        _ = results[split] | f"Write-{split}" >> beam.io.WriteToParquetBatched(
            file_path_prefix=FileSystems.join(out, split, "part"), schema=plan.schema,
            codec="snappy", file_name_suffix=".parquet")
    _ = (results["batches"] | "Stats" >> beam.CombinePerKey(StatsCombineFn())
         | "StatsList" >> beam.combiners.ToList()
         | "WriteStats" >> beam.ParDo(_WriteStats(FileSystems.join(out, STATS_FILE))))
    _ = (results["bad"] | "BadList" >> beam.combiners.ToList()
         | "BadRows" >> beam.Map(_merge_bad)
         | "WriteBad" >> beam.Map(lambda v: _write_json(FileSystems.join(out, BAD_ROWS_FILE), v)))


def run(files: list[str], plan: IngestPlan, out: str, runner: str,
        options: dict[str, Any]) -> None:
    """Run the pipeline to completion; a DataError from a worker is re-raised cleanly."""
    try:
        with beam.Pipeline(runner=local_runner(runner),
                           options=pipeline_options(runner, options)) as p:
            build(p, files, plan, out)
    except DataError as err:
        raise DataError(str(err).split(" [while running", 1)[0]) from None
    except Exception as err:  # Beam wraps worker errors; keep our message if it is ours
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise DataError(str(cause).split(" [while running", 1)[0]) from None
        raise


def local_runner(runner: str) -> Any:
    """The in-process FnApiRunner for ``DirectRunner``.

    Beam 2.77's DirectRunner first tries the Prism runner, which downloads a
    binary from GitHub (no network here, and a hidden download in general);
    the FnApiRunner is what it falls back to, so use it directly.
    """
    if runner not in ("DirectRunner", "FnApiRunner"):
        return None
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    return fn_runner.FnApiRunner()


def load_results(out: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The per-split accumulators and the bad-row summary written by the pipeline."""
    with FileSystems.open(FileSystems.join(out, STATS_FILE)) as fh:
        stats = pickle.loads(fh.read())
    bad_path = FileSystems.join(out, BAD_ROWS_FILE)
    bad = {"count": 0, "sample": []}
    if FileSystems.exists(bad_path):
        with FileSystems.open(bad_path) as fh:
            bad = json.loads(fh.read())
    FileSystems.delete([p for p in (FileSystems.join(out, STATS_FILE), bad_path)
                        if FileSystems.exists(p)])
    return stats, bad

