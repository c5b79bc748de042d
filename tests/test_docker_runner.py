"""`twinflow run --runner docker` (issue 15): the same pipeline, each step a container of
its image through kfp.local.DockerRunner, on a real Docker engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from components.tags import STEP_TAG, Step
from tests.conftest import REPO, cli_env, pipeline_runs
from tests.docker_engine import built_images, docker_client  # noqa: F401 (fixtures)


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    environment = {**cli_env(tmp_path), "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "-q", "--runner",
                           "docker", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
@pytest.mark.containers
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_digits_in_containers(tmp_path: Path, framework: str, built_images: Any) -> None:  # noqa: F811
    """A full digits run with every step in its image: the same MLflow tree as the
    subprocess runner, a registered champion, nothing root-owned that the user did not
    own already, no container left."""
    done = _run(tmp_path, "--framework", framework, "--epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"digits-{framework} v1 @champion" in done.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / '.twinflow' / 'mlflow.db'}")
    [parent] = pipeline_runs(client)
    assert parent.info.status == "FINISHED"
    steps = client.search_runs([parent.info.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'"))
    assert {s.data.tags.get(STEP_TAG) for s in steps} == {
        Step.INGEST, Step.TRANSFORM, Step.TRAIN, Step.EVALUATE, Step.COMPRESS, Step.PUSH}
    owners = {p.stat().st_uid for p in (tmp_path / ".twinflow").rglob("*")}
    assert owners <= {tmp_path.stat().st_uid}


@pytest.mark.slow
@pytest.mark.containers
def test_a_step_error_in_a_container_is_the_same_line(tmp_path: Path,
                                                      built_images: Any) -> None:  # noqa: F811
    (tmp_path / "shop.csv").write_text("a,b,y\n1,2,x\n3,4,y\n")
    done = _run(tmp_path, "--data", "shop.csv", "--label", "nope", "--epochs", "1")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "twinflow: error: ingest: shop.csv: label column 'nope' not found; columns are: "
        "a, b, y")


def test_no_engine_is_one_line_naming_what_to_do(tmp_path: Path) -> None:
    done = _run(tmp_path, "--epochs", "1",
                env={"DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("twinflow: error: Docker is not running (")
    assert last.endswith("start the engine (twinflow images engine start, or dockerd) "
                         "and retry")


@pytest.mark.containers
def test_an_image_not_built_is_named(tmp_path: Path, docker_client: Any) -> None:  # noqa: F811
    done = _run(tmp_path, "--epochs", "1", env={"TWINFLOW_IMAGE_TAG": "not-built"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "twinflow: error: image(s) twinflow/step-base:not-built, "
        "twinflow/step-torch:not-built not built: run twinflow images build --only "
        "step-base step-torch")
