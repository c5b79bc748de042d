"""`twinflow run --runner docker`: the same pipeline, each step in its image.

KFP's own ``kfp.local.DockerRunner`` runs each task as a container of the image its
component names (components/images.py). What it does not do, and a run needs:

- a tracking store the containers reach: an ``mlflow server`` on 127.0.0.1 over the
  local SQLite store (host networking), started for the run and stopped after it,
  unless the user gave ``--tracking-uri`` (then the containers use that);
- the files a step reads or writes outside the pipeline root (KFP mounts only that):
  twinflow's home (store, artifacts, checkpoints, the error file) and the working
  directory (the user's data and model code), bind-mounted at the same paths;
- the invoking user's uid, so that nothing it leaves is root-owned;
- the host's pid namespace, so that a step sees whether the `twinflow run` it belongs
  to is alive (components.processes.watch_owner) and stops with it;
- a label per run, so that an interrupt stops that run's containers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from components.errors import TwinflowError
from components.images import IMAGES, image
from components.net import free_port
from components.processes import kill_with_parent
from pipelines.docker_engine import DockerError

log = logging.getLogger(__name__)
RUN_LABEL = "twinflow.run"  # the container label naming the pipeline run
SERVER_START_SECONDS = 120
#: The environment a container's step needs beyond what the run hands every step.
CONTAINER_ENV = {"HOME": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "PYTHONUNBUFFERED": "1"}


def docker_client() -> Any:
    """A client of a running engine, or DockerError saying what to do."""
    try:
        import docker
    except ImportError:
        raise DockerError("--runner docker needs the docker Python package "
                          "(pip install docker)") from None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        raise DockerError(f"Docker is not running ({str(err)[:200]}); start the engine "
                          "(twinflow images engine start, or dockerd) and retry") from None
    return client


def check_images(client: Any, kinds: list[str]) -> None:
    """Every step image of ``kinds`` exists locally (KFP would try to pull it)."""
    tags = {t for i in client.images.list() for t in i.tags}
    missing = [image(k) for k in kinds if image(k) not in tags]
    if missing:
        raise DockerError(f"image(s) {', '.join(missing)} not built: run twinflow images "
                          f"build --only {' '.join(IMAGES[k] for k in kinds)}")


def docker_runner(env: dict[str, str], run_key: str, paths: list[Path]) -> Any:
    """The KFP runner: host network and pids, the user's uid, ``paths`` mounted."""
    import kfp.local
    from docker.types import Mount

    mounts = [Mount(str(p), str(p), type="bind") for p in _outermost(paths)]
    return kfp.local.DockerRunner(
        network_mode="host", pid_mode="host", user=f"{os.getuid()}:{os.getgid()}",
        environment={**env, **CONTAINER_ENV}, mounts=mounts, labels={RUN_LABEL: run_key},
        working_dir=str(Path.cwd()))


def _outermost(paths: list[Path]) -> list[Path]:
    """``paths`` resolved, without those inside another (Docker refuses a path twice)."""
    resolved = sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in resolved:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def stop_containers(run_key: str) -> int:
    """Stop this run's containers (after an interrupt); how many."""
    with contextlib.suppress(DockerError):
        client = docker_client()
        running = client.containers.list(filters={"label": f"{RUN_LABEL}={run_key}"})
        for container in running:
            container.stop(timeout=10)
        return len(running)
    return 0


@contextlib.contextmanager
def tracking_server(store_uri: str, home: Path) -> Iterator[str]:
    """An ``mlflow server`` on 127.0.0.1 over ``store_uri``: its URI while it runs.

    Artifacts are not proxied: runs write them under ``home/artifacts`` themselves (the
    SQLite store's own artifact root, mounted in every container), so a run's
    artifacts are in the same place whichever runner made them.
    """
    port = free_port()
    artifacts = (home / "artifacts").resolve()
    log_file = home / "logs" / f"mlflow-server-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(port), "--backend-store-uri", store_uri, "--no-serve-artifacts",
             "--default-artifact-root", artifacts.as_uri(), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=kill_with_parent)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(uri, server, log_file)
        log.info("tracking server for the containers: %s (log %s)", uri, log_file)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _wait_ready(uri: str, server: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise TwinflowError(f"the run's mlflow server exited ({server.returncode}); see "
                                f"{log_file}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{uri}/health", timeout=2).ok:
                return
        time.sleep(0.5)
    raise TwinflowError(f"the run's mlflow server on {uri} was not ready within "
                        f"{SERVER_START_SECONDS} s; see {log_file}")
