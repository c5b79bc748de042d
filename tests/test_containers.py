"""The images of images/ built and run on a real Docker engine (marker ``containers``).

Every step's imports resolve inside its image; every image runs as a non-root user
and carries the OCI labels; the serving image, read-only and as uid 1000, answers
health, V1 and V2 exactly as `python -m components.serve` on the host does, over a
mounted exports directory and over ``MODEL=NAME@alias`` against a real `mlflow
server` on 127.0.0.1. The engine and the images come from tests/docker_engine.py
(once per session; skipped with one line where Docker cannot run). Bad input
(no engine, an unknown or unbuilt image) is tested without an engine.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient

from components.frameworks import framework_names
from components.images import IMAGES, image
from components.settings import get_settings
from pipelines.image_build import BuiltImage
from tests.conftest import REPO
from tests.docker_engine import built_images, docker_client  # noqa: F401 (fixtures)
from tests.serving_fixtures import N_FEATURES, sample, softmax, torch_exports, torch_logits
from tests.test_reliability import TrackingServer
from tests.test_serve import Server, free_port, serve_module

READY_SECONDS = 180.0
OCI_LABELS = ("title", "description", "version", "revision", "licenses", "source")
# The serving container as the brief of issue 15 runs it: no writable root, uid 1000.
LOCKED_DOWN: dict[str, Any] = {"read_only": True, "user": "1000:1000",
                               "tmpfs": {"/tmp": "rw,size=256m"}, "network_mode": "host"}


# --- the Dockerfiles, statically: what the layer cache relies on --------------------


def dependency_prefix(name: str) -> list[str]:
    """images/<name>/Dockerfile's instructions from ``ARG PYTHON_IMAGE`` to its shared
    dependency install, continuations joined."""
    text = re.sub(r"\\\n", "", (REPO / "images" / name / "Dockerfile").read_text())
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("ARG PYTHON_IMAGE="))
    end = next(i for i, ln in enumerate(lines) if "pip install -r requirements.txt" in ln)
    return lines[start:end + 1]


def test_every_image_builds_the_same_dependency_layer() -> None:
    """The same instructions on the same base: the engine builds pyproject's dependencies
    once and every image reuses that layer (a cold build of all four pays it once)."""
    prefixes = {name: tuple(dependency_prefix(name)) for name in IMAGES.values()}
    assert len(set(prefixes.values())) == 1, prefixes
    assert not any(ln.startswith("ARG") for ln in next(iter(prefixes.values()))[1:])


# --- which modules each step image must import ---------------------------------------


def _imports_of(func: Any) -> set[str]:
    """Absolute modules a component's function body imports (what runs in the image)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def step_modules() -> dict[str, set[str]]:
    """Image kind -> modules its steps import, from every components/*/component.py:
    each component's function body, plus the whole framework package on its image
    (the adapter imports its modules lazily, at run time)."""
    kind_of = {image(kind): kind for kind in IMAGES}
    modules: dict[str, set[str]] = {}
    for path in sorted((REPO / "components").glob("*/component.py")):
        module = importlib.import_module(f"components.{path.parent.name}.component")
        for value in vars(module).values():
            for component in value.values() if isinstance(value, dict) else [value]:
                func = getattr(component, "python_func", None)
                if func is None or not hasattr(component, "component_spec"):
                    continue
                kind = kind_of[component.component_spec.implementation.container.image]
                modules.setdefault(kind, {"kfp.dsl.executor_main"}).update(_imports_of(func))
    for name in framework_names():
        package = importlib.import_module(f"components.frameworks.{name}")
        modules[name] |= {m.name for m in pkgutil.walk_packages(package.__path__,
                                                                f"{package.__name__}.")}
    return modules


def test_every_step_image_serves_some_step() -> None:
    assert set(step_modules()) == {kind for kind in IMAGES if kind != "serving"}


def run_python(client: Any, ref: str, code: str, *args: str) -> str:
    """``python -c code args`` in ``ref``, locked down and without a network."""
    out = client.containers.run(ref, ["python", "-c", code, *args], remove=True,
                                read_only=True, tmpfs={"/tmp": ""}, network_mode="none",
                                stdout=True, stderr=True)
    return str(out.decode(errors="replace"))


IMPORT_ALL = ("import importlib, sys\n"
              "for name in sys.argv[1:]:\n"
              "    importlib.import_module(name)\n"
              "print('imported', len(sys.argv) - 1)")
FRAMEWORKS_PRESENT = ("import importlib.util as u\n"
                      "print(sorted(m for m in ('torch', 'tensorflow') if u.find_spec(m)))")


@pytest.mark.containers
@pytest.mark.parametrize("kind", [k for k in IMAGES if k != "serving"])
def test_every_step_import_resolves_in_its_image(docker_client: Any,  # noqa: F811
                                                 built_images: dict[str, BuiltImage],  # noqa: F811
                                                 kind: str) -> None:
    modules = sorted(step_modules()[kind])
    out = run_python(docker_client, built_images[IMAGES[kind]].ref, IMPORT_ALL, *modules)
    assert out.strip().splitlines()[-1] == f"imported {len(modules)}", out[-3000:]
    # Only what the steps need: no framework on the base image, not the other one's.
    present = run_python(docker_client, built_images[IMAGES[kind]].ref, FRAMEWORKS_PRESENT)
    assert present.strip() == str([kind] if kind in framework_names() else [])


@pytest.mark.containers
@pytest.mark.parametrize("name", list(IMAGES.values()))
def test_images_run_as_non_root_with_oci_labels(docker_client: Any,  # noqa: F811
                                                built_images: dict[str, BuiltImage],  # noqa: F811
                                                name: str) -> None:
    built = built_images[name]
    attrs = docker_client.images.get(built.ref).attrs
    assert attrs["Config"]["User"] == "1000:1000"
    out = docker_client.containers.run(built.ref, ["-u"], entrypoint=["id"], remove=True,
                                       network_mode="none")
    assert out.decode().strip() == "1000"
    labels = attrs["Config"]["Labels"]
    for key in OCI_LABELS:
        assert f"org.opencontainers.image.{key}" in labels, f"{name}: no {key} label"
    assert labels["org.opencontainers.image.version"] == version("twinflow")
    assert labels["org.opencontainers.image.title"] == f"twinflow-{name}"
    assert built.digest == attrs["Id"] and built.size == attrs["Size"] > 0


# --- the serving container ------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A torch exports directory (ONNX, TorchScript) that uid 1000 can read."""
    directory = tmp_path_factory.mktemp("container-exports")
    _, model = torch_exports(directory)
    for path in [directory, *directory.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
                   | (stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
    return directory, model


class Container:
    """A detached serving container on a loopback port; its logs on failure."""

    def __init__(self, client: Any, ref: str, args: list[str], **options: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"HOST": "127.0.0.1", "PORT": str(self.port), **options.pop("environment", {})}
        self.container = client.containers.run(ref, args, detach=True, environment=env,
                                               **LOCKED_DOWN, **options)

    def wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            self.container.reload()
            if self.container.status == "exited":
                raise AssertionError(f"container exited:\n{self.logs()}")
            try:
                if requests.get(f"{self.url}/v2/models/{name}/ready", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"container not ready in {READY_SECONDS} s:\n{self.logs()}")

    def logs(self) -> str:
        return str(self.container.logs().decode(errors="replace"))[-3000:]

    def stop(self) -> None:
        self.container.remove(force=True)


@pytest.fixture(scope="module")
def host_server(exports: tuple[Path, Any]) -> Iterator[Server]:
    """`python -m components.serve` on the host over the same exports: the reference."""
    server = Server(serve_module("--model-dir", str(exports[0]), "--name", "digits"),
                    name="digits")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def serving(docker_client: Any, built_images: dict[str, BuiltImage],  # noqa: F811
            exports: tuple[Path, Any]) -> Iterator[Container]:
    """The serving image over the exports mounted read-only at /mnt/models (MODEL_DIR)."""
    container = Container(docker_client, built_images["serving"].ref, ["--name", "digits"],
                          volumes={str(exports[0]): {"bind": "/mnt/models", "mode": "ro"}})
    try:
        container.wait_ready("digits")
        yield container
    finally:
        container.stop()


def v1(url: str, name: str, rows: np.ndarray) -> requests.Response:
    return requests.post(f"{url}/v1/models/{name}:predict", json={"instances": rows.tolist()},
                         timeout=30)


def v2(url: str, name: str, rows: np.ndarray) -> requests.Response:
    body = {"id": "req-1", "inputs": [{"name": "input", "shape": list(rows.shape),
                                       "datatype": "FP32", "data": rows.ravel().tolist()}]}
    return requests.post(f"{url}/v2/models/{name}/infer", json=body, timeout=30)


@pytest.mark.containers
def test_serving_container_health_and_metadata(serving: Container) -> None:
    assert requests.get(f"{serving.url}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{serving.url}/v2/health/ready", timeout=5).json() == {"ready": True}
    meta = requests.get(f"{serving.url}/v2/models/digits", timeout=5).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]


@pytest.mark.containers
def test_serving_container_answers_as_the_host_server(serving: Container, host_server: Server,
                                                      exports: tuple[Path, Any]) -> None:
    rows = sample(6, seed=11)
    for call in (v1, v2):
        got, want = call(serving.url, "digits", rows), call(host_server.url, "digits", rows)
        assert got.status_code == want.status_code == 200, got.text
        assert got.json() == want.json(), call.__name__
    probabilities = [p["probabilities"] for p in v1(serving.url, "digits", rows).json()[
        "predictions"]]
    np.testing.assert_allclose(probabilities, softmax(torch_logits(exports[1], rows)),
                               atol=1e-4)


@pytest.mark.containers
def test_serving_container_is_locked_down(serving: Container) -> None:
    attrs = serving.container.attrs
    assert attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert attrs["Config"]["User"] == "1000:1000"
    assert attrs["Config"]["Entrypoint"] == ["python", "-m", "components.serve"]
    # Its own home is the user's: only the read-only root stops the write.
    _, out = serving.container.exec_run(["sh", "-c", "touch /home/twinflow/x; id -u"])
    assert "Read-only file system" in out.decode() and out.decode().split()[-1] == "1000"


@pytest.mark.containers
def test_serving_container_torchscript_export(docker_client: Any,  # noqa: F811
                                              built_images: dict[str, BuiltImage],  # noqa: F811
                                              exports: tuple[Path, Any]) -> None:
    """The serving image's torch (FRAMEWORK=torch) runs a TorchScript export."""
    container = Container(docker_client, built_images["serving"].ref,
                          ["--export", "torchscript", "--name", "ts"],
                          volumes={str(exports[0]): {"bind": "/mnt/models", "mode": "ro"}})
    try:
        container.wait_ready("ts")
        rows = sample(3, seed=12)
        got = [p["probabilities"] for p in v1(container.url, "ts", rows).json()["predictions"]]
        np.testing.assert_allclose(got, softmax(torch_logits(exports[1], rows)), atol=1e-5)
    finally:
        container.stop()


def _register(uri: str, name: str, directory: Path) -> None:
    """A registered version whose run holds ``exports/``, aliased champion (as push does)."""
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(f"{name}-exp")
    run = client.create_run(experiment)
    client.log_artifacts(run.info.run_id, str(directory), "exports")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    found = client.create_model_version(name, f"runs:/{run.info.run_id}/exports",
                                        run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", found.version)


@pytest.mark.containers
def test_serving_container_model_at_alias_from_a_tracking_server(
        docker_client: Any, built_images: dict[str, BuiltImage],  # noqa: F811
        exports: tuple[Path, Any], host_server: Server, tmp_path: Path) -> None:
    server = TrackingServer(tmp_path, free_port()).start()
    try:
        _register(server.uri, "container-model", exports[0])
        container = Container(docker_client, built_images["serving"].ref, [],
                              environment={"MODEL": "container-model@champion",
                                           "MLFLOW_TRACKING_URI": server.uri})
        try:
            container.wait_ready("container-model")
            rows = sample(4, seed=13)
            got = v1(container.url, "container-model", rows)
            assert got.status_code == 200, container.logs()
            want = v1(host_server.url, "digits", rows).json()
            assert got.json() == want
        finally:
            container.stop()
    finally:
        server.kill()


# --- bad input, with or without an engine ---------------------------------------------


def twinflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_build_without_an_engine_fails_in_one_line(tmp_path: Path) -> None:
    socket = tmp_path / "no-docker.sock"
    done = twinflow("images", "build", DOCKER_HOST=f"unix://{socket}")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"twinflow: error: Docker is not running (nothing answers on unix://{socket}): "
        "start it with `twinflow images engine start` (as root) or your system's docker "
        "service"]


def test_an_unknown_image_is_named_with_the_choices() -> None:
    done = twinflow("images", "build", "--only", "step-nope")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "twinflow: error: unknown image(s) step-nope; choose from: "
        f"{', '.join(IMAGES.values())}"]


@pytest.mark.containers
def test_list_names_an_image_that_is_not_built(docker_client: Any) -> None:  # noqa: F811
    done = twinflow("images", "list", TWINFLOW_IMAGE_TAG="never-built")
    assert done.returncode == 1
    registry = get_settings().image_registry
    refs = ", ".join(f"{registry}/{name}:never-built" for name in IMAGES.values())
    only = " ".join(f"--only {name}" for name in IMAGES.values())
    assert done.stderr.strip().splitlines() == [
        f"twinflow: error: not built: {refs}; run `twinflow images build {only}`"]
    assert done.stdout.count("not built") == len(IMAGES)


@pytest.mark.containers
def test_engine_commands_touch_only_a_dockerd_they_started(docker_client: Any,  # noqa: F811
                                                           tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    started = twinflow("images", "engine", "start", TWINFLOW_HOME=home)
    assert started.returncode == 0 and started.stdout.strip() == (
        "Docker is already running; nothing started")
    stopped = twinflow("images", "engine", "stop", TWINFLOW_HOME=home)
    assert stopped.returncode == 0 and stopped.stdout.strip().endswith("nothing stopped")
    assert docker_client.ping()  # the engine this session uses still runs
    status = twinflow("images", "engine", "status")
    assert status.returncode == 0 and " is running " in status.stdout
