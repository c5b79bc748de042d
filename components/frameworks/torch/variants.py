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
from components.export.candidates import Built, Candidate, VariantSet
from components.export.manifest import ExportFormat
from components.frameworks.base import ModelSpec
from components.frameworks.torch.export import export_onnx, export_torchscript
from components.frameworks.torch.training import finetune_loss, network_of

log = logging.getLogger(__name__)


def build_variants(model: nn.Module, spec: ModelSpec, train: ArraySplit, config: CompressConfig,
                   out_dir: Path, work: Path) -> Built:
    """fp32 exports into ``out_dir`` (they ship), compressed candidates into ``work``; a
    variant the model does not support is skipped with the reason (VariantSet)."""
    model = model.eval()
    n = spec.n_features
    found = VariantSet()
    script = found.add("torchscript", lambda: Candidate(
        "torchscript", ExportFormat.TORCHSCRIPT,
        export_torchscript(model, n, out_dir / "model.ts")), required=True)
    assert script is not None
    onnx = found.add("onnx", lambda: Candidate(
        "onnx", ExportFormat.ONNX, export_onnx(model, n, out_dir / "model.onnx")))
    calibration = train.x[:config.calibration_rows]

    def scripted(name: str, net: nn.Module, kind: str, note: str) -> Candidate:
        return Candidate(name, ExportFormat.TORCHSCRIPT,
                         export_torchscript(net, n, work / f"{name}.ts"), kind, script.name, note)

    def dynamic() -> Candidate:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notices
            net = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear},
                                                         dtype=torch.qint8)
        return scripted("torch_dynamic_int8", net, "dynamic_int8", "nn.Linear weights int8")

    def static() -> Candidate:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = static_int8(model, calibration)
        return scripted("torch_static_int8", net, "static_int8",
                        f"FX graph mode, x86 backend, {len(calibration)} calibration rows")

    def pruned() -> Candidate:
        net = pruned_copy(model, spec, train, config)
        return scripted("torch_pruned", net, "pruned",
                        f"{sparsity(net):.0%} zero weights, dense storage "
                        f"({config.finetune_epochs} fine-tune epochs)")

    found.add("torch_dynamic_int8", dynamic)
    found.add("torch_static_int8", static)
    found.add("torch_pruned", pruned)
    if onnx is not None:
        found.add("onnx_int8", lambda: onnx_candidates(onnx, calibration, work))
    return found.built(lambda x: logits(model, x))


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


def pruned_copy(model: nn.Module, spec: ModelSpec, train: ArraySplit,
                config: CompressConfig) -> nn.Module:
    """Global L1 unstructured pruning to ``pruning_sparsity``, fine-tuned with the mask kept,
    then made permanent (``prune.remove``): the zeros are in a dense tensor."""
    pruned = copy.deepcopy(model)
    params = _prunable(pruned)
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                              amount=config.pruning_sparsity)
    if config.finetune_epochs:
        _finetune(pruned, spec, train, config)
    for module, name in params:
        prune.remove(module, name)
    return pruned.eval()


def _finetune(model: nn.Module, spec: ModelSpec, train: ArraySplit,
              config: CompressConfig) -> None:
    """A short Adam fine-tune on the task's loss; the pruning masks keep pruned weights
    at zero."""
    loss_fn = finetune_loss(spec)
    net = network_of(model, spec)  # the same tensors: pruning masks stay in place
    optimizer = torch.optim.Adam(model.parameters(), lr=config.finetune_learning_rate)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(config.finetune_epochs):
        for batch in torch.randperm(len(x), generator=generator).split(config.finetune_batch_size):
            optimizer.zero_grad()
            loss_fn(net(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over the prunable layers."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    weights = torch.cat([layer.weight.detach().flatten() for layer in layers])
    return float((weights == 0).float().mean())
