"""Start N local training processes and supervise them.

PyTorch goes through torch's own elastic launcher (``torch.distributed.run``),
TensorFlow through one process per TF_CONFIG task on loopback ports. Either way
a worker that dies fails the whole run promptly: the others are stopped instead
of waiting forever in a collective.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from components.config import Framework, TrainConfig
from components.errors import TwinflowError

log = logging.getLogger(__name__)
_POLL_S = 0.5
_GRACE_S = 10.0


class TrainingError(TwinflowError):
    """A training worker failed."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (traffic stays on loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_workers(config: TrainConfig, data_dir: Path, model_dir: Path,
                   checkpoint_dir: Path | None, run_id: str | None) -> None:
    """Run ``config.workers`` processes to completion or raise :class:`TrainingError`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    args = ["--config", config.model_dump_json(), "--data", str(data_dir),
            "--model", str(model_dir)]
    args += ["--checkpoint-dir", str(checkpoint_dir)] if checkpoint_dir else []
    args += ["--run-id", run_id] if run_id else []
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    if config.framework is Framework.TORCH:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
               f"--nproc-per-node={config.workers}", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--max-restarts=0",
               "--monitor-interval=0.5", "-m", "components.train.worker", *args]
        _supervise({"torch.distributed.run": _spawn(cmd, env)})
        return
    ports = [free_port() for _ in range(config.workers)]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = {}
    for index in range(config.workers):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        cmd = [sys.executable, "-m", "components.train.worker", *args]
        procs[f"worker {index}"] = _spawn(cmd, {**env, "TF_CONFIG": tf_config})
    _supervise(procs)


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.info("starting %s", " ".join(cmd[:8]))
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def _supervise(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Wait for all; on the first failure stop the rest and raise naming the worker."""
    while True:
        codes = {name: p.poll() for name, p in procs.items()}
        failed = [(n, c) for n, c in codes.items() if c not in (None, 0)]
        if failed:
            _stop(procs)
            name, code = failed[0]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise TrainingError(f"training {name} {how}; stopped the other workers "
                                "(rerun with --resume to continue from the last checkpoint)")
        if all(c == 0 for c in codes.values()):
            return
        time.sleep(_POLL_S)


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
