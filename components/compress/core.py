"""Compress: a set of variants measured against the fp32 exports in one run, a gate that
picks the best passing one, and an exports directory for push and the model server.

The framework adapter builds the variants (``build_variants``; PyTorch: dynamic
int8, FX static int8, pruning as TorchScript; TensorFlow: TFLite dynamic range,
full int8, float16, tfmot pruning; both: ONNX Runtime dynamic and static int8
of the ONNX export); this step knows them only by format, so a torch run never
imports TensorFlow. See ``variants.select_best`` for what "best" means.

The output directory is an exports directory (``components.export.manifest``):
the fp32 exports, the chosen variant (the preferred entry; fp32 ONNX when none
passes the gate), the raw-input model with the fitted transform inside
(``components.export.raw``) and ``compression.json`` with the whole table.
Every shipped entry is reloaded in a fresh process and compared with the
in-memory model (the raw one on probe rows through the fitted transform).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from components.compress.report import log_report
from components.compress.variants import (
    QualityGate,
    Selection,
    VariantResult,
    measure,
    select_best,
)
from components.config import CompressConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.export.candidates import Built, Candidate, RawModel
from components.export.manifest import FP32, ExportEntry, ExportFormat, ExportManifest
from components.export.raw import RAW_ENTRY, probe_rows, raw_exports
from components.export.verify import verify_exports
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec
from components.tasks import Outputs
from components.transform.fitted import FittedTransform

log = logging.getLogger(__name__)
COMPRESSION_FILE = "compression.json"
_VERIFY_ROWS = 64


@dataclass(frozen=True)
class CompressResult:
    """The chosen variant against its fp32 baseline, plus the whole table."""

    variant: str  # "" when no variant passed the gate
    fp32_bytes: int
    int8_bytes: int
    fp32_score: float  # the gate's metric (accuracy, or RMSE for regression)
    int8_score: float
    results: list[VariantResult]
    preferred: str
    rejected: dict[str, str] = field(default_factory=dict)  # variant -> why the gate said no
    metric: str = "accuracy"

    @property
    def size_ratio(self) -> float:
        """Chosen variant's size as a fraction of its fp32 baseline's."""
        return self.int8_bytes / self.fp32_bytes


def run_compress(config: CompressConfig, data_dir: Path, model_dir: Path,
                 out_dir: Path) -> CompressResult:
    """Build and measure every variant, gate them, write the exports directory ``out_dir``."""
    meta = read_metadata(data_dir)
    train, test = read_arrays(data_dir, Split.TRAIN, meta), read_arrays(data_dir, Split.TEST, meta)
    adapter = get_adapter(config.framework)
    model = adapter.load_model(model_dir)
    spec = ModelSpec.load(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir.parent / f".{out_dir.name}-work"
    try:
        built = adapter.build_variants(model, spec, train, config, out_dir, work)
        gate = QualityGate.for_task(meta.task_object, spec.output_kind, config)
        results = [measure(c, test.x, test.y, config.latency_calls, gate)
                   for c in built.candidates]
        selection = select_best(results, gate, config.latency_tie)
        manifest, sources = _write_exports(built, results, selection, meta.features,
                                           meta.classes, spec.output_kind, config, out_dir,
                                           adapter.raw_model(model_dir))
        x = test.x[:_VERIFY_ROWS]
        references = _references(built, manifest, out_dir, x)
        probe = _raw_references(built, manifest, out_dir, sources, references,
                                spec.output_kind)
        verify_exports(out_dir, references, x, config.verify_atol, probe)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = _result(results, selection, manifest.preferred, gate.metric)
    log_report(config, results, selection, result.variant, gate)
    _log_metrics(result, results)
    return result


def _write_exports(built: Built, results: list[VariantResult], selection: Selection,
                   features: list[str], classes: list[str], outputs: Outputs,
                   config: CompressConfig, out_dir: Path,
                   raw_model: RawModel | None) -> tuple[ExportManifest, dict[str, str]]:
    """Manifest of the fp32 exports, the chosen variant (moved into ``out_dir``) and the
    raw-input entries; plus the source entry of each raw one (see ``RawExports``)."""
    sizes = {r.name: r.bytes for r in results}
    entries = {c.name: _entry(c, c.path.relative_to(out_dir), sizes[c.name])
               for c in built.candidates if c.variant == FP32}
    # Without a passing variant: fp32 ONNX (any runtime serves it), else the framework's own.
    preferred = "onnx" if "onnx" in entries else next(iter(entries))
    if selection.best is not None:
        chosen = next(c for c in built.candidates if c.name == selection.best.name)
        # An ONNX variant goes in a folder of its own as model.onnx: the layout KServe's
        # built-in ONNX runtime loads (see components.push.serving).
        rel = (Path(chosen.name) / "model.onnx" if chosen.format == ExportFormat.ONNX
               else Path(chosen.path.name))
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(chosen.path, out_dir / rel)
        entries[chosen.name] = _entry(chosen, rel, sizes[chosen.name])
        preferred = chosen.name
    raw = raw_exports(raw_model, out_dir, entries, built.raw_exporters)
    missing = dict(built.skipped)
    if raw is None:
        missing[RAW_ENTRY] = ("the framework writes no raw-input model" if raw_model is None
                              else "the data set has no fitted transform")
    manifest = ExportManifest(framework=config.framework,
                              features=features, classes=classes, output=outputs,
                              entries={**entries, **(raw.entries if raw else {})},
                              preferred=preferred, raw_features=raw.features if raw else None,
                              skipped=missing)
    manifest.save(out_dir)
    table = {"max_accuracy_drop": config.max_accuracy_drop,
             "max_relative_change": config.max_relative_change, "chosen": preferred,
             "passed": selection.best is not None, "rejected": selection.rejected,
             "skipped": built.skipped,
             "variants": [r.row() for r in results]}
    (out_dir / COMPRESSION_FILE).write_text(json.dumps(table, indent=2), encoding="utf-8")
    return manifest, raw.sources if raw else {}


def _entry(candidate: Candidate, path: Path, size: int) -> ExportEntry:
    return ExportEntry(format=candidate.format, path=path.as_posix(), variant=candidate.variant,
                       bytes=size)


def _references(built: Built, manifest: ExportManifest, out_dir: Path,
                x: np.ndarray) -> dict[str, np.ndarray]:
    """In-memory predictions per shipped entry: the fp32 model for the fp32 exports; for
    the chosen variant, the file as loaded and measured in this process."""
    from components.export.runtime import load_predictor

    fp32 = built.reference(x)
    return {name: fp32 if entry.variant == FP32
            else load_predictor(entry.format, out_dir / entry.path)(x)
            for name, entry in manifest.entries.items() if entry.input == "transformed"}


def _raw_references(built: Built, manifest: ExportManifest, out_dir: Path,
                    sources: dict[str, str], references: dict[str, np.ndarray],
                    outputs: Outputs) -> pd.DataFrame | None:
    """Probe rows for the raw entries, adding each one's reference to ``references``: the
    probabilities of what it wraps (the in-memory model, or the compressed file as loaded
    here) on the rows after the fitted transform; None without raw entries."""
    from components.export.runtime import load_predictor

    if not sources or manifest.raw_features is None:
        return None
    fitted = FittedTransform.load(out_dir / manifest.raw_features.transform)
    rows = probe_rows(fitted)
    x = fitted.apply(rows)
    fp32 = outputs.answers(built.reference(x))
    for name, source in sources.items():
        entry = manifest.entries.get(source)
        references[name] = (fp32 if entry is None or entry.variant == FP32
                            else outputs.answers(load_predictor(entry.format,
                                                                out_dir / entry.path)(x)))
    return rows


def _result(results: list[VariantResult], selection: Selection, preferred: str,
            metric: str) -> CompressResult:
    by_name = {r.name: r for r in results}
    chosen = selection.best or by_name[preferred]
    base = by_name.get(chosen.baseline, chosen)
    return CompressResult(chosen.name if selection.best else "", base.bytes, chosen.bytes,
                          base.score, chosen.score, results, preferred, selection.rejected, metric)


def _log_metrics(result: CompressResult, results: list[VariantResult]) -> None:
    """Metrics the compare step reads (``int8_*`` = the chosen variant) plus every row's."""
    by_name = {r.name: r for r in results}
    chosen = by_name[result.preferred]
    base = by_name.get(chosen.baseline, chosen)
    metric = result.metric
    metrics = {"fp32_bytes": result.fp32_bytes, "int8_bytes": result.int8_bytes,
               "size_ratio": result.size_ratio, f"fp32_{metric}": result.fp32_score,
               f"int8_{metric}": result.int8_score,
               f"{metric}_change": result.int8_score - result.fp32_score,
               "compression_passed": float(bool(result.variant))}
    for kind, row in (("fp32", base), ("int8", chosen)):
        metrics |= {f"latency_p50_ms_{kind}": row.p50_b1_ms,
                    f"latency_p99_ms_{kind}": row.p99_b1_ms,
                    f"latency_p50_ms_b64_{kind}": row.p50_b64_ms,
                    f"latency_p99_ms_b64_{kind}": row.p99_b64_ms}
    for r in results:
        metrics |= {f"{r.name}.bytes": r.bytes, f"{r.name}.{metric}": r.score,
                    f"{r.name}.p50_b1_ms": r.p50_b1_ms, f"{r.name}.p50_b64_ms": r.p50_b64_ms}
    mlflow.log_metrics(metrics)
    mlflow.log_params({"compression_variant": result.variant or "none",
                       "exported_formats": ",".join(sorted({r.format for r in results}))})
    log.info("chosen variant %s: %.2fx the fp32 size, %s %.4f -> %.4f",
             result.variant or "none (fp32 ONNX)", result.size_ratio, metric, result.fp32_score,
             result.int8_score)
