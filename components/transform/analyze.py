"""Analyzers: fit the transform in Apache Beam over the train split only.

The fit is the ingest's statistics pass again (the same mergeable
``StatsCombineFn`` over Arrow record batches) run on the train shards alone,
so validation and test rows never leak into means, ranges, quantile
boundaries or vocabularies, and the fit runs on any Beam runner. The
accumulators give everything the analyzers need: mean and M2 (standardise),
min and max (min-max), a quantile sketch (bucket boundaries, median) and exact
value counts (vocabulary, most frequent value).
"""

from __future__ import annotations

import logging
import math
import pickle
import tempfile
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from components.data.dataset import DatasetMetadata, Split, split_path
from components.data.statistics import CategoricalAcc, NumericAcc, StatsCombineFn
from components.errors import DataError
from components.ingest.beam_pipeline import local_runner, pipeline_options
from components.transform.fitted import (
    CategoricalChoice,
    CategoricalFit,
    FittedTransform,
    NumericChoice,
    NumericFit,
    TransformConfig,
)

log = logging.getLogger(__name__)


class _WriteAcc(beam.DoFn):
    """Write the merged accumulators where the driver reads them back."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, acc: dict[str, Any]) -> None:
        with FileSystems.create(self.path) as fh:
            fh.write(pickle.dumps(acc))


def _features_only(table: pa.Table, features: list[str]) -> list[pa.RecordBatch]:
    return table.select(features).to_batches()


def train_accumulators(data_dir: Path, meta: DatasetMetadata, config: TransformConfig,
                       with_label: bool = False) -> dict[str, Any]:
    """Per-feature accumulators over the train split (and the label's, for a regression
    label's scaling), computed by a Beam pipeline."""
    columns = [*meta.features, meta.label] if with_label else meta.features
    train = split_path(data_dir, Split.TRAIN)
    if not train.exists():
        raise DataError(f"{data_dir}: no 'train' split")
    pattern = str(train / "*.parquet") if train.is_dir() else str(train)
    with tempfile.TemporaryDirectory(prefix="twinflow-analyze-") as tmp:
        out = str(Path(tmp) / "acc.pkl")
        with beam.Pipeline(runner=local_runner(config.runner),
                           options=pipeline_options(config.runner,
                                                    dict(config.pipeline_options))) as p:
            _ = (p | "ReadTrain" >> beam.io.ReadFromParquetBatched(pattern, columns=columns)
                 | "Batches" >> beam.FlatMap(_features_only, columns)
                 | "Analyze" >> beam.CombineGlobally(StatsCombineFn())
                 | "Write" >> beam.ParDo(_WriteAcc(out)))
        with open(out, "rb") as fh:
            acc: dict[str, Any] = pickle.loads(fh.read())
    return acc


def fit_transform(data_dir: Path, meta: DatasetMetadata,
                  config: TransformConfig) -> FittedTransform:
    """Fit every feature's analyzer on the train split."""
    regression = not meta.task_object.is_classifier
    acc = train_accumulators(data_dir, meta, config, with_label=regression)
    numeric, categorical = [], []
    for name in meta.features:
        col = acc.get(name)
        if isinstance(col, NumericAcc):
            numeric.append(_fit_numeric(name, col, config.numeric_for(name)))
        elif isinstance(col, CategoricalAcc):
            categorical.append(_fit_categorical(name, col, config.categorical_for(name)))
        else:
            raise DataError(f"{data_dir}: feature column '{name}' not in the train split")
    unknown = sorted(set(config.features) - set(meta.features))
    if unknown:
        log.warning("transform options name unknown features %s", unknown[:10])
    rows = meta.rows.get(Split.TRAIN.value, 0)
    shift, scale = _label_scaling(acc.get(meta.label)) if regression else (0.0, 1.0)
    return FittedTransform(label=meta.label, classes=meta.classes, task=meta.task,
                           label_shift=shift, label_scale=scale, numeric=numeric,
                           categorical=categorical, fitted_on_rows=rows)


def _label_scaling(acc: Any) -> tuple[float, float]:
    """Mean and standard deviation of a regression label over the train split."""
    if not isinstance(acc, NumericAcc) or acc.count == 0:
        raise DataError("regression label: no numeric values in the train split")
    std = math.sqrt(acc.m2 / acc.count)
    return acc.mean, std if std > 0 else 1.0


def _fit_numeric(name: str, acc: NumericAcc, choice: NumericChoice) -> NumericFit:
    """Fill value and scaling of one numeric column; constant columns keep scale 1."""
    has = acc.count > 0
    quantiles = np.asarray(acc.sketch.quantiles(), dtype=np.float64) if has else np.empty(0)
    if choice.impute == "constant" or not has:
        fill = choice.fill_value
    elif choice.impute == "median":
        fill = float(np.median(quantiles)) if len(quantiles) else acc.mean
    else:
        fill = acc.mean
    shift, scale, boundaries = 0.0, 1.0, []
    if choice.scale == "standard" and has:
        std = math.sqrt(acc.m2 / acc.count)
        shift, scale = acc.mean, std if std > 0 else 1.0
    elif choice.scale == "minmax" and has:
        span = acc.max - acc.min
        shift, scale = acc.min, span if span > 0 else 1.0
    elif choice.scale == "bucketize" and len(quantiles):
        qs = np.linspace(0.0, 1.0, choice.buckets + 1)[1:-1]
        # float32-exact: TF's Bucketize keeps its boundaries as float32
        cuts = np.unique(np.quantile(quantiles, qs).astype(np.float32))
        boundaries = [float(b) for b in cuts]
    return NumericFit(name=name, impute=choice.impute, fill=float(fill), mode=choice.scale,
                      shift=float(shift), scale=float(scale), boundaries=boundaries)


def _fit_categorical(name: str, acc: CategoricalAcc,
                     choice: CategoricalChoice) -> CategoricalFit:
    """Vocabulary by descending frequency (ties by value), capped; fill = most frequent."""
    ranked = sorted(acc.counts.items(), key=lambda kv: (-kv[1], kv[0]))
    vocab = [v for v, n in ranked if n >= choice.min_frequency and v != ""][:choice.max_vocab]
    if acc.truncated:
        log.warning("feature '%s': more distinct values than the statistics keep; the "
                    "vocabulary holds the most frequent ones seen", name)
    fill = choice.fill_value if choice.impute == "constant" or not vocab else vocab[0]
    return CategoricalFit(name=name, impute=choice.impute, fill=fill,
                          encoding=choice.encoding, vocabulary=vocab)
