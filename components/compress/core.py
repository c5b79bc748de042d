"""Compress: int8 post-training quantisation with the accuracy re-measured.

PyTorch gets dynamic quantisation of its dense layers, TensorFlow a TFLite model
with default (dynamic-range) optimisation. Sizes are compared within one
serialisation format (TorchScript or TFLite, fp32 vs int8) so the ratio is the
quantisation's alone.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from components.config import CompressConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressResult:
    """Sizes and accuracies of the fp32 reference and the int8 model."""

    fp32_bytes: int
    int8_bytes: int
    fp32_accuracy: float
    int8_accuracy: float

    @property
    def size_ratio(self) -> float:
        """int8 size as a fraction of fp32."""
        return self.int8_bytes / self.fp32_bytes


def run_compress(config: CompressConfig, data_dir: Path, model_dir: Path,
                 out_dir: Path) -> CompressResult:
    """Quantise, re-measure test accuracy of both files, keep the int8 one in ``out_dir``."""
    meta = read_metadata(data_dir)
    test = read_arrays(data_dir, Split.TEST, meta)
    adapter = get_adapter(config.framework)
    model = adapter.load_model(model_dir)
    work = out_dir / "work"
    fp32_path, int8_path = adapter.quantize(model, ModelSpec.load(model_dir), test.x[:100], work)
    predictors = {p: adapter.load_quantized(p) for p in (fp32_path, int8_path)}
    accuracy = {p: float((f(test.x).argmax(1) == test.y).mean()) for p, f in predictors.items()}
    latency = {kind: latency_ms(predictors[p], test.x)
               for kind, p in (("fp32", fp32_path), ("int8", int8_path))}
    result = CompressResult(fp32_path.stat().st_size, int8_path.stat().st_size,
                            accuracy[fp32_path], accuracy[int8_path])
    final = out_dir / f"model_int8{int8_path.suffix}"
    shutil.move(int8_path, final)
    shutil.rmtree(work)
    mlflow.log_params({"method": "dynamic-int8", "format": final.suffix.lstrip(".")})
    mlflow.log_metrics({"fp32_bytes": result.fp32_bytes, "int8_bytes": result.int8_bytes,
                        "size_ratio": result.size_ratio, "fp32_accuracy": result.fp32_accuracy,
                        "int8_accuracy": result.int8_accuracy,
                        "accuracy_drop": result.fp32_accuracy - result.int8_accuracy,
                        **{f"latency_{q}_ms_{kind}": v for kind, qs in latency.items()
                           for q, v in qs.items()}})
    mlflow.log_artifact(str(final), artifact_path="compressed")
    log.info("int8 model: %.2fx the fp32 size, accuracy %.4f -> %.4f", result.size_ratio,
             result.fp32_accuracy, result.int8_accuracy)
    return result


def latency_ms(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
               calls: int = 200) -> dict[str, float]:
    """Batch-1 CPU latency percentiles (ms) over ``calls`` single-row predictions."""
    rows = [x[i % len(x)][None, :] for i in range(calls + 10)]
    for row in rows[:10]:  # warm-up
        predict(row)
    times = []
    for row in rows[10:]:
        start = time.perf_counter()
        predict(row)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))}
