"""The built-in architectures as torch modules; the TensorFlow package's ``zoo`` builds
the same ones with the same parameter counts (tests/test_zoo.py checks).

Every builder takes the spec and keyword options and returns a module mapping
flat float32 rows (``spec.n_features``; images channels-last) to
``spec.n_outputs`` logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from components.errors import ConfigError
from components.frameworks.base import ModelSpec


class ChannelsFirst(nn.Module):
    """Reshape flat rows (N, H*W*C, channels-last order) to (N, C, H, W)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, c = self.shape
        return x.reshape(-1, h, w, c).permute(0, 3, 1, 2).contiguous()


def linear(spec: ModelSpec) -> nn.Module:
    """A linear model (logistic regression): the baseline."""
    return nn.Sequential(nn.Linear(spec.n_features, spec.n_outputs))


def mlp(spec: ModelSpec, depth: int = 2, width: int = 128, dropout: float = 0.0) -> nn.Module:
    """``depth`` hidden dense layers of ``width`` with ReLU (and dropout after each)."""
    layers: list[nn.Module] = []
    inputs = spec.n_features
    for _ in range(depth):
        layers += [nn.Linear(inputs, width), nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout else []
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, spec.n_outputs))


def cnn(spec: ModelSpec, filters: int = 32, hidden: int = 128) -> nn.Module:
    """The background articles' network: conv 3x3, max-pool 2, dense, dense."""
    h, w, c = _image(spec)
    flat = filters * ((h - 2) // 2) * ((w - 2) // 2)
    return nn.Sequential(
        ChannelsFirst(spec.input_shape),
        nn.Conv2d(c, filters, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, spec.n_outputs))


class _Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (a 1x1 strided projection when the shape
    changes), then ReLU."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or inputs != width:
            self.skip = nn.Sequential(nn.Conv2d(inputs, width, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def resnet(spec: ModelSpec, width: int = 16, depth: int = 2, stages: int = 2) -> nn.Module:
    """A small residual CNN for images of any size: a 3x3 stem, ``stages`` stages of
    ``depth`` blocks (width doubling, stride 2 from the second), global average
    pooling, a dense head."""
    _, _, c = _image(spec)
    layers: list[nn.Module] = [ChannelsFirst(spec.input_shape),
                               nn.Conv2d(c, width, 3, padding=1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    inputs = width
    for stage in range(stages):
        out = width * 2 ** stage
        for block in range(depth):
            layers.append(_Block(inputs, out, 2 if stage and not block else 1))
            inputs = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, spec.n_outputs)]
    return nn.Sequential(*layers)


def _image(spec: ModelSpec) -> tuple[int, int, int]:
    if spec.image_shape is None or len(spec.image_shape) != 3:
        raise ConfigError(f"model {spec.kind}: needs images (height, width, channels)")
    h, w, c = spec.image_shape
    return int(h), int(w), int(c)


ZOO: dict[str, Callable[..., Any]] = {"linear": linear, "mlp": mlp, "cnn": cnn,
                                      "resnet": resnet}
