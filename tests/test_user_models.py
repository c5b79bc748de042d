"""Your model, your task: a user's own model code through the real pipeline.

A file (``nets.py``: a residual MLP for tables and a tiny conv net for images, both
frameworks, its classes at module level as a user writes them) and a
``module:function`` builder (a package on PYTHONPATH) go through `twinflow run`
(KFP's local runner, 1 and 2 workers, both frameworks), then:

- the registered champion is served over HTTP (`twinflow serve`, raw rows in) and
  answers what the version's bare network answers in process on the same rows;
- the torch network (a torch.export program, or pickled with the file's classes by
  value when it does not export) is loaded with MLflow's own tools in a fresh process
  that cannot import the user's code;
- mixed precision and checkpoint/resume train a user model (the train step alone).

Each CLI run is one module-scoped fixture shared by several tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from components.config import TrainConfig
from components.data.dataset import Split, read_arrays, read_metadata
from components.export.manifest import ExportManifest
from components.export.runtime import softmax
from components.frameworks import get_adapter
from components.frameworks.base import ModelSpec
from components.models.user import digest
from components.tags import (
    MODEL_DIGEST_TAG,
    MODEL_TAG,
    NETWORK_MODEL_TAG,
    STEP_TAG,
    VERSION_FRAMEWORK_TAG,
    VERSION_MODEL_DIGEST_TAG,
    VERSION_MODEL_TAG,
)
from components.train.core import run_train
from components.transform.fitted import FittedTransform
from tests.conftest import REPO, cli_env
from tests.test_transform_fit import mixed_frame

FRAMEWORKS = ("torch", "tensorflow")

# The user's file: module-level torch classes (pickled by value when the model is
# logged: their module lives only in twinflow's code cache), a functional tf_keras
# model, options as keyword arguments.
NETS = textwrap.dedent('''
    """A residual MLP for tables and a tiny conv net for images, in both frameworks."""
    import torch
    from torch import nn


    class Residual(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                      nn.Linear(width, width))

        def forward(self, x):
            return torch.relu(x + self.body(x))


    class ResidualMLP(nn.Module):
        def __init__(self, n_features, n_outputs, width, blocks):
            super().__init__()
            self.stem = nn.Linear(n_features, width)
            self.blocks = nn.Sequential(*[Residual(width) for _ in range(blocks)])
            self.head = nn.Linear(width, n_outputs)

        def forward(self, x):
            return self.head(self.blocks(torch.relu(self.stem(x))))


    class TinyConv(nn.Module):
        def __init__(self, shape, n_outputs, filters):
            super().__init__()
            h, w, c = (int(d) for d in shape)
            self.shape = (h, w, c)
            self.conv = nn.Conv2d(c, filters, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.head = nn.Linear(filters * (h // 2) * (w // 2), n_outputs)

        def forward(self, x):
            h, w, c = self.shape
            x = x.reshape(-1, h, w, c).permute(0, 3, 1, 2)
            return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


    def build_torch(spec, width=32, blocks=2, filters=8):
        if spec.image_shape is not None:
            return TinyConv(spec.image_shape, spec.n_outputs, filters)
        return ResidualMLP(spec.n_features, spec.n_outputs, width, blocks)


    def build_tensorflow(spec, width=32, blocks=2, filters=8):
        import tf_keras as keras

        inputs = keras.Input((spec.n_features,))
        if spec.image_shape is not None:
            x = keras.layers.Reshape(tuple(spec.image_shape))(inputs)
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(x))
        else:
            x = keras.layers.Dense(width, activation="relu")(inputs)
            for _ in range(blocks):
                y = keras.layers.Dense(width, activation="relu")(x)
                x = keras.layers.ReLU()(keras.layers.Add()([x, keras.layers.Dense(width)(y)]))
        return keras.Model(inputs, keras.layers.Dense(spec.n_outputs, dtype="float32")(x))
''')

# A package with one builder told framework= (torch only, as many users would write it).
PKG_NETS = textwrap.dedent('''
    import torch
    from torch import nn


    class Wide(nn.Module):
        def __init__(self, n_features, n_outputs, width):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_features, width), nn.ReLU(),
                                     nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, n_outputs))

        def forward(self, x):
            return self.net(x)


    def build(spec, framework, width=16):
        if framework != "torch":
            raise ValueError(f"mypkg.nets supports torch only, not {framework}")
        return Wide(spec.n_features, spec.n_outputs, width)
''')
PKG_REF = "mypkg.nets:build"


# --- one CLI run per configuration ---------------------------------------------------


@dataclass
class CliRun:
    root: Path  # the run's working directory (TWINFLOW_HOME is root/.twinflow)
    stdout: str
    rows: pd.DataFrame  # the raw input rows (tabular runs), label included
    env: dict[str, str]

    @property
    def db(self) -> str:
        return f"sqlite:///{self.root / '.twinflow' / 'mlflow.db'}"

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.db)

    def task_dirs(self, task: str) -> dict[str, Path]:
        """framework -> output artifact directory of ``task`` (train: model, compress:
        exports) of this run, read from the local runner's executor outputs."""
        found: dict[str, Path] = {}
        for out in (self.root / ".twinflow" / "pipeline_root").glob(
                f"*/{task}*/executor_output.json"):
            for artifact in json.loads(out.read_text())["artifacts"].values():
                for item in artifact["artifacts"]:
                    path = Path(item["uri"])
                    if task == "compress":
                        found[ExportManifest.load(path).framework] = path
                    else:
                        found[item["metadata"]["framework"]] = path
        return found

    def step_runs(self, step: str) -> list[Any]:
        exp = self.client.get_experiment_by_name("twinflow")
        assert exp is not None
        return self.client.search_runs([exp.experiment_id],
                                       filter_string=f"tags.`{STEP_TAG}` = '{step}'")

    def versions(self, name: str) -> dict[str, Any]:
        """framework -> the registered version of ``name`` from this run."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return {v.tags[VERSION_FRAMEWORK_TAG]: v for v in found}


def _cli_run(root: Path, args: list[str], env: dict[str, str] | None = None,
             rows: pd.DataFrame | None = None) -> CliRun:
    env = env or cli_env(root)
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return CliRun(root, done.stdout, rows if rows is not None else pd.DataFrame(), env)


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """`twinflow run --model nets.py --framework both` on 600 CSV rows with string
    categoricals and gaps, one worker; registered as shop-torch and shop-tensorflow."""
    root = tmp_path_factory.mktemp("user-tabular")
    (root / "nets.py").write_text(NETS)
    frame = mixed_frame(600, seed=5)
    frame.to_csv(root / "shop.csv", index=False)
    return _cli_run(root, ["--framework", "both", "--data", "shop.csv", "--label", "label",
                           "--epochs", "12", "--min-accuracy", "0.6", "--model", "nets.py",
                           "--model-options", '{"width": 24, "blocks": 2}'], rows=frame)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """The same file on the built-in digits images (the conv net), both frameworks on
    two worker processes each, one --model-name for both branches."""
    root = tmp_path_factory.mktemp("user-images")
    (root / "nets.py").write_text(NETS)
    # --tolerance: with one --model-name the branch that evaluates second is gated
    # against the other's fresh champion; their accuracies differ by a point either way
    return _cli_run(root, ["--framework", "both", "--workers", "2", "--epochs", "4",
                           "--min-accuracy", "0.8", "--model", "nets.py", "--model-options",
                           '{"filters": 6}', "--model-name", "digits-user",
                           "--tolerance", "0.1"])


def _with_package(root: Path) -> Path:
    """``mypkg`` written under ``root/pkgs`` (not the run's working directory)."""
    pkg = root / "pkgs" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(PKG_NETS)
    return pkg.parent


@pytest.fixture(scope="module")
def package_run(tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """`twinflow run --model mypkg.nets:build --framework torch --workers 2` with the
    package on PYTHONPATH (the steps and torchrun's workers inherit it)."""
    root = tmp_path_factory.mktemp("user-package")
    pkgs = _with_package(root)
    env = cli_env(root)
    env["PYTHONPATH"] = os.pathsep.join([str(pkgs), str(REPO)])
    frame = mixed_frame(600, seed=5)
    frame.to_csv(root / "shop.csv", index=False)
    return _cli_run(root, ["--framework", "torch", "--workers", "2", "--data", "shop.csv",
                           "--label", "label", "--epochs", "12", "--min-accuracy", "0.6",
                           "--model", PKG_REF, "--model-options", '{"width": 24}'],
                    env=env, rows=frame)


# --- what the runs trained, exported and registered ---------------------------------


def _test_accuracy(version: Any) -> float:
    return float(version.tags["test_accuracy"])


@pytest.mark.slow
def test_file_model_trains_exports_and_registers_for_both_frameworks(
        tabular_run: CliRun) -> None:
    run = tabular_run
    assert run.stdout.count("blessed") >= 2, run.stdout
    train_runs = run.step_runs("train")
    assert len(train_runs) == 2
    for train in train_runs:
        assert train.data.tags[MODEL_TAG] == "nets.py"
        assert train.data.tags[MODEL_DIGEST_TAG] == digest(NETS)
        assert train.data.params["model_option.width"] == "24"
        assert train.data.params["workers_used"] == "1"
        logged = run.client.list_artifacts(train.info.run_id, "model_code")
        assert [Path(a.path).name for a in logged] == ["nets.py"]
    models = run.task_dirs("train")
    assert set(models) == set(FRAMEWORKS)
    for fw, model_dir in models.items():
        spec = ModelSpec.load(model_dir)
        assert (spec.kind, spec.source, spec.options) == ("nets.py", NETS,
                                                          {"width": 24, "blocks": 2}), fw
    net = get_adapter("torch").load_model(models["torch"])
    assert type(net).__name__ == "ResidualMLP" and len(net.blocks) == 2
    for fw in FRAMEWORKS:
        [version] = run.versions(f"shop-{fw}").values()
        assert version.tags[VERSION_MODEL_TAG] == "nets.py"
        assert version.tags[VERSION_MODEL_DIGEST_TAG] == digest(NETS)
        assert _test_accuracy(version) > 0.65, (fw, version.tags)
        assert "champion" in run.client.get_registered_model(f"shop-{fw}").aliases


@pytest.mark.slow
def test_exports_carry_the_transform_and_need_no_user_code(tabular_run: CliRun) -> None:
    """compress wrote raw-input entries (transform inside) and verified them in a fresh
    process; each answers raw CSV rows (strings, gaps) like the trained network does on
    the transformed rows, in this process, where nets.py is not importable."""
    from components.export.raw_runtime import load_raw_predictor

    rows = tabular_run.rows.head(50).drop(columns=["label"])
    models = tabular_run.task_dirs("train")
    for fw, exports in tabular_run.task_dirs("compress").items():
        manifest = ExportManifest.load(exports)
        wanted = {"raw", "raw_onnx"} | ({"raw_tflite"} if fw == "tensorflow" else set())
        assert wanted <= set(manifest.entries), (fw, sorted(manifest.entries))
        assert manifest.entries[manifest.serving_default].input == "raw"
        assert manifest.raw_features is not None
        assert set(manifest.raw_features.numeric) == {"size", "weight"}
        fitted = FittedTransform.load(exports / manifest.raw_features.transform)
        adapter = get_adapter(fw)
        expected = adapter.predict(adapter.load_model(models[fw]), fitted.apply(rows))
        for name in sorted(wanted):
            entry = manifest.entries[name]
            got = load_raw_predictor(entry.format, exports / entry.path)(rows)
            np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"{fw} {name}")


@pytest.mark.slow
def test_two_workers_train_the_conv_net_for_both_frameworks(image_run: CliRun) -> None:
    """Both branches trained nets.py's conv net on two processes; one --model-name for
    both frameworks registers one version per framework (not one for both)."""
    run = image_run
    for train in run.step_runs("train"):
        assert train.data.params["workers_used"] == "2"
        assert train.data.tags[MODEL_DIGEST_TAG] == digest(NETS)
    models = run.task_dirs("train")
    assert set(models) == set(FRAMEWORKS)
    for fw, model_dir in models.items():
        assert (model_dir / "worker-1.pid").is_file(), f"{fw}: a second process trained"
        spec = ModelSpec.load(model_dir)
        assert tuple(spec.image_shape or ()) == (8, 8, 1) and spec.options == {"filters": 6}
    net = get_adapter("torch").load_model(models["torch"])
    assert type(net).__name__ == "TinyConv" and net.conv.out_channels == 6
    versions = run.versions("digits-user")
    assert set(versions) == set(FRAMEWORKS), {k: v.version for k, v in versions.items()}
    assert len({v.version for v in versions.values()}) == 2
    for fw, version in versions.items():
        assert version.tags[VERSION_MODEL_TAG] == "nets.py"
        assert _test_accuracy(version) > 0.8, (fw, version.tags)  # the gate blessed it


# --- serving the registered model ---------------------------------------------------


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows as a client sends them: NaN as null, the label along as an extra key."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in rows.astype(object).to_dict("records")]


def _serve(run: CliRun, ref: str, export: str | None) -> np.ndarray:
    """`twinflow serve --model REF [--export E]` on 127.0.0.1: probabilities of the first
    40 raw rows sent as V1 objects."""
    from tests.test_serve import Server

    env = cli_env(run.root, run.db)
    args = [sys.executable, "-m", "pipelines.cli", "serve", "--model", ref, "--name", "m"]
    server = Server([*args, *(["--export", export] if export else [])], env=env, name="m")
    try:
        server.wait_ready()
        response = server.v1(_records(run.rows.head(40)))
        assert response.status_code == 200, response.text
        return np.array([p["probabilities"] for p in response.json()["predictions"]])
    finally:
        server.stop()


def _registered_in_process(run: CliRun, name: str, version: str, fw: str) -> Any:
    """raw rows -> probabilities of the version's bare network (its framework flavor,
    loaded here) behind the fitted transform shipped in the version's exports."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(run.db)
    try:
        uri = run.client.get_model_version(name, version).tags[NETWORK_MODEL_TAG]
        flavor = mlflow.pytorch if fw == "torch" else mlflow.tensorflow
        model = flavor.load_model(uri)
        exports = Path(mlflow.artifacts.download_artifacts(
            f"runs:/{run.client.get_model_version(name, version).run_id}/exports",
            dst_path=str(run.root / f"dl-{name}-{version}")))
    finally:
        mlflow.set_tracking_uri(previous)
    manifest = ExportManifest.load(exports)
    assert manifest.raw_features is not None
    fitted = FittedTransform.load(exports / manifest.raw_features.transform)
    if fw == "torch":  # a torch.export module: called as is (it has no .eval())
        import torch

        def answers(rows: pd.DataFrame) -> np.ndarray:
            with torch.no_grad():
                return softmax(model(torch.from_numpy(fitted.apply(rows))).numpy())

        return answers
    adapter = get_adapter(fw)
    return lambda rows: adapter.predict(model, fitted.apply(rows))


@pytest.mark.slow
@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_served_champion_answers_like_the_registered_model(tabular_run: CliRun,
                                                           fw: str) -> None:
    """The fp32 raw-input entry of the champion, served over HTTP, answers raw rows with
    the probabilities of the registered MLflow model loaded in process (1e-4); the
    default entry (the chosen compressed variant with the transform inside) agrees with
    it on the predicted class."""
    name = f"shop-{fw}"
    champion = tabular_run.client.get_model_version_by_alias(name, "champion")
    expected = _registered_in_process(tabular_run, name, champion.version, fw)(
        tabular_run.rows.head(40).drop(columns=["label"]))
    served = _serve(tabular_run, name, "raw")
    np.testing.assert_allclose(served, expected, atol=1e-4)
    default = _serve(tabular_run, f"{name}/{champion.version}", None)
    assert (default.argmax(1) == expected.argmax(1)).mean() >= 0.9
    classes = np.array(["no", "yes"])
    truth = tabular_run.rows.head(40)["label"].to_numpy()
    assert (classes[served.argmax(1)] == truth).mean() > 0.6


# --- the registered MLflow model in a process without the user's code ----------------

PYFUNC_SCRIPT = textwrap.dedent('''
    import importlib.util, json, sys
    import mlflow, numpy as np

    uri, x_path, out_path = sys.argv[1:4]
    result = {"module": None}
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as err:
        result["error"] = f"{type(err).__name__}: {err}"
    else:
        np.save(out_path, np.asarray(model.predict(np.load(x_path))))
        net = model.get_raw_model()
        result["module"] = module = type(net).__module__
        result["class"] = type(net).__qualname__
        result["in_sys_modules"] = module in sys.modules
        result["importable"] = importlib.util.find_spec(module.split(".")[0]) is not None
    result["user_modules"] = sorted(m for m in sys.modules
                                    if m.startswith(("twinflow_user_", "mypkg")))
    print(json.dumps(result))
''')


def _pyfunc_in_fresh_process(run: CliRun, uri: str, x: np.ndarray, workdir: Path,
                             pythonpath: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """``mlflow.pyfunc.load_model(uri).predict(x)`` in a new interpreter whose working
    directory is empty and whose path is ``pythonpath``: (report, logits or None)."""
    workdir.mkdir(parents=True, exist_ok=True)
    np.save(workdir / "x.npy", x)
    (workdir / "load.py").write_text(PYFUNC_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TWINFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=run.db, PYTHONPATH=pythonpath)
    done = subprocess.run([sys.executable, "load.py", uri, "x.npy", "out.npy"], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    out = workdir / "out.npy"
    return report, (np.load(out) if out.is_file() else None)


def _test_rows(run: CliRun, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The transformed test split of the run (x) and the trained model's probabilities on
    it in this process."""
    [data] = [p.parent for p in (run.root / ".twinflow" / "pipeline_root").glob(
        "*/transform/transformed/metadata.json")]
    x = read_arrays(data, Split.TEST, read_metadata(data)).x
    adapter = get_adapter("torch")
    return x, adapter.predict(adapter.load_model(model_dir), x)


def _pickled_network(run: CliRun, model_dir: Path, x: np.ndarray) -> str:
    """The torch network logged as the adapter does when torch.export fails (pickled,
    the user's classes by value), from this process, which has loaded them."""
    from components.frameworks.torch.training import _log_pickled

    net = get_adapter("torch").load_model(model_dir)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(run.db)
    try:
        with mlflow.start_run():
            info = _log_pickled(net, "pickled", x[:5],
                                mlflow.pytorch.get_default_pip_requirements())
    finally:
        mlflow.set_tracking_uri(previous)
    return str(info.model_uri)


@pytest.mark.slow
def test_registered_torch_network_loads_with_mlflow_without_the_users_file(
        tabular_run: CliRun, tmp_path: Path) -> None:
    """The version's bare network (a torch.export program) and, for networks that do not
    export, the pickled fallback, each loaded by `mlflow.pyfunc` in a fresh interpreter
    that cannot import nets.py (nor twinflow's code cache of it): both predict what the
    trained model predicts here; the pickled one carries the user's classes by value."""
    [version] = tabular_run.versions("shop-torch").values()
    model_dir = tabular_run.task_dirs("train")["torch"]
    x, expected = _test_rows(tabular_run, model_dir)
    for uri in (version.tags[NETWORK_MODEL_TAG], _pickled_network(tabular_run, model_dir, x)):
        report, logits = _pyfunc_in_fresh_process(tabular_run, uri, x, tmp_path / "fresh",
                                                  str(REPO))
        assert "error" not in report, report
        assert report["user_modules"] == []
        assert logits is not None and logits.shape == (len(x), 2)
        np.testing.assert_allclose(softmax(logits), expected, atol=1e-5)
    assert report["class"] == "ResidualMLP"
    assert report["module"].startswith("twinflow_user_nets_")
    assert not report["in_sys_modules"] and not report["importable"]


# --- module:function ----------------------------------------------------------------


@pytest.mark.slow
def test_module_function_builder_runs_on_two_workers_and_is_registered(
        package_run: CliRun) -> None:
    """The package travels with the run like a file does: zipped into model_code on
    the user's machine, its digest tagged on the train run and the version, the zip
    logged as the train run's model_code artifact; torchrun's two workers train it."""
    run = package_run
    assert "blessed" in run.stdout, run.stdout
    [train] = run.step_runs("train")
    assert train.data.tags[MODEL_TAG] == PKG_REF
    digest = train.data.tags[MODEL_DIGEST_TAG]
    assert train.data.params["workers_used"] == "2"
    assert [a.path for a in run.client.list_artifacts(train.info.run_id, "model_code")] == [
        "model_code/mypkg.zip"]
    model_dir = run.task_dirs("train")["torch"]
    assert (model_dir / "worker-1.pid").is_file()
    spec = ModelSpec.load(model_dir)
    assert spec.kind == PKG_REF and spec.source.startswith("zip:") and spec.digest == digest
    [version] = run.versions("shop-torch").values()
    assert version.tags[VERSION_MODEL_TAG] == PKG_REF
    assert version.tags[VERSION_MODEL_DIGEST_TAG] == digest
    assert _test_accuracy(version) > 0.65


def test_a_shipped_package_builds_where_the_package_does_not_exist(tmp_path: Path) -> None:
    """Packed on "the user's machine", then the package is deleted: a fresh process
    without it on its path builds the model from the shipped code alone."""
    from components.models.package import pack
    from components.models.user import digest

    pkgs = _with_package(tmp_path)
    sys.path.insert(0, str(pkgs))
    try:
        source = pack(PKG_REF)
    finally:
        sys.path.remove(str(pkgs))
    assert source.startswith("zip:") and pack(PKG_REF) == ""  # not findable any more
    shutil.rmtree(pkgs)
    script = (
        "import sys, torch\n"
        "from components.models.user import ModelRef, load_builder\n"
        "ref = ModelRef(sys.argv[1], sys.argv[2], sys.argv[3])\n"
        "net = load_builder(ref, 'torch')(type('S', (), {'n_features': 5, 'n_outputs': 3})(),"
        " width=4)\n"
        "print(type(net).__module__, net(torch.zeros(2, 5)).shape[1])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", script, PKG_REF, source, digest(source)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["mypkg.nets", "3"]


@pytest.mark.slow
def test_module_function_model_is_served_without_the_package(package_run: CliRun) -> None:
    """The exports (TorchScript/ONNX, transform inside) need no user code: the server's
    path has only the repository, and it answers like the registered model does here
    (where the package is importable)."""
    [version] = package_run.versions("shop-torch").values()
    sys.path.insert(0, package_run.env["PYTHONPATH"].split(os.pathsep)[0])
    try:
        expected = _registered_in_process(package_run, "shop-torch", version.version,
                                          "torch")(package_run.rows.head(40)
                                                   .drop(columns=["label"]))
    finally:
        sys.path.pop(0)
    served = _serve(package_run, f"shop-torch/{version.version}", "raw")
    np.testing.assert_allclose(served, expected, atol=1e-4)


@pytest.mark.slow
def test_module_function_mlflow_model_loads_without_the_package(
        package_run: CliRun, tmp_path: Path) -> None:
    """The shipped package's classes are pickled by value into the pickled torch network
    (the adapter's fallback when torch.export fails), so MLflow's loader needs no
    package: in a fresh process whose path is only the repository it loads and
    predicts what the trained model does."""
    [_version] = package_run.versions("shop-torch").values()
    model_dir = package_run.task_dirs("train")["torch"]
    x, expected = _test_rows(package_run, model_dir)
    sys.path.insert(0, package_run.env["PYTHONPATH"].split(os.pathsep)[0])
    try:
        uri = _pickled_network(package_run, model_dir, x)
    finally:
        sys.path.pop(0)
    report, logits = _pyfunc_in_fresh_process(package_run, uri, x, tmp_path / "bare",
                                              str(REPO))
    assert "error" not in report, report
    assert (report["module"], report["class"]) == ("mypkg.nets", "Wide")
    assert logits is not None
    np.testing.assert_allclose(softmax(logits), expected, atol=1e-5)


@pytest.mark.slow
def test_module_function_that_the_steps_cannot_import_is_one_clear_error(
        tmp_path: Path) -> None:
    """The package exists, but not where the steps look (not on PYTHONPATH, not in the
    working directory): the train step fails naming the model and the import error,
    nothing is registered."""
    _with_package(tmp_path)  # tmp_path/pkgs/mypkg: not importable from tmp_path
    mixed_frame(200, seed=1).to_csv(tmp_path / "shop.csv", index=False)
    env = cli_env(tmp_path)
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "-q", "--framework", "torch",
         "--data", "shop.csv", "--label", "label", "--epochs", "1", "--model", PKG_REF],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stdout[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"twinflow: error: train-torch: model {PKG_REF}: cannot import mypkg.nets: "
        "ModuleNotFoundError: No module named 'mypkg'")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    assert client.search_registered_models() == []


# --- the train step alone: mixed precision, checkpoint and resume --------------------


def _train(fw: str, data: Path, out: Path, ckpt: Path | None = None,
           **changes: Any) -> Any:
    config = TrainConfig(framework=fw, show_progress=False, model_ref="nets.py",
                         model_code=NETS, model_options='{"filters": 6}', **changes)
    with mlflow.start_run() as run:
        result = run_train(config, data, out, ckpt)
    return result, run.info.run_id


def _weights(fw: str, model_dir: Path) -> np.ndarray:
    model = get_adapter(fw).load_model(model_dir)
    if fw == "torch":
        return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    return np.concatenate([w.ravel() for w in model.get_weights()])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_user_model_trains_in_bf16(fw: str, transformed: tuple[Path, Path],
                                   tmp_path: Path) -> None:
    """bf16 autocast (torch) / the mixed_bfloat16 policy (tf_keras) reach the user's layers:
    the run follows the fp32 run closely but not bit for bit; saved weights stay fp32."""
    fp32, _ = _train(fw, transformed[0], tmp_path / "fp32", epochs=5)
    bf16, run_id = _train(fw, transformed[0], tmp_path / "m", epochs=5, precision="bf16")
    assert mlflow.get_run(run_id).data.params["precision"] == "bf16"
    assert bf16.last_epoch.val_score > 0.8
    assert bf16.last_epoch.loss != fp32.last_epoch.loss, "bf16 changed nothing"
    assert bf16.last_epoch.loss == pytest.approx(fp32.last_epoch.loss, rel=0.05)
    weights = _weights(fw, tmp_path / "m")
    assert weights.dtype == np.float32 and np.isfinite(weights).all()
    x = read_arrays(transformed[0], Split.TEST, read_metadata(transformed[0])).x
    adapter = get_adapter(fw)
    proba = adapter.predict(adapter.load_model(tmp_path / "m"), x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_user_model_resumes_from_its_checkpoint(fw: str, transformed: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    """2 epochs, then resume to 4 from the checkpoint: only epochs 3 and 4 run (and are
    logged), starting from epoch 2's weights. PyTorch ends with the weights of an
    uninterrupted 4-epoch run (each epoch's order is seeded by its number); TensorFlow's
    tf.data reshuffle sequence restarts in the resumed process (epoch 3 sees epoch 1's
    order), so there only the loss is close."""
    data, ckpt = transformed[0], tmp_path / "ckpt"
    first, _ = _train(fw, data, tmp_path / "first", ckpt, epochs=2)
    resumed, run_id = _train(fw, data, tmp_path / "resumed", ckpt, epochs=4, resume=True)
    assert resumed.last_epoch.epoch == 4
    loss = {m.step: m.value for m in MlflowClient().get_metric_history(run_id, "loss")}
    assert sorted(loss) == [3, 4]
    assert loss[3] < first.last_epoch.loss, "epoch 3 did not start from epoch 2's weights"
    straight, _ = _train(fw, data, tmp_path / "straight", epochs=4)
    if fw == "torch":
        a, b = _weights(fw, tmp_path / "resumed"), _weights(fw, tmp_path / "straight")
        assert np.abs(a - b).max() < 1e-5 * max(1.0, np.abs(b).max())
        assert resumed.last_epoch.loss == pytest.approx(straight.last_epoch.loss, rel=1e-5)
    else:
        assert resumed.last_epoch.loss == pytest.approx(straight.last_epoch.loss, rel=0.1)
    assert resumed.last_epoch.val_score > 0.8
