"""PyTorch compression variants: fp32 TorchScript/ONNX exports, dynamic and static int8,
pruning, and ONNX Runtime int8 of the ONNX export."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from components.compress.onnx_variants import onnx_candidates
from components.config import CompressConfig
from components.data.dataset import ArraySplit
from components.export.candidates import Built, Candidate
from components.export.manifest import ExportFormat
from components.frameworks.base import ModelSpec
from components.frameworks.torch.export import export_onnx, export_torchscript

log = logging.getLogger(__name__)


def build_variants(model: nn.Module, spec: ModelSpec, train: ArraySplit, config: CompressConfig,
                   out_dir: Path, work: Path) -> Built:
    """fp32 exports into ``out_dir`` (they ship), compressed candidates into ``work``."""
    model = model.eval()
    n = spec.n_features
    script = Candidate("torchscript", ExportFormat.TORCHSCRIPT,
                       export_torchscript(model, n, out_dir / "model.ts"))
    onnx = Candidate("onnx", ExportFormat.ONNX, export_onnx(model, n, out_dir / "model.onnx"))
    calibration = train.x[:config.calibration_rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
        dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear},
                                                         dtype=torch.qint8)
        static = static_int8(model, calibration)
    pruned = pruned_copy(model, train, config)
    candidates = [
        script, onnx,
        Candidate("torch_dynamic_int8", ExportFormat.TORCHSCRIPT,
                  export_torchscript(dynamic, n, work / "torch_dynamic_int8.ts"),
                  "dynamic_int8", script.name, "nn.Linear weights int8"),
        Candidate("torch_static_int8", ExportFormat.TORCHSCRIPT,
                  export_torchscript(static, n, work / "torch_static_int8.ts"), "static_int8",
                  script.name, f"FX graph mode, x86 backend, {len(calibration)} calibration rows"),
        Candidate("torch_pruned", ExportFormat.TORCHSCRIPT,
                  export_torchscript(pruned, n, work / "torch_pruned.ts"), "pruned", script.name,
                  f"{sparsity(pruned):.0%} zero weights, dense storage "
                  f"({config.finetune_epochs} fine-tune epochs)"),
        *onnx_candidates(onnx, calibration, work),
    ]
    return Built(candidates, reference=lambda x: logits(model, x))


@torch.no_grad()
def logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The in-memory model's output."""
    return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def static_int8(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    """Post-training static int8 in FX graph mode: observers calibrated on train rows."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    example = (torch.from_numpy(calibration[:2]),)
    prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                          example)
    with torch.no_grad():
        for start in range(0, len(calibration), 32):
            prepared(torch.from_numpy(calibration[start:start + 32]))
    return convert_fx(prepared).eval()


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def pruned_copy(model: nn.Module, train: ArraySplit, config: CompressConfig) -> nn.Module:
    """Global L1 unstructured pruning to ``pruning_sparsity``, fine-tuned with the mask kept,
    then made permanent (``prune.remove``): the zeros are in a dense tensor."""
    pruned = copy.deepcopy(model)
    params = _prunable(pruned)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                              amount=config.pruning_sparsity)
    if config.finetune_epochs:
        _finetune(pruned, train, config)
    for module, name in params:
        prune.remove(module, name)
    return pruned.eval()


def _finetune(model: nn.Module, train: ArraySplit, config: CompressConfig) -> None:
    """A short Adam fine-tune; the pruning masks keep pruned weights at zero."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.finetune_learning_rate)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(config.finetune_epochs):
        for batch in torch.randperm(len(x), generator=generator).split(config.finetune_batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over the prunable layers."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    weights = torch.cat([layer.weight.detach().flatten() for layer in layers])
    return float((weights == 0).float().mean())
