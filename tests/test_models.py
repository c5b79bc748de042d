"""Bring-your-own models and the built-in zoo, for both frameworks, through the real
train, evaluate and compress steps; every bad builder gets one clear error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest

from components.config import CompressConfig, EvaluateConfig, Framework, TrainConfig
from components.data.dataset import DatasetMetadata, Split, read_arrays, read_metadata
from components.errors import ConfigError
from components.export.manifest import ExportManifest
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec
from components.models.user import ZOO, digest
from components.tags import MODEL_DIGEST_TAG, MODEL_TAG
from components.train.core import run_train

FRAMEWORKS = pytest.mark.parametrize("fw", [Framework.TORCH, Framework.TENSORFLOW],
                                     ids=["torch", "tensorflow"])

# A residual MLP and a tiny conv net, as a user would write them: one builder per
# framework, options as keyword arguments, tf_keras for TensorFlow.
USER_MODELS = textwrap.dedent('''
    def build_torch(spec, width=64, blocks=2):
        import torch
        from torch import nn

        class Residual(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                          nn.Linear(width, width))

            def forward(self, x):
                return torch.relu(x + self.body(x))

        if spec.image_shape is not None:
            h, w, c = spec.image_shape
            class Conv(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.conv = nn.Conv2d(c, 8, 3, padding=1)
                    self.head = nn.Linear(8 * h * w, spec.n_outputs)

                def forward(self, x):
                    x = x.reshape(-1, h, w, c).permute(0, 3, 1, 2)
                    return self.head(torch.relu(self.conv(x)).flatten(1))
            return Conv()
        return nn.Sequential(nn.Linear(spec.n_features, width), nn.ReLU(),
                             *[Residual(width) for _ in range(blocks)],
                             nn.Linear(width, spec.n_outputs))


    def build_tensorflow(spec, width=64, blocks=2):
        import tf_keras as keras

        inputs = keras.Input((spec.n_features,))
        if spec.image_shape is not None:
            x = keras.layers.Reshape(spec.image_shape)(inputs)
            x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
            x = keras.layers.Flatten()(x)
        else:
            x = keras.layers.Dense(width, activation="relu")(inputs)
            for _ in range(blocks):
                y = keras.layers.Dense(width, activation="relu")(x)
                x = keras.layers.ReLU()(keras.layers.Add()([x, keras.layers.Dense(width)(y)]))
        return keras.Model(inputs, keras.layers.Dense(spec.n_outputs, dtype="float32")(x))
''')


def _meta(features: int, classes: int, shape: list[int] | None) -> DatasetMetadata:
    return DatasetMetadata.model_validate(
        {"name": "t", "source": "t", "label": "y", "features": [f"f{i}" for i in range(features)],
         "classes": [str(c) for c in range(classes)], "rows": {"train": 1, "val": 1, "test": 1},
         "image_shape": shape, "digest": "x"})


@pytest.mark.parametrize(("kind", "shape", "options"), [
    ("linear", None, {}), ("mlp", None, {"depth": 3, "width": 32, "dropout": 0.1}),
    ("cnn", [8, 8, 1], {}), ("resnet", [32, 32, 3], {"width": 8, "depth": 1}),
    ("resnet", [8, 8, 1], {})])
def test_zoo_architectures_have_the_same_parameter_count_in_both_frameworks(
        kind: str, shape: list[int] | None, options: dict[str, float]) -> None:
    features = int(np.prod(shape)) if shape else 13
    spec = ModelSpec.for_dataset(_meta(features, 10, shape), None, options)
    spec = ModelSpec(**{**spec.__dict__, "kind": kind})
    counts = {}
    for fw in ("torch", "tensorflow"):
        adapter = get_adapter(fw)
        model = adapter.build_model(spec, 0)
        out = adapter.predict(model, np.zeros((3, features), np.float32))
        assert out.shape == (3, 10)
        counts[fw] = adapter.count_params(model)
    assert counts["torch"] == counts["tensorflow"] > 0
    assert set(ZOO) == {"linear", "mlp", "cnn", "resnet"}


def test_image_architectures_refuse_tabular_data() -> None:
    from components.models.user import resolve

    with pytest.raises(ConfigError, match="model resnet: needs image data; t is tabular"):
        ModelSpec.for_dataset(_meta(5, 2, None), resolve("resnet"))


def _train(fw: Framework, data: Path, model_dir: Path, **changes: object) -> None:
    config = TrainConfig(framework=fw, epochs=3, show_progress=False, **changes)
    with mlflow.start_run(nested=mlflow.active_run() is not None):
        run_train(config, data, model_dir)


@FRAMEWORKS
@pytest.mark.parametrize("workers", [1, 2])
def test_user_model_file_trains_evaluates_and_compresses(
        fw: Framework, workers: int, transformed: tuple[Path, Path], tmp_path: Path,
        store: str) -> None:
    """A user's file (its source carried in the config, as the CLI sends it) through the
    real train (1 and 2 workers), evaluate and compress steps; the exports are
    self-contained: the TorchScript/SavedModel raw entries and ONNX run without the
    user's module."""
    from components.compress.core import run_compress
    from components.evaluate.core import run_evaluate

    data, model_dir = transformed[0], tmp_path / "model"
    with mlflow.start_run() as run:
        run_train(TrainConfig(framework=fw, epochs=4, show_progress=False, workers=workers,
                              model_ref="nets.py", model_code=USER_MODELS,
                              model_options='{"width": 48}'), data, model_dir)
    logged = mlflow.get_run(run.info.run_id).data
    assert logged.tags[MODEL_TAG] == "nets.py"
    assert logged.tags[MODEL_DIGEST_TAG] == digest(USER_MODELS)
    assert logged.params["model_option.width"] == "48" and "model_code" not in logged.params
    spec = ModelSpec.load(model_dir)
    assert spec.kind == "nets.py" and spec.source == USER_MODELS and spec.options == {"width": 48}
    with mlflow.start_run():
        evaluation = run_evaluate(EvaluateConfig(framework=fw,
                                                 model_name=f"user-{fw}-{workers}"),
                                  data, model_dir)
    assert evaluation.accuracy > 0.8
    with mlflow.start_run():
        run_compress(CompressConfig(framework=fw, latency_calls=10, finetune_epochs=1), data,
                     model_dir, tmp_path / "exports")
    manifest = ExportManifest.load(tmp_path / "exports")
    assert {"onnx", "raw", "raw_onnx"} <= set(manifest.entries)


@FRAMEWORKS
def test_builtin_resnet_trains_on_images(fw: Framework, transformed: tuple[Path, Path],
                                         tmp_path: Path, store: str) -> None:
    data = transformed[0]
    _train(fw, data, tmp_path / "model", model_ref="resnet",
           model_options='{"width": 8, "depth": 1}')
    meta = read_metadata(data)
    test = read_arrays(data, Split.TEST, meta)
    adapter = get_adapter(fw)
    pred = adapter.predict(adapter.load_model(tmp_path / "model"), test.x).argmax(1)
    assert ModelSpec.load(tmp_path / "model").kind == "resnet"
    assert (pred == test.y).mean() > 0.5


BAD = {
    "no_function": ("def build_other(spec):\n    return None\n",
                    "model bad.py: defines no function build_{fw}"),
    "raises": ("def build_torch(spec):\n    raise RuntimeError('boom')\n"
               "def build_tensorflow(spec):\n    raise RuntimeError('boom')\n",
               "model bad.py: the builder raised RuntimeError: boom"),
    "wrong_type": ("def build_torch(spec):\n    return 3\n"
                   "def build_tensorflow(spec):\n    return 3\n",
                   "model bad.py: the builder returned builtins.int, not"),
    "syntax": ("def build_torch(spec)\n", "model bad.py: importing it failed: SyntaxError"),
    "width": ("def build_torch(spec):\n    import torch\n"
              "    return torch.nn.Linear(spec.n_features, 3)\n"
              "def build_tensorflow(spec):\n    import tf_keras as keras\n"
              "    return keras.Sequential([keras.Input((spec.n_features,)), "
              "keras.layers.Dense(3)])\n",
              r"model bad.py: output shape \(8, 3\) does not match the task \(multiclass, 10 "
              r"output\(s\) per row\): expected \(8, 10\)"),
    "input": ("def build_torch(spec):\n    import torch\n    return torch.nn.Linear(5, 10)\n"
              "def build_tensorflow(spec):\n    import tf_keras as keras\n"
              "    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(10)])\n",
              r"model bad.py: a forward pass on a batch of shape \(8, 64\)"),
}


@FRAMEWORKS
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_builders_fail_before_training_naming_the_model(
        fw: Framework, case: str, transformed: tuple[Path, Path], tmp_path: Path,
        store: str) -> None:
    source, message = BAD[case]
    with pytest.raises(ConfigError, match=message.format(fw=fw)):
        _train(fw, transformed[0], tmp_path / "model", model_ref="bad.py", model_code=source)
    assert not (tmp_path / "model" / "spec.json").exists()


def test_unknown_options_and_references_are_clear_errors(transformed: tuple[Path, Path],
                                                         tmp_path: Path, store: str) -> None:
    with pytest.raises(ConfigError, match=r"model mlp: the builder does not take these "
                                          r"options \['depht'\]"):
        _train(Framework.TORCH, transformed[0], tmp_path / "m", model_ref="mlp",
               model_options='{"depht": 3}')
    with pytest.raises(ConfigError, match=r"--model missing\.py: no such file"):
        _train(Framework.TORCH, transformed[0], tmp_path / "m", model_ref="missing.py")
    with pytest.raises(ConfigError, match="--model vgg: not a built-in model"):
        _train(Framework.TORCH, transformed[0], tmp_path / "m", model_ref="vgg")
    with pytest.raises(ConfigError, match="model no_such_module:build: cannot import"):
        _train(Framework.TORCH, transformed[0], tmp_path / "m",
               model_ref="no_such_module:build")
    with pytest.raises(ValueError, match="must be a JSON object"):
        TrainConfig(framework="torch", model_options="[1]")


@pytest.mark.slow
def test_cli_runs_a_user_model_file_and_serves_it(tmp_path: Path) -> None:
    """`twinflow run --model nets.py`: the file's source travels in the run's parameters,
    every step builds it, the registered version carries its name and digest, and
    `twinflow serve` answers raw CSV rows with what the exports answer in process."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from components.tags import VERSION_MODEL_DIGEST_TAG, VERSION_MODEL_TAG
    from tests.conftest import cli_env
    from tests.test_pipeline_tabular import _served_champion_answers_raw_rows
    from tests.test_transform_fit import mixed_frame

    (tmp_path / "nets.py").write_text(USER_MODELS)
    frame = mixed_frame(900, seed=5)
    frame.to_csv(tmp_path / "shop.csv", index=False)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework", "torch",
         "--data", "shop.csv", "--label", "label", "--epochs", "15", "--min-accuracy", "0.6",
         "--model", "nets.py", "--model-options", '{"width": 32}', "--model-name", "shop-user"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    version = client.get_model_version_by_alias("shop-user", "champion")
    assert version.tags[VERSION_MODEL_TAG] == "nets.py"
    assert version.tags[VERSION_MODEL_DIGEST_TAG] == digest(USER_MODELS)
    classes = np.array(sorted(frame["label"].unique()))
    _served_champion_answers_raw_rows(tmp_path, "shop-user", frame, classes)


def test_cli_names_a_missing_model_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import cli_env

    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--model", "gone.py"],
                          cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "twinflow: error: --model gone.py: no such file"
    assert not (tmp_path / ".twinflow" / "mlflow.db").exists()
