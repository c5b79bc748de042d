"""Session fixtures of the container tests: a running Docker engine and the built images.

Import the fixtures into a test module (``from tests.docker_engine import
docker_client, built_images``). The engine and the images are made once per
session whichever modules use them (the state lives in the pytest config, not in
the fixture, which pytest would instantiate once per importing module):

- an engine already running is used and left running; otherwise, as root, the
  fixture installs Debian's docker.io (and mmdebstrap, for the offline base) with
  apt-get when missing, starts dockerd with `twinflow images engine start`'s code
  and stops it when the session ends;
- the images are built with `twinflow images build`'s code, reusing the engine's
  layers: seconds when nothing changed, minutes on a fresh machine;
- where Docker cannot be installed or started (not root, no apt-get, dockerd
  fails), every test using them skips with one line saying why; in CI (``CI`` set)
  they fail instead, since CI machines must run them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components.errors import TwinflowError
from pipelines.docker_engine import engine_client, is_running, start_engine, stop_engine
from pipelines.image_base import MissingToolError
from pipelines.image_build import BuildOptions, BuiltImage, build_images

log = logging.getLogger(__name__)
APT_PACKAGES = {"dockerd": "docker.io", "mmdebstrap": "mmdebstrap"}


@dataclass
class ContainerSession:
    """What the session has: a client (or why not), the images built (or the error)."""

    client: Any = None
    skip: str = ""
    images: dict[str, BuiltImage] = field(default_factory=dict)  # image name -> built
    build_error: str = ""


SESSION = pytest.StashKey[ContainerSession]()


def _install_missing() -> str:
    """apt-get install what is missing; '' or why it cannot be done (the skip line)."""
    missing = [pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None]
    if not missing:
        return ""
    if os.geteuid() != 0:
        return f"Docker is not installed and only root may install it ({', '.join(missing)})"
    if shutil.which("apt-get") is None:
        return f"Docker is not installed and there is no apt-get to install {missing}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(f"apt-get update -qq && apt-get install -y -qq {' '.join(missing)}",
                          shell=True, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"apt-get install {' '.join(missing)} failed: {last}"
    return ""


def _start(config: pytest.Config, home: Path) -> ContainerSession:
    if is_running():
        return ContainerSession(client=engine_client())
    why = _install_missing()
    if why:
        return ContainerSession(skip=why)
    try:
        start_engine(home)
    except TwinflowError as err:
        return ContainerSession(skip=str(err))
    config.add_cleanup(lambda: log.info(stop_engine(home)))
    return ContainerSession(client=engine_client())


def container_session(request: pytest.FixtureRequest,
                      factory: pytest.TempPathFactory) -> ContainerSession:
    """The session's engine, started on first use (pytest-config scoped)."""
    config = request.config
    if SESSION not in config.stash:
        config.stash[SESSION] = _start(config, factory.mktemp("docker-engine"))
    return config.stash[SESSION]


def _skip(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the container tests: {why}", pytrace=False)
    pytest.skip(f"containers: {why}")


@pytest.fixture(scope="session")
def docker_client(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A docker SDK client of a running engine, or a one-line skip."""
    session = container_session(request, tmp_path_factory)
    if session.skip:
        _skip(session.skip)
    return session.client


@pytest.fixture(scope="session")
def built_images(request: pytest.FixtureRequest, docker_client: Any,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    """Every image of components/images.py, built once per session: name -> image."""
    session = container_session(request, tmp_path_factory)
    if not session.images and not session.build_error:
        try:
            session.images = {b.name: b for b in build_images(BuildOptions())}
        except MissingToolError as err:  # e.g. mmdebstrap where apt-get could not add it
            session.skip = str(err)
        except TwinflowError as err:
            session.build_error = str(err)
    if session.skip:
        _skip(session.skip)
    if session.build_error:
        pytest.fail(f"the images did not build: {session.build_error}", pytrace=False)
    return session.images
