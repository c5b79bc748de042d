"""PyTorch exports: TorchScript and ONNX files of an in-memory module."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)
INPUT_NAME, OUTPUT_NAME = "input", "output"
OPSET = 18


def export_torchscript(model: nn.Module, n_features: int, path: Path) -> Path:
    """Script the module (trace when scripting fails, as for some quantised graphs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        try:
            module = torch.jit.script(model)
        except Exception as err:
            log.info("scripting failed (%s); tracing instead", err)
            module = torch.jit.trace(model, torch.zeros(2, n_features))
        module.save(str(path))
    return path


def export_onnx(model: nn.Module, n_features: int, path: Path) -> Path:
    """One self-contained ONNX file (weights inline) with a dynamic batch dimension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(2, n_features),), str(path),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: batch},), external_data=False,
                          opset_version=OPSET, report=False)
    _strip_exporter_metadata(path)
    return path


def _strip_exporter_metadata(path: Path) -> None:
    """Drop the per-node debugging metadata torch's exporter records (its FX node, class
    hierarchy and a Python stack trace with this machine's source paths): inference
    never reads it, and on a small model it is several percent of the file."""
    import onnx

    model = onnx.load(str(path))
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    if not any(n.metadata_props for n in nodes):
        return
    for node in nodes:
        del node.metadata_props[:]
    onnx.save(model, str(path))
