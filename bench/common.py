"""Shared pieces of the training benchmarks (bench_training.py, bench_models.py).

Why a module of its own: every figure compares twinflow's trainer with a plain
hand-written loop of the same network on the same data, so the data set, the
user's model file, both loops and the statistics must be one piece of code, not
a copy per script (a copy that drifts would make the baselines differ).

The plain loops are what a user would write without twinflow (the background
articles' PyTorch DataLoader loop, Keras compile + fit); they build the network
with the builder itself (the zoo's function or the user's file, imported here
with importlib), not through the adapter, seeded the same way the adapter seeds.

On a shared, loaded machine run the benchmarks with ``OMP_NUM_THREADS=1``: PyTorch's
2 OpenMP threads then stall each other by an order of magnitude (bench/RESULTS.md,
issue 14), which would drown any ratio.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from components.config import IngestConfig, TrainConfig
from components.data.dataset import ArraySplit, Split, read_arrays, read_metadata
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec, TrainContext
from components.ingest.core import run_ingest
from components.train.model import model_spec
from components.transform.core import run_transform

USER_MODEL_FILE = "residual_mlp.py"
# A residual MLP as a user would write it: one builder per framework, options as
# keyword arguments, tf_keras for TensorFlow; the same layers and parameters in both.
USER_MODEL_SOURCE = '''"""A residual MLP (written by twinflow's bench/common.py)."""


def build_torch(spec, width=128, blocks=2):
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                      nn.Linear(width, width))

        def forward(self, x):
            return torch.relu(x + self.body(x))

    return nn.Sequential(nn.Linear(spec.n_features, width), nn.ReLU(),
                         *[Residual() for _ in range(blocks)],
                         nn.Linear(width, spec.n_outputs))


def build_tensorflow(spec, width=128, blocks=2):
    import tf_keras as keras

    inputs = keras.Input((spec.n_features,))
    x = keras.layers.Dense(width, activation="relu")(inputs)
    for _ in range(blocks):
        y = keras.layers.Dense(width, activation="relu")(x)
        x = keras.layers.ReLU()(keras.layers.Add()([x, keras.layers.Dense(width)(y)]))
    return keras.Model(inputs, keras.layers.Dense(spec.n_outputs, dtype="float32")(x))
'''


def write_user_model(folder: Path) -> Path:
    """The user's model file, on disk as a user would have it."""
    path = folder / USER_MODEL_FILE
    path.write_text(USER_MODEL_SOURCE, encoding="utf-8")
    return path


def user_model_fields(path: Path) -> dict[str, str]:
    """TrainConfig fields for ``--model path``, read by the CLI's own helper (the file's
    source travels in ``model_code``, as in a real run)."""
    from pipelines.params import PipelineParams, with_model_code

    params = with_model_code(PipelineParams(model_ref=str(path)))
    return {"model_ref": params.model_ref, "model_code": params.model_code}


def prepare(root: Path, source: str = "sklearn:digits") -> Path:
    """Ingest and transform ``source`` into ``root/data`` (MLflow store in ``root``)."""
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    with mlflow.start_run():
        run_ingest(IngestConfig(source=source), root / "raw")
        run_transform(root / "raw", root / "data", root / "t.json")
    return root / "data"


def splits(data: Path) -> tuple[ArraySplit, ArraySplit, ArraySplit]:
    """(train, val, test) arrays of a transformed data set."""
    meta = read_metadata(data)
    return (read_arrays(data, Split.TRAIN, meta), read_arrays(data, Split.VAL, meta),
            read_arrays(data, Split.TEST, meta))


def twinflow_fit(config: TrainConfig, data: Path) -> tuple[Any, float]:
    """Twinflow's trainer as the step's worker calls it (spec from the config, so a user
    file goes through the same path), tracking and progress off: (model, seconds)."""
    tr, val, _ = splits(data)
    spec = model_spec(config, read_metadata(data))
    start = time.perf_counter()
    model = get_adapter(config.framework).train(spec, tr, val, config, TrainContext(),
                                                lambda _m: None)
    return model, time.perf_counter() - start


def plain_builder(fw: str, spec: ModelSpec, user_file: Path | None = None) -> Callable[[], Any]:
    """The network's own builder, without the adapter: the zoo function of a built-in
    kind, else ``build_<fw>`` of the user's file imported here."""
    if user_file is None:
        zoo = importlib.import_module(f"components.frameworks.{fw}.zoo").ZOO
        return lambda: zoo[spec.kind](spec, **spec.options)
    module_spec = importlib.util.spec_from_file_location("bench_user_model", user_file)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    build = getattr(module, f"build_{fw}")
    return lambda: build(spec, **spec.options)


def plain_fit(fw: str, build: Callable[[], Any], train: ArraySplit, epochs: int,
              batch_size: int = 32, lr: float = 1e-3, seed: int = 42,
              val: ArraySplit | None = None) -> tuple[Any, float]:
    """The hand-written loop a user would write: (model, seconds from build to trained).

    The clock starts before the network is built (and compiled), as ``twinflow_fit``'s
    starts before the adapter's ``train()``, which builds and compiles inside it.

    PyTorch: seed, build, DataLoader (shuffled, seeded), zero_grad / forward / loss /
    backward / step. TensorFlow: seed, build, compile, fit. With ``val``, a validation
    pass every epoch too (``validation_data``; a no-grad forward pass), as twinflow does.
    """
    if fw == "torch":
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        torch.manual_seed(seed)
        start = time.perf_counter()
        model = build()
        loader = DataLoader(TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)),
                            batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            for xb, yb in loader:
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()
            if val is not None:
                model.eval()
                with torch.no_grad():
                    loss_fn(model(torch.from_numpy(val.x)), torch.from_numpy(val.y))
        return model.eval(), time.perf_counter() - start
    get_adapter(fw)  # sets TF_USE_LEGACY_KERAS before tf_keras is imported
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train.x, train.y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              validation_data=None if val is None else (val.x, val.y))
    return model, time.perf_counter() - start


def accuracy(fw: str, model: Any, split: ArraySplit) -> float:
    """Test accuracy (the adapter's predict: the same for both sides)."""
    pred = get_adapter(fw).predict(model, split.x).argmax(1)
    return float((pred == split.y).mean())


def weights(fw: str, model: Any) -> list[np.ndarray]:
    """A model's parameters as arrays, in creation order (to check two inits agree)."""
    if fw == "torch":
        return [p.detach().numpy() for p in model.state_dict().values()]
    return [np.asarray(w) for w in model.get_weights()]


def same_init(fw: str, spec: ModelSpec, build: Callable[[], Any], seed: int) -> bool:
    """Whether the plain side's seeded build equals twinflow's (adapter.build_model)."""
    ours = weights(fw, get_adapter(fw).build_model(spec, seed))
    if fw == "torch":
        import torch

        torch.manual_seed(seed)
    else:
        import tf_keras as keras

        keras.utils.set_random_seed(seed)
    theirs = weights(fw, build())
    return len(ours) == len(theirs) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median of ``repeats`` calls of each, taken in turns (a, b, a, b, ...) so that the
    drift of a noisy machine hits every side alike."""
    values: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            values[name].append(fn())
    return {name: statistics.median(v) for name, v in values.items()}


def spread(values: list[float]) -> str:
    """``mean ± std [min, max]`` in percent points."""
    pct = [100 * v for v in values]
    std = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return f"{statistics.mean(pct):.2f} ± {std:.2f} [{min(pct):.2f}, {max(pct):.2f}]"
