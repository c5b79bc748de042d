"""PyTorch: every module of twinflow that imports torch, behind one adapter.

``training`` (the networks and the training loop, DDP), ``export``
(TorchScript, ONNX), ``variants`` (dynamic/static int8, pruning),
``raw_layer`` (the fitted transform as a TorchScript module in front of the
network). Importing this package does not import torch.
"""

from components.frameworks.torch.adapter import TorchAdapter

ADAPTER = TorchAdapter()

__all__ = ["ADAPTER", "TorchAdapter"]
