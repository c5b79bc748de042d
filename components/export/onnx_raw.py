"""The fitted transform as an ONNX graph in front of the ONNX network: raw rows in.

PyTorch and TensorFlow both export their network to ONNX, so one converter
serves both: the transform (:class:`FittedTransform`) becomes standard ONNX
operators (``IsNaN``/``Where`` imputation, ``Sub``/``Div`` scaling, bucket
counts by ``GreaterOrEqual``/``ReduceSum``, ``OneHot``) plus ``LabelEncoder``
of the ``ai.onnx.ml`` domain for vocabularies, with imputation, scaling and
bucketing in float64 like the NumPy, torch and Keras versions (then float32,
as they cast; one-hots are float32 because onnxruntime's OneHot has no double
kernel, exact either way), and ``onnx.compose.merge_models`` joins it to the
network. The result takes ``numeric`` (float64, rows x numeric features, NaN =
missing) and ``categorical`` (string, rows x string features, '' = missing),
the inputs of the TorchScript and SavedModel raw-input models, and returns the
network's logits. Any ONNX runtime serves it; nothing of the project is needed
at serving time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from components.transform.fitted import FittedTransform

FEATURES = "features"
_ML_OPSET = 2  # LabelEncoder with string keys, as onnxruntime implements it


def with_transform(network_path: Path, fitted: FittedTransform, out_path: Path) -> Path:
    """Write the network at ``network_path`` with the transform in front to ``out_path``."""
    network = onnx.load(str(network_path))
    opset = next(o.version for o in network.opset_import if o.domain in ("", "ai.onnx"))
    transform = transform_model(fitted, opset, network.ir_version)
    graph_inputs = {i.name for i in network.graph.initializer}
    [net_input] = [i.name for i in network.graph.input if i.name not in graph_inputs]
    merged = compose.merge_models(transform, network, io_map=[(FEATURES, net_input)])
    onnx.checker.check_model(merged)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(out_path))
    return out_path


def transform_model(fitted: FittedTransform, opset: int, ir_version: int) -> onnx.ModelProto:
    """The transform alone: (numeric, categorical) -> float32 ``features``."""
    builder = _Graph()
    blocks: list[str] = []
    if fitted.numeric:
        x = builder.impute_numeric(fitted)
        blocks += builder.scaled(fitted, x) + builder.buckets(fitted, x)
    for j, c in enumerate(fitted.categorical):
        blocks.append(builder.vocabulary(j, c.fill, c.vocabulary, c.encoding == "onehot"))
    joined = builder.op("Concat", blocks, axis=1) if len(blocks) > 1 else blocks[0]
    builder.nodes.append(helper.make_node("Cast", [joined], [FEATURES], to=TensorProto.FLOAT))
    inputs = [helper.make_tensor_value_info("numeric", TensorProto.DOUBLE,
                                           ["N", len(fitted.numeric)]),
              helper.make_tensor_value_info("categorical", TensorProto.STRING,
                                            ["N", len(fitted.categorical)])]
    output = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT,
                                           ["N", len(fitted.output_columns())])
    graph = helper.make_graph(builder.nodes, "fitted_transform", inputs, [output],
                              initializer=builder.constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("ai.onnx.ml", _ML_OPSET)])
    model.ir_version = ir_version
    return model


class _Graph:
    """Nodes and constants of the transform graph, with generated names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, stem: str) -> str:
        self._count += 1
        return f"t_{stem}_{self._count}"

    def const(self, value: np.ndarray | list[object], stem: str = "c") -> str:
        name = self._name(stem)
        self.constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs: Any) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain, **attrs))
        return out

    def impute_numeric(self, fitted: FittedTransform) -> str:
        fill = self.const(np.array([[f.fill for f in fitted.numeric]], dtype=np.float64))
        return self.op("Where", [self.op("IsNaN", ["numeric"]), fill, "numeric"])

    def scaled(self, fitted: FittedTransform, x: str) -> list[str]:
        if not fitted.scaled:
            return []
        idx = {f.name: i for i, f in enumerate(fitted.numeric)}
        cols = self.op("Gather", [x, self.const(np.array([idx[f.name] for f in fitted.scaled],
                                                         dtype=np.int64))], axis=1)
        shift = self.const(np.array([[f.shift for f in fitted.scaled]], dtype=np.float64))
        scale = self.const(np.array([[f.scale for f in fitted.scaled]], dtype=np.float64))
        scaled = self.op("Div", [self.op("Sub", [cols, shift]), scale])
        return [self.op("Cast", [scaled], to=TensorProto.FLOAT)]

    def buckets(self, fitted: FittedTransform, x: str) -> list[str]:
        """One-hot of the count of boundaries <= x (NumPy's searchsorted, side='right')."""
        idx = {f.name: i for i, f in enumerate(fitted.numeric)}
        out = []
        for f in fitted.bucketized:
            col = self.op("Gather", [x, self.const(np.array([idx[f.name]], dtype=np.int64))],
                          axis=1)
            bounds = self.const(np.array([f.boundaries], dtype=np.float64))
            above = self.op("Cast", [self.op("GreaterOrEqual", [col, bounds])],
                            to=TensorProto.INT64)
            bucket = self.op("ReduceSum", [above, self.const(np.array([1], dtype=np.int64))],
                             keepdims=0)
            out.append(self._one_hot(bucket, len(f.boundaries) + 1))
        return out

    def vocabulary(self, j: int, fill: str, vocabulary: list[str], one_hot: bool) -> str:
        """Column ``j`` of ``categorical``: word -> 1.., unseen -> 0, '' -> the fill's code
        (one lookup: string Equal/Where need opset 19, the networks export older ones)."""
        col = self.op("Gather", ["categorical", self.const(np.array(j, dtype=np.int64))], axis=1)
        codes = {v: i + 1 for i, v in enumerate(vocabulary)}
        if "" not in codes:
            codes[""] = codes.get(fill, 0)
        code = self.op("LabelEncoder", [col], domain="ai.onnx.ml", keys_strings=list(codes),
                       values_int64s=list(codes.values()), default_int64=0)
        if one_hot:
            return self._one_hot(code, len(vocabulary) + 1)
        as_float = self.op("Cast", [code], to=TensorProto.FLOAT)
        return self.op("Unsqueeze", [as_float, self.const(np.array([1], dtype=np.int64))])

    def _one_hot(self, index: str, depth: int) -> str:
        return self.op("OneHot", [index, self.const(np.array(depth, dtype=np.int64)),
                                  self.const(np.array([0.0, 1.0], dtype=np.float32))], axis=-1)
