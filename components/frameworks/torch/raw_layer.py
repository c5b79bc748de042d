"""The fitted transform as a TorchScript-able torch module in front of the network.

``RawInputModel(numeric, categorical)`` takes raw rows: ``numeric`` a float
tensor (rows x numeric features, NaN = missing) and ``categorical`` a
``List[List[str]]`` (rows x string features, '' = missing), in the order of
``FittedTransform.numeric`` / ``.categorical``. It applies the fitted
imputation, scaling, bucketising and vocabulary lookups exactly as
``FittedTransform.apply_arrays`` does (the shared output order), then the
network. Same function names as the TensorFlow package's raw_layer.
"""

# no `from __future__ import annotations`: TorchScript reads the class annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from components.transform.fitted import FITTED_FILE, FittedTransform

log = logging.getLogger(__name__)


class TorchTransform(nn.Module):
    """Imputation, scaling, bucket and vocabulary one-hots (float64 inside, float32 out)."""

    # declared for TorchScript, which cannot infer the type of an empty list
    fill: torch.Tensor
    scaled_idx: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor
    bucket_idx: list[int]
    boundaries: list[torch.Tensor]
    vocab: list[dict[str, int]]
    cat_fill: list[str]
    one_hot: list[bool]

    def __init__(self, fitted: FittedTransform) -> None:
        super().__init__()
        idx = {f.name: i for i, f in enumerate(fitted.numeric)}
        f64 = torch.float64
        self.register_buffer("fill", torch.tensor([f.fill for f in fitted.numeric], dtype=f64))
        self.register_buffer("scaled_idx", torch.tensor([idx[f.name] for f in fitted.scaled],
                                                        dtype=torch.long))
        self.register_buffer("shift", torch.tensor([f.shift for f in fitted.scaled], dtype=f64))
        self.register_buffer("scale", torch.tensor([f.scale for f in fitted.scaled], dtype=f64))
        self.bucket_idx = [idx[f.name] for f in fitted.bucketized]
        self.boundaries = [torch.tensor(f.boundaries, dtype=f64)
                                               for f in fitted.bucketized]
        self.vocab = [{v: i + 1 for i, v in enumerate(c.vocabulary)}
                                            for c in fitted.categorical]
        self.cat_fill = [c.fill for c in fitted.categorical]
        self.one_hot = [c.encoding == "onehot" for c in fitted.categorical]

    def forward(self, numeric: torch.Tensor, categorical: list[list[str]]) -> torch.Tensor:
        x = numeric.to(torch.float64)
        x = torch.where(torch.isnan(x), self.fill.expand_as(x), x)
        blocks = [(x.index_select(1, self.scaled_idx) - self.shift) / self.scale]
        for k, col in enumerate(self.bucket_idx):
            bounds = self.boundaries[k]
            bucket = torch.bucketize(x[:, col].contiguous(), bounds, right=True)
            blocks.append(nn.functional.one_hot(bucket, bounds.numel() + 1).to(torch.float64))
        for j in range(len(self.vocab)):
            codes: list[int] = []
            for row in categorical:
                value = row[j] if row[j] != "" else self.cat_fill[j]
                codes.append(self.vocab[j].get(value, 0))
            code = torch.tensor(codes, dtype=torch.long)
            if self.one_hot[j]:
                blocks.append(nn.functional.one_hot(code, len(self.vocab[j]) + 1)
                              .to(torch.float64))
            else:
                blocks.append(code.to(torch.float64).unsqueeze(1))
        return torch.cat(blocks, dim=1).to(torch.float32)


class RawInputModel(nn.Module):
    """The fitted transform followed by the trained network (outputs logits)."""

    def __init__(self, transform: TorchTransform, network: nn.Module) -> None:
        super().__init__()
        self.transform = transform
        self.network = network

    def forward(self, numeric: torch.Tensor, categorical: list[list[str]]) -> torch.Tensor:
        return self.network(self.transform(numeric, categorical))


def build_raw_model(model: nn.Module, fitted: FittedTransform) -> nn.Module:
    """The network with the transform in front, in eval mode."""
    return RawInputModel(TorchTransform(fitted), model.eval()).eval()


def export_raw_model(model: nn.Module, fitted: FittedTransform, path: Path) -> Path:
    """Script the raw-input model and save it as the TorchScript file ``path`` (the
    transform JSON beside it).

    A network that TorchScript cannot script (a user's model with Python control
    flow the compiler rejects) is traced on a transformed batch first; the
    transform around it is scripted either way (its string inputs cannot be traced).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    network = model.eval()
    try:
        scripted = torch.jit.script(build_raw_model(network, fitted))
    except Exception as err:
        log.info("scripting the raw-input model failed (%s); tracing the network", err)
        example = torch.zeros(2, len(fitted.output_columns()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings
            traced = torch.jit.trace(network, example)
        scripted = torch.jit.script(RawInputModel(TorchTransform(fitted), traced).eval())
    scripted.save(str(path))
    fitted.save(path.parent / FITTED_FILE)
    return path
