"""Start N local training processes and supervise them.

The framework adapter says which processes to start (``local_launch``: torch's
own elastic launcher, or one process per TF_CONFIG task on loopback ports);
here they are started and watched. A worker that dies fails the whole run
promptly: the others are stopped instead of waiting forever in a collective.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from components.config import TrainConfig
from components.errors import TwinflowError
from components.frameworks import get_adapter
from components.processes import kill_with_parent
from components.train.worker import WORKER_MODULE

log = logging.getLogger(__name__)
_POLL_S = 0.5
_GRACE_S = 10.0


class TrainingError(TwinflowError):
    """A training worker failed."""


def launch_workers(config: TrainConfig, data_dir: Path, model_dir: Path,
                   checkpoint_dir: Path | None, run_id: str | None) -> None:
    """Run ``config.workers`` processes to completion or raise :class:`TrainingError`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    args = ["-m", WORKER_MODULE, "--config", config.model_dump_json(), "--data", str(data_dir),
            "--model", str(model_dir)]
    args += ["--checkpoint-dir", str(checkpoint_dir)] if checkpoint_dir else []
    args += ["--run-id", run_id] if run_id else []
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    plan = get_adapter(config.framework).local_launch(config.workers, args)
    supervise({p.name: spawn([sys.executable, *p.argv], {**env, **p.env}) for p in plan},
              "training {name} {how}; stopped the other workers (rerun with --resume to "
              "continue from the last checkpoint)")


def spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker in its own session (signals reach it only through :func:`supervise`),
    killed by the kernel if this process dies without stopping it (SIGKILL, OOM)."""
    log.info("starting %s", " ".join(cmd[:8]))
    return subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=kill_with_parent)


def supervise(procs: dict[str, subprocess.Popen[bytes]], failure: str) -> None:
    """Wait for all; on the first failure stop the rest and raise ``failure`` (formatted
    with the worker's ``name`` and ``how`` it ended). An interrupt of this process
    (Ctrl-C, or SIGTERM turned into an exception) stops them too: none is left behind."""
    try:
        while True:
            codes = {name: p.poll() for name, p in procs.items()}
            failed = [(n, c) for n, c in codes.items() if c not in (None, 0)]
            if failed:
                _stop(procs)
                name, code = failed[0]
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise TrainingError(failure.format(name=name, how=how))
            if all(c == 0 for c in codes.values()):
                return
            time.sleep(_POLL_S)
    except BaseException:
        _stop(procs)
        raise


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, SIGKILL what is left after a grace period."""
    for p in procs.values():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for p in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
