"""Issue 5 figure: why int8 does not speed up the digits CNN at batch 1 on this CPU.

Two measurements in one run, single-threaded, batch-1 p50 over ``--calls`` calls
(components.compress.variants.latency_ms, the compress step's own timer):

1. The runtime's floor: an identity model of the same input width in ONNX
   Runtime and in the TFLite interpreter, the cost of a call that computes
   nothing. With the fp32 model's p50 it bounds any variant's speed-up:
   fp32 / floor, even if int8 arithmetic were free.
2. ONNX Runtime static int8 of the trained digits CNN in every format and type
   onnxruntime.quantization offers (QDQ / QOperator, int8 / uint8 activations,
   per-channel or per-tensor weights), against the fp32 export, with the node
   list of the graph ONNX Runtime actually runs (after its optimiser) and the
   test accuracy.

Usage: .venv/bin/python bench/bench_int8_formats.py [--epochs 5] [--calls 1000]
       [--rounds 3]
Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def trained(root: Path, epochs: int) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """(fp32 ONNX of a torch digits CNN, calibration rows, test x, test y)."""
    import mlflow

    from components.config import Framework, IngestConfig, TrainConfig
    from components.data.dataset import Split, read_arrays, read_metadata
    from components.frameworks import get_adapter
    from components.frameworks.torch.export import export_onnx
    from components.ingest.core import run_ingest
    from components.train.core import run_train
    from components.transform.core import run_transform

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    with mlflow.start_run():
        run_ingest(IngestConfig(source="sklearn:digits"), root / "raw")
        run_transform(root / "raw", root / "data", root / "t.json")
        with mlflow.start_run(nested=True):
            run_train(TrainConfig(framework=Framework.TORCH, epochs=epochs, show_progress=False),
                      root / "data", root / "model")
    meta = read_metadata(root / "data")
    train = read_arrays(root / "data", Split.TRAIN, meta)
    test = read_arrays(root / "data", Split.TEST, meta)
    model = get_adapter("torch").load_model(root / "model")
    return export_onnx(model, 64, root / "fp32.onnx"), train.x[:256], test.x, test.y


def int8_variants(fp32: Path, calibration: np.ndarray, root: Path) -> dict[str, Path]:
    """Static int8 of ``fp32`` in each format x activation type x weight granularity."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from components.compress.onnx_variants import _Calibration, _without_value_info

    source = _without_value_info(fp32, root / "source.onnx")
    name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]
                                ).get_inputs()[0].name
    out = {"fp32": fp32}
    for fmt in ("QDQ", "QOperator"):
        for act in ("QInt8", "QUInt8"):
            for per_channel in (True, False):
                label = f"{fmt} {act} {'per-channel' if per_channel else 'per-tensor'}"
                path = root / f"{label.replace(' ', '_')}.onnx"
                quantize_static(source, path, _Calibration(name, calibration.astype(np.float32)),
                                quant_format=getattr(QuantFormat, fmt),
                                activation_type=getattr(QuantType, act),
                                weight_type=QuantType.QInt8, per_channel=per_channel)
                out[label] = path
    return out


def optimised_nodes(path: Path, root: Path) -> list[str]:
    """Op types of the graph ONNX Runtime runs after its optimiser."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(root / f"optimised_{path.name}")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def floors(root: Path, width: int) -> dict[str, Path]:
    """Identity models of ``width`` inputs: ONNX and TFLite."""
    import onnx
    import tf_keras as keras
    from onnx import TensorProto, helper

    from components.frameworks.tensorflow.export import export_tflite

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, width])
          for n in ("input", "output")]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "id",
                              io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "identity.onnx"))
    identity = keras.Sequential([keras.Input((width,)), keras.layers.Lambda(lambda t: t * 1.0)])
    return {"onnx": root / "identity.onnx",
            "tflite": export_tflite(identity, width, root / "identity.tflite")}


def p50(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, calls: int,
        rounds: int) -> float:
    """Median over ``rounds`` of the batch-1 p50 (ms)."""
    from components.compress.variants import latency_ms

    return statistics.median(latency_ms(predict, x, 1, calls)["p50"] for _ in range(rounds))


def main() -> None:
    from components.export.runtime import load_predictor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        root = Path(tmp)
        fp32, calibration, x, y = trained(root, args.epochs)
        variants = int8_variants(fp32, calibration, root)
        floor = {fmt: p50(load_predictor(fmt, path, threads=1), x, args.calls, args.rounds)
                 for fmt, path in floors(root, x.shape[1]).items()}
        rows = []
        for label, path in variants.items():
            predict = load_predictor("onnx", path, threads=1)
            accuracy = float((predict(x).argmax(1) == y).mean())
            rows.append((label, accuracy, p50(predict, x, args.calls, args.rounds),
                         optimised_nodes(path, root)))
    base = rows[0][2]
    print(f"runtime floor, batch-1 p50: onnxruntime {floor['onnx'] * 1000:.1f} us, "
          f"tflite {floor['tflite'] * 1000:.1f} us; fp32 ONNX digits CNN {base * 1000:.1f} us "
          f"-> best possible speed-up over fp32 ONNX {base / floor['onnx']:.2f}x\n")
    print("| variant | accuracy | p50 b1 us | speed-up vs fp32 | nodes run | op types |")
    print("|---|---|---|---|---|---|")
    for label, accuracy, ms, nodes in rows:
        print(f"| {label} | {accuracy:.4f} | {ms * 1000:.1f} | {base / ms:.2f}x | {len(nodes)} "
              f"| {' '.join(nodes)} |")


if __name__ == "__main__":
    main()
