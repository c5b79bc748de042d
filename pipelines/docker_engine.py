"""A local Docker engine: reach it, or start and stop one that twinflow owns.

The machines this project runs on have Debian's ``docker.io`` but no service
manager that starts it, so ``twinflow images engine start`` runs ``dockerd`` itself
(as root, with its own log, no bridge and no iptables rules: containers use host
networking) and records its pid; ``stop`` stops only that process. Nothing else here
starts a process: a build against a missing engine fails with one line saying what
to do instead of starting a daemon behind the user's back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from components.errors import TwinflowError
from components.settings import get_settings

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


class DockerError(TwinflowError):
    """Docker is missing or not running, or an image a build or run needs is missing."""


#: What dockerd needs here: no bridge network and no iptables (neither can be set up).
DOCKERD_ARGS: Final = ("--bridge=none", "--iptables=false", "--ip6tables=false")
START_SECONDS: Final = 60
STOP_SECONDS: Final = 30
DEFAULT_SOCKET: Final = "unix:///var/run/docker.sock"
INSTALL_HINT: Final = "apt-get install -y docker.io (./setup.sh does it when run as root)"
START_HINT: Final = "start it with `twinflow images engine start` (as root) or your system's " \
                    "docker service"


def state_dir(home: Path | None = None) -> Path:
    """Where the pid and log of an engine twinflow started live (under TWINFLOW_HOME)."""
    return ((home or get_settings().home) / "docker").resolve()


def engine_client(timeout: int = 600) -> docker.DockerClient:
    """A client of the running engine, or DockerError naming what to do.

    ``timeout`` bounds one API call; a cold image build streams for minutes, so the
    default is long.
    """
    try:
        import docker
    except ImportError:  # kfp's DockerRunner needs the SDK too
        raise DockerError("the docker Python package is missing: pip install docker") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as err:
        raise DockerError(_not_running(err)) from None
    return client


def _not_running(err: Exception) -> str:
    if shutil.which("dockerd") is None and shutil.which("docker") is None:
        return f"Docker is not installed: {INSTALL_HINT}"
    log.debug("the engine did not answer: %s", err)
    where = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    if "Permission denied" in str(err):
        return (f"Docker runs but this user may not use it (permission denied on {where}): "
                "run as root or join the docker group")
    return f"Docker is not running (nothing answers on {where}): {START_HINT}"


def is_running() -> bool:
    """Whether an engine answers on the default socket (DOCKER_HOST if set)."""
    try:
        engine_client(timeout=10).close()
    except DockerError:
        return False
    return True


def start_engine(home: Path | None = None) -> str:
    """Start dockerd unless an engine already answers; a line saying what happened.

    The daemon runs in its own session (it outlives this process, like a service)
    and its pid goes to ``state_dir()/dockerd.pid`` for :func:`stop_engine`.
    """
    if is_running():
        return "Docker is already running; nothing started"
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise DockerError(f"Docker is not installed (no dockerd on PATH): {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise DockerError("Docker is not running and only root can start dockerd: "
                          f"sudo {dockerd} {' '.join(DOCKERD_ARGS)}")
    folder = state_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    log_file = folder / "dockerd.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen([dockerd, *DOCKERD_ARGS], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / "dockerd.pid").write_text(str(proc.pid))
    try:
        _wait_started(proc, log_file)
    except DockerError:
        _terminate(proc.pid)
        (folder / "dockerd.pid").unlink(missing_ok=True)
        raise
    log.info("dockerd %s started (pid %s, log %s)", " ".join(DOCKERD_ARGS), proc.pid, log_file)
    return f"Docker started: dockerd pid {proc.pid}, log {log_file}"


def _wait_started(proc: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DockerError(f"dockerd exited with {proc.returncode}: {_last_line(log_file)} "
                              f"(log {log_file})")
        if is_running():
            return
        time.sleep(0.5)
    raise DockerError(f"dockerd did not answer within {START_SECONDS} s (log {log_file})")


def _last_line(log_file: Path) -> str:
    lines = log_file.read_text(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else "no output"


def stop_engine(home: Path | None = None) -> str:
    """Stop the dockerd that :func:`start_engine` started (and only that one)."""
    pid_file = state_dir(home) / "dockerd.pid"
    if not pid_file.is_file():
        return f"no dockerd started by twinflow ({pid_file} is absent); nothing stopped"
    pid = int(pid_file.read_text().strip())
    if not _is_dockerd(pid):
        pid_file.unlink()
        return f"dockerd pid {pid} (from {pid_file}) is gone; nothing stopped"
    _terminate(pid)
    pid_file.unlink()
    return f"Docker stopped: dockerd pid {pid}"


def _is_dockerd(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).name() == "dockerd"
    except psutil.Error:
        return False


def _terminate(pid: int) -> None:
    """SIGTERM the daemon's process group (dockerd and the containerd it started), then
    SIGKILL what is left after STOP_SECONDS."""
    import psutil

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(timeout=STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
