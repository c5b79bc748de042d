"""The model a train step builds: its spec from the run's parameters, and one forward
pass on a real batch before any training, so that a broken builder fails in seconds
with one line naming the model and the problem (and nothing is registered)."""

from __future__ import annotations

import logging

import numpy as np

from components.config import TrainConfig
from components.data.dataset import DatasetMetadata
from components.errors import ConfigError
from components.frameworks.base import FrameworkAdapter, ModelSpec
from components.models.user import ModelRef, digest, resolve

log = logging.getLogger(__name__)


def model_ref(config: TrainConfig) -> ModelRef:
    """The run's model: a file's source carried in ``model_code`` wins over the path."""
    if config.model_code:
        return ModelRef(config.model_ref, config.model_code, digest(config.model_code))
    return resolve(config.model_ref)


def model_spec(config: TrainConfig, meta: DatasetMetadata) -> ModelSpec:
    """The spec every rank builds from (the same on all of them)."""
    return ModelSpec.for_dataset(meta, model_ref(config), config.options, config.binary_logits)


CHECK_ROWS = 8  # the real batch of the pre-training forward pass


def check_model(adapter: FrameworkAdapter, spec: ModelSpec, x: np.ndarray, seed: int) -> int:
    """Build the model and run it on ``x[:8]``; the parameter count, or ConfigError."""
    model = adapter.build_model(spec, seed)
    if not adapter.forward_before_training:
        return adapter.count_params(model)
    batch = x[:CHECK_ROWS]
    try:
        out = np.asarray(adapter.forward(model, batch))
    except Exception as err:
        raise ConfigError(f"model {spec.kind}: a forward pass on a batch of shape "
                          f"{tuple(batch.shape)} (input shape {spec.input_shape}) failed: "
                          f"{type(err).__name__}: {err}") from None
    want = (len(batch), spec.n_outputs)
    if out.ndim == 1 and spec.n_outputs == 1:
        out = out[:, None]
    if out.shape != want:
        raise ConfigError(f"model {spec.kind}: output shape {tuple(out.shape)} does not match "
                          f"the task ({spec.task}, {spec.n_outputs} output(s) per row): "
                          f"expected {want}")
    return adapter.count_params(model)
