"""Warm interpreters for the local runner: each task forks a process that has
already imported what the steps import.

KFP's SubprocessRunner starts every task as a new ``python3 -m
kfp.dsl.executor_main ...``, and each new interpreter imports kfp, MLflow,
pandas, scikit-learn and its framework again: 3-4 s per task on two cores, most
of a local run on small data (bench/RESULTS.md). During `twinflow run` the
runner's python is :mod:`pipelines.warm_launcher`, which hands the task to a
*zygote*: a process that imported those modules once (with ``_KFP_RUNTIME=true``,
as a task's interpreter does) and then forks one child per task. The child takes
the task's argv, environment, working directory and stdio and runs
``kfp.dsl.executor_main`` exactly as a cold interpreter would; only the imports
are already done. One zygote per kind (``light``, ``base`` and one per framework,
whose modules come from its adapter's ``preload``): the framework zygotes are
forked after the light imports and add their framework, so a torch task never
has TensorFlow imported, and vice versa. A zygote whose imports fail marks its
socket failed; its tasks then run cold, or fail with the import's traceback
when ``TWINFLOW_WARM_STRICT=1`` (the tests set it: a broken preload list is a bug).

``TWINFLOW_WARM_STEPS=0`` turns it off (every task a cold interpreter again).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import logging
import os
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

from components.frameworks import get_adapter
from components.processes import die_with_parent
from pipelines import warm_launcher

log = logging.getLogger(__name__)

_DATA = ("components.ingest.core", "components.transform.core", "components.evaluate.core",
         "components.compress.core", "components.push.core", "components.compare.core",
         "components.train.core", "apache_beam", "onnxruntime", "onnx",
         "mlflow.models.evaluation.default_evaluator", "matplotlib.pyplot",
         "components.compress.onnx_variants", "components.export.verify")
PRELOAD: dict[str, tuple[str, ...]] = {
    # What the run's bookkeeping tasks (start-run, finish-run) need: ready in seconds,
    # so the first task does not wait for the heavy imports below.
    # MLflow imports its SQL stores (and alembic) on the first store access: ~1 s a task.
    "light": ("kfp.dsl.executor_main", "components.tracking", "components.lifecycle.core",
              "mlflow.store.tracking.sqlalchemy_store",
              "mlflow.store.model_registry.sqlalchemy_store", "alembic.script",
              "alembic.runtime.migration"),
    # Forked from "light" and importing side by side while the first tasks run.
    "base": _DATA,
}


def preload_modules(kind: str) -> tuple[str, ...]:
    """What the zygote of ``kind`` imports: ``light``, ``base``, or a framework's name
    (the data-plane modules plus what its adapter lists in ``preload``)."""
    if kind in PRELOAD:
        return PRELOAD[kind]
    return (*_DATA, *get_adapter(kind).preload)


@contextlib.contextmanager
def warm_python(kinds: list[str]) -> Iterator[str | None]:
    """Start the zygotes of ``kinds`` and yield the launcher to use as the runner's python.

    Yields None (use the real interpreter) when turned off. The zygotes are
    stopped, with any task they still run, when the block ends.
    """
    if os.environ.get("TWINFLOW_WARM_STEPS", "1") in ("0", "false", "no"):
        yield None
        return
    # In the system temp dir: a socket path must stay under 108 bytes.
    sock_dir = Path(tempfile.mkdtemp(prefix="twinflow-warm-"))
    sockets = {kind: str(sock_dir / f"{kind}.sock") for kind in ["light", "base", *kinds]}
    launcher = sock_dir / "python"
    launcher.write_text(f"#!{sys.executable} -IS\n" + Path(warm_launcher.__file__).read_text())
    launcher.chmod(0o755)
    env = {**os.environ, "_KFP_RUNTIME": "true"}
    zygote = subprocess.Popen([sys.executable, "-m", "pipelines.warm", json.dumps(sockets),
                               str(os.getpid())],
                              env=env, start_new_session=True, stdin=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in (warm_launcher.SOCKETS_ENV,
                                            warm_launcher.REAL_PYTHON_ENV)}
    os.environ[warm_launcher.SOCKETS_ENV] = json.dumps(sockets)
    os.environ[warm_launcher.REAL_PYTHON_ENV] = sys.executable
    try:
        yield str(launcher)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(zygote.pid, signal.SIGTERM)
        zygote.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(sock_dir, ignore_errors=True)


def serve(sockets: dict[str, str], parent: int) -> None:
    """The zygote process: preload, fork the other zygotes, then serve tasks. Every
    zygote and task dies with the process that started it, so a SIGKILLed `twinflow
    run` leaves none of them behind."""
    die_with_parent(signal.SIGTERM, parent)
    kind, light = "light", os.getpid()
    _preload(kind, sockets[kind])
    for other in (k for k in sockets if k != "light"):
        if os.fork() == 0:
            die_with_parent(signal.SIGTERM, light)
            kind = other
            _preload(kind, sockets[kind])
            break
    _accept_forever(sockets[kind])


def _preload(kind: str, path: str) -> None:
    """Import the modules of ``kind``; on failure mark the socket failed (with the
    traceback) so that its tasks run cold, or fail in strict mode."""
    try:
        for name in preload_modules(kind):
            importlib.import_module(name)
    except Exception:
        Path(path + ".failed").write_text(traceback.format_exc(), encoding="utf-8")
        raise


def _accept_forever(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.replace(path + ".tmp", path)  # connectable from the moment it has its name
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # tasks are reaped automatically
    sys.stdout.flush()
    sys.stderr.flush()
    zygote = os.getpid()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            die_with_parent(signal.SIGTERM, zygote)
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _run_task(conn)
        conn.close()


def _run_task(conn: socket.socket) -> None:
    """In the forked child: become the task's interpreter, run it, report its exit code."""
    header, fds, _flags, _addr = socket.recv_fds(conn, 8, 3)
    while len(header) < 8:
        header += conn.recv(8 - len(header))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    size = struct.unpack("!Q", header)[0]
    payload = b""
    while len(payload) < size:
        payload += conn.recv(min(1 << 20, size - len(payload)))
    request = json.loads(payload)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.setpgid(0, 0)  # signals to the task reach it and what it starts
    conn.sendall(f"{os.getpid()}\n".encode())
    code = _execute(request["argv"][2:])
    conn.sendall(f"{code}\n".encode())
    os._exit(code)


def _execute(args: list[str]) -> int:
    """``python -m kfp.dsl.executor_main *args`` in this process; the exit code."""
    sys.argv = ["kfp.dsl.executor_main", *args]
    code = 0
    try:
        runpy.run_module("kfp.dsl.executor_main", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what a cold interpreter runs at exit (MLflow, logging)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]), int(sys.argv[2]))
