"""`twinflow serve`: a real KServe server answering HTTP on 127.0.0.1, compared with
in-process predictions, for torch (ONNX, TorchScript) and TensorFlow (SavedModel,
TFLite, ONNX) exports, from a local directory and from the MLflow registry."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import psutil
import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.serving_fixtures import (
    N_FEATURES,
    sample,
    softmax,
    tf_exports,
    tf_logits,
    torch_exports,
    torch_logits,
)

READY_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("torch-exports")
    _, model = torch_exports(directory)
    return directory, model


@pytest.fixture(scope="module")
def tf_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("tf-exports")
    _, model = tf_exports(directory)
    return directory, model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess in its own process group, stopped by that group's id."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 name: str = "model", ready_path: str = "") -> None:
        self.port = free_port()
        self.name = name
        self.ready_path = ready_path or f"/v2/models/{name}/ready"
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**(env or os.environ), "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([*args, "--port", str(self.port)], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{out[-3000:]}")
            try:
                if requests.get(f"{self.url}{self.ready_path}", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError("server not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def v1(self, rows: Any) -> requests.Response:
        return requests.post(f"{self.url}/v1/models/{self.name}:predict",
                             json={"instances": rows}, timeout=30)

    def v2(self, body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{self.url}/v2/models/{self.name}/infer", json=body, timeout=30)


def serve_module(*args: str) -> list[str]:
    return [sys.executable, "-m", "components.serve", *args]


@pytest.fixture(scope="module")
def started() -> Iterator[list[Server]]:
    """Servers started by a test module; all stopped at its end."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


CASES = [("torch", "onnx"), ("torch", "torchscript"), ("tensorflow", "savedmodel"),
         ("tensorflow", "tflite"), ("tensorflow", "onnx")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{fw}-{fmt}" for fw, fmt in CASES])
def served(request: pytest.FixtureRequest, started: list[Server]) -> Iterator[tuple[Server, Any]]:
    """(server of one export, in-process logits function of the same model)."""
    framework, export = request.param
    directory, model = request.getfixturevalue("torch_dir" if framework == "torch" else "tf_dir")
    server = Server(serve_module("--model-dir", str(directory), "--export", export))
    started.append(server)
    server.wait_ready()
    logits = torch_logits if framework == "torch" else tf_logits
    yield server, lambda x: logits(model, x)
    server.stop()


def test_v1_answers_the_in_process_probabilities(served: tuple[Server, Any]) -> None:
    server, logits = served
    x = sample(5, seed=1)
    response = server.v1(x.tolist())
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = softmax(logits(x))
    got = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert [p["class"] for p in predictions] == [
        ["setosa", "versicolor", "virginica"][i] for i in expected.argmax(axis=1)]


def test_v2_answers_the_in_process_probabilities(served: tuple[Server, Any]) -> None:
    server, logits = served
    x = sample(3, seed=2)
    body = {"id": "req-7", "inputs": [{"name": "input", "shape": list(x.shape),
                                       "datatype": "FP32", "data": x.ravel().tolist()}]}
    response = server.v2(body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == "req-7" and answer["model_name"] == "model"
    outputs = {o["name"]: o for o in answer["outputs"]}
    probs = outputs["probabilities"]
    assert probs["datatype"] == "FP32" and probs["shape"] == [3, 3]
    expected = softmax(logits(x))
    np.testing.assert_allclose(np.reshape(probs["data"], (3, 3)), expected, atol=1e-4)
    assert outputs["class"]["data"] == [["setosa", "versicolor", "virginica"][i]
                                        for i in expected.argmax(axis=1)]
    # Without an id the server makes one (the V2 response requires it).
    body.pop("id")
    assert server.v2(body).json()["id"]


@pytest.fixture(scope="module")
def onnx_server(torch_dir: tuple[Path, Any], started: list[Server]) -> Server:
    server = Server(serve_module("--model-dir", str(torch_dir[0]), "--name", "digits"),
                    name="digits")
    started.append(server)
    server.wait_ready()
    return server


def test_health_readiness_and_metadata(onnx_server: Server) -> None:
    url = onnx_server.url
    assert requests.get(f"{url}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{url}/v1/models/digits", timeout=5).json() == {
        "name": "digits", "ready": True}
    assert requests.get(f"{url}/v1/models", timeout=5).json() == {"models": ["digits"]}
    meta = requests.get(f"{url}/v2/models/digits", timeout=5).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "probabilities": [-1, 3], "class": [-1]}
    assert requests.get(f"{url}/v2/models/other/ready", timeout=5).status_code == 404


def test_listens_on_loopback_only_and_without_grpc(onnx_server: Server) -> None:
    listening = set()
    for proc in [psutil.Process(onnx_server.proc.pid),
                 *psutil.Process(onnx_server.proc.pid).children(recursive=True)]:
        listening |= {(c.laddr.ip, c.laddr.port) for c in proc.connections("inet")
                      if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", onnx_server.port)}


ROW = [0.5] * N_FEATURES
BAD_V1 = {
    "wrong width": ({"instances": [ROW[:-1]]}, "expected rows of 8 numbers"),
    "ragged rows": ({"instances": [ROW, ROW[:-2]]}, "rows of different lengths"),
    "non-numeric": ({"instances": [[*ROW[:-1], "x"]]}, "only numbers (found string"),
    "null (NaN)": ({"instances": [[*ROW[:-1], None]]}, "only numbers"),
    "empty": ({"instances": []}, "non-empty list"),
    "no instances": ({"rows": [ROW]}, '{"instances"'),
    "huge": ({"instances": [[*ROW[:-1], 1e300]]}, "non-finite value"),
}


@pytest.mark.parametrize("case", sorted(BAD_V1))
def test_malformed_v1_gets_400_with_a_message(onnx_server: Server, case: str) -> None:
    body, message = BAD_V1[case]
    response = requests.post(f"{onnx_server.url}/v1/models/digits:predict", json=body,
                             timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_nan_literal_and_non_json_get_400(onnx_server: Server) -> None:
    url = f"{onnx_server.url}/v1/models/digits:predict"
    nan_row = '{"instances": [[' + ", ".join(["NaN"] * N_FEATURES) + "]]}"
    for body in (nan_row, "not json"):
        response = requests.post(url, data=body, timeout=10,
                                 headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]


def _tensor(shape: list[int], data: list[Any], datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}


BAD_V2 = {
    "wrong dtype": (_tensor([1, 8], ROW, "INT32"), "datatype must be FP32"),
    "wrong width": (_tensor([1, 7], ROW[:-1]), "shape must be [N, 8]"),
    "data/shape mismatch": (_tensor([2, 8], ROW), "does not match shape"),
    "non-numeric": (_tensor([1, 8], [*ROW[:-1], "x"]), "does not match shape"),
    "null (NaN)": (_tensor([1, 8], [*ROW[:-1], None]), "non-finite value"),
    "empty": (_tensor([0, 8], []), "no rows"),
    "two inputs": ({"inputs": _tensor([1, 8], ROW)["inputs"] * 2}, "one input tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_V2))
def test_malformed_v2_gets_400_with_a_message(onnx_server: Server, case: str) -> None:
    body, message = BAD_V2[case]
    response = requests.post(f"{onnx_server.url}/v2/models/digits/infer", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_serving_onnx_imports_neither_torch_nor_tensorflow(torch_dir: tuple[Path, Any]) -> None:
    code = ("import sys, numpy as np\n"
            "from pathlib import Path\n"
            "from components.serve.model import ExportsModel\n"
            f"m = ExportsModel('m', Path({str(torch_dir[0])!r}))\n"
            "m.load()\n"
            f"m.predict({{'instances': [[0.1] * {N_FEATURES}]}})\n"
            "print(sorted(k for k in ('torch', 'tensorflow', 'keras', 'tf_keras') "
            "if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow  # two spawned workers each import kserve: about a minute here
def test_two_workers_each_load_their_own_session(torch_dir: tuple[Path, Any],
                                                 started: list[Server]) -> None:
    directory, model = torch_dir
    server = Server(serve_module("--model-dir", str(directory), "--workers", "2"))
    started.append(server)
    server.wait_ready()
    x = sample(4, seed=3)
    for _ in range(6):  # spread over both workers
        response = server.v1(x.tolist())
        assert response.status_code == 200, response.text
        got = np.array([p["probabilities"] for p in response.json()["predictions"]])
        np.testing.assert_allclose(got, softmax(torch_logits(model, x)), atol=1e-5)
    workers = psutil.Process(server.proc.pid).children(recursive=True)
    assert sum("spawn_main" in " ".join(p.cmdline()) for p in workers) == 2
    server.stop()


def test_unknown_export_and_bad_directory_fail_with_a_message(tmp_path: Path,
                                                              torch_dir: tuple[Path, Any]
                                                              ) -> None:
    from components.errors import ConfigError, DataError
    from components.serve.model import ExportsModel

    with pytest.raises(ConfigError, match=r"--export 'nope'.*\['onnx', 'torchscript'\]"):
        ExportsModel("m", torch_dir[0], "nope").load()
    with pytest.raises(DataError, match="not an exports directory"):
        ExportsModel("m", tmp_path).load()


# --- the registry: NAME@alias -------------------------------------------------------


def _register_exports(name: str, directory: Path) -> str:
    """A registered version whose run holds ``exports/``, aliased champion (what push does)."""
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(directory), artifact_path="exports")
    client = MlflowClient()
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/exports",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return str(version.version)


def test_serves_name_at_champion_from_the_registry(store: str, tmp_path: Path,
                                                   torch_dir: tuple[Path, Any],
                                                   started: list[Server]) -> None:
    directory, model = torch_dir
    _register_exports("serve-registry", directory)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "TWINFLOW_HOME": str(tmp_path / "home")}
    server = Server([sys.executable, "-m", "pipelines.cli", "serve", "--model",
                     "serve-registry", "--export", "torchscript"], env=env,
                    name="serve-registry")
    started.append(server)
    server.wait_ready()
    x = sample(2, seed=4)
    got = np.array([p["probabilities"] for p in server.v1(x.tolist()).json()["predictions"]])
    np.testing.assert_allclose(got, softmax(torch_logits(model, x)), atol=1e-5)
    cached = list((tmp_path / "home" / "serving" / "serve-registry").glob("v1-*/exports"))
    assert len(cached) == 1 and (cached[0] / "export.json").is_file()
    server.stop()


def test_registry_errors_name_the_model(store: str, tmp_path: Path) -> None:
    from components.errors import ConfigError, DataError
    from components.serve.resolve import download_exports, parse_model_ref

    assert parse_model_ref("m") == ("m", "champion", None)
    assert parse_model_ref("m@staging") == ("m", "staging", None)
    assert parse_model_ref("m/3") == ("m", None, "3")
    with pytest.raises(ConfigError, match="NAME/VERSION"):
        parse_model_ref("m/latest")
    with pytest.raises(DataError, match="'missing-model@champion': not in the registry"):
        download_exports("missing-model@champion", tmp_path)
    with mlflow.start_run() as run:  # a version whose run has no exports/
        mlflow.log_text("x", "other/file.txt")
    client = MlflowClient()
    client.create_registered_model("no-exports")
    client.create_model_version("no-exports", f"runs:/{run.info.run_id}/other",
                                run_id=run.info.run_id)
    with pytest.raises(DataError, match=r"no 'exports/' artifacts"):
        download_exports("no-exports/1", tmp_path)


def test_cli_reports_a_missing_model(tmp_path: Path, store: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "--model", "absent",
                          "--port", str(free_port())], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=120)
    assert out.returncode == 1
    assert "twinflow: error: --model 'absent': not in the registry" in out.stderr
