"""ONNX Runtime quantisation of an fp32 ONNX export, the same for both frameworks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from components.export.candidates import Candidate
from components.export.manifest import ExportFormat

log = logging.getLogger(__name__)


class _Calibration:
    """Feeds calibration rows to ``quantize_static`` in small batches (a
    CalibrationDataReader by its ``get_next``, which ONNX Runtime checks by duck typing)."""

    def __init__(self, input_name: str, rows: np.ndarray, batch: int = 32) -> None:
        self._batches = iter([{input_name: rows[i:i + batch]} for i in range(0, len(rows), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def onnx_candidates(fp32: Candidate, calibration: np.ndarray, work: Path) -> list[Candidate]:
    """Dynamic int8 (weights int8, activations quantised per call) and static int8
    (QDQ, activation ranges from ``calibration`` rows) of ``fp32``."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

    work.mkdir(parents=True, exist_ok=True)
    source = _without_value_info(fp32.path, work / "onnx_fp32_source.onnx")
    dynamic = work / "onnx_int8_dynamic.onnx"
    quantize_dynamic(source, dynamic, weight_type=QuantType.QInt8)
    out = [Candidate("onnx_int8_dynamic", ExportFormat.ONNX, dynamic, "dynamic_int8",
                     fp32.name)]
    input_name = ort.InferenceSession(str(fp32.path), providers=["CPUExecutionProvider"]
                                      ).get_inputs()[0].name
    static = work / "onnx_int8_static.onnx"
    reader = _Calibration(input_name, np.ascontiguousarray(calibration, np.float32))
    quantize_static(source, static, reader, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    out.append(Candidate("onnx_int8_static", ExportFormat.ONNX, static, "static_int8", fp32.name,
                         note=f"calibrated on {len(calibration)} train rows"))
    return out


def _without_value_info(path: Path, out: Path) -> Path:
    """A copy without intermediate shape annotations.

    torch's dynamo exporter records value_info that ONNX shape inference, run by
    the quantiser, rejects ("Inferred shape and existing shape differ" on a Gemm);
    the quantiser infers the shapes again anyway.
    """
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(out))
    return out
