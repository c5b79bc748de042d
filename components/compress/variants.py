"""Compression variants: one result type, their measurement, the gate, the table.

Every variant is a file in one of the export formats. Each is measured on the
same test rows in the same process: size on disk (and gzip size, which is where
pruning's zeros show), test accuracy, and CPU latency p50/p99 at batch 1 and 64.
A variant is compared with the fp32 export of its own format (its ``baseline``),
so a ratio is the compression's alone, not a change of runtime.
"""

from __future__ import annotations

import gzip
import io
import logging
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from components.config import CompressConfig
from components.export.candidates import Candidate
from components.export.manifest import FP32, path_bytes
from components.export.runtime import Predict, load_predictor
from components.tasks import Outputs, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VariantResult:
    """One row of the compression table."""

    name: str
    format: str
    variant: str
    baseline: str
    bytes: int
    gzip_bytes: int
    score: float  # the gate's metric: test accuracy, or test RMSE for regression
    p50_b1_ms: float
    p99_b1_ms: float
    p50_b64_ms: float
    p99_b64_ms: float
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def is_fp32(self) -> bool:
        """An fp32 reference row rather than a compressed variant."""
        return self.variant == FP32

    def row(self) -> dict[str, object]:
        """The table row (flat, for mlflow.log_table and printing)."""
        out = asdict(self)
        out.pop("extra")
        return out


@dataclass(frozen=True)
class Selection:
    """The gate's verdict: the chosen variant (None if none passed) and why each failed."""

    best: VariantResult | None
    rejected: dict[str, str]


@dataclass(frozen=True)
class QualityGate:
    """How a variant's test score is measured and how much worse it may be than its
    baseline: accuracy with an absolute drop (classifiers), or RMSE with a relative
    growth (regression: an absolute limit would depend on the label's units)."""

    outputs: Outputs
    limit: float
    metric: str = "accuracy"

    @classmethod
    def for_task(cls, task: Task, outputs: Outputs, config: CompressConfig) -> QualityGate:
        """The gate of ``task`` with the limits of ``config``."""
        if task.is_classifier:
            return cls(outputs, config.max_accuracy_drop)
        return cls(outputs, config.max_relative_change, "rmse")

    @property
    def relative(self) -> bool:
        """Limits a relative change (RMSE), not an absolute drop (accuracy)."""
        return not self.outputs.is_classifier

    def score(self, outputs: np.ndarray, y: np.ndarray) -> float:
        """Accuracy, or RMSE in the label's units, of a variant's raw outputs."""
        answers = self.outputs.answers(outputs)
        if self.relative:
            return float(np.sqrt(np.mean((answers - y) ** 2)))
        return float((answers.argmax(1) == y).mean())

    def worse_by(self, base: float, score: float) -> float:
        """How much worse ``score`` is than ``base`` (accuracy points, or a fraction)."""
        if self.relative:
            return (score - base) / base if base > 0 else score - base
        return base - score

    def describe(self, worse: float) -> str:
        """Why a variant failed the gate."""
        if self.relative:
            return f"RMSE {worse:+.2%} > {self.limit:.2%}"
        return f"accuracy drop {worse:.4f} > {self.limit:.4f}"


def select_best(results: Sequence[VariantResult], gate: QualityGate,
                latency_tie: float = 0.10) -> Selection:
    """Pick the best compressed variant whose score passes the gate.

    The change is measured against the variant's own fp32 baseline. "Best" is the
    fastest batch-1 p50 among passing variants (what an online model server pays
    per request; every passing variant is already accurate enough), where p50s
    within ``latency_tie`` (a fraction) of the fastest count as equal and the
    smaller file wins among them. Without the band, timing noise of a few
    microseconds between near-identical runtimes (TFLite fp32-sized pruned
    against int8, say) would pick a variant that saves nothing.
    """
    by_name = {r.name: r for r in results}
    passing, rejected = [], {}
    for r in results:
        if r.is_fp32:
            continue
        base = by_name.get(r.baseline)
        if base is None:
            rejected[r.name] = f"no fp32 baseline '{r.baseline}'"
            continue
        worse = gate.worse_by(base.score, r.score)
        if worse > gate.limit:
            rejected[r.name] = gate.describe(worse)
        else:
            passing.append(r)
    if not passing:
        return Selection(None, rejected)
    fastest = min(r.p50_b1_ms for r in passing)
    tied = [r for r in passing if r.p50_b1_ms <= fastest * (1 + latency_tie)]
    return Selection(min(tied, key=lambda r: (r.bytes, r.p50_b1_ms)), rejected)


def measure(candidate: Candidate, x: np.ndarray, y: np.ndarray, calls: int,
            gate: QualityGate, predict: Predict | None = None) -> VariantResult:
    """Size, score and single-threaded latency of one candidate (its format's runtime)."""
    predict = predict or load_predictor(candidate.format, candidate.path, threads=1)
    score = gate.score(predict(x), y)
    b1 = latency_ms(predict, x, 1, calls)
    b64 = latency_ms(predict, x, 64, max(calls // 4, 5))
    size = path_bytes(candidate.path)
    return VariantResult(candidate.name, candidate.format.value, candidate.variant,
                         candidate.baseline, size, gzip_bytes(candidate.path), score,
                         b1["p50"], b1["p99"], b64["p50"], b64["p99"], candidate.note)


def latency_ms(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int,
               calls: int) -> dict[str, float]:
    """CPU latency percentiles (ms) of ``calls`` predictions of ``batch`` rows, after warm-up."""
    batches = [np.take(x, range(i * batch, (i + 1) * batch), axis=0, mode="wrap")
               for i in range(calls + 5)]
    for b in batches[:5]:
        predict(b)
    times = []
    for b in batches[5:]:
        start = time.perf_counter()
        predict(b)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}


def gzip_bytes(path: Path) -> int:
    """Size after gzip (a tar of a directory): zeroed weights compress, dense ones barely."""
    buffer = io.BytesIO()
    if path.is_dir():
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(path, arcname=path.name)
        return buffer.tell()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, path.open("rb") as src:
        shutil.copyfileobj(src, gz)
    return buffer.tell()
