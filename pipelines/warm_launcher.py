"""The `python` that KFP's SubprocessRunner starts for each task during `twinflow run`.

Stdlib only and run with ``-I -S`` so that it starts in milliseconds. For the
task command ``-m kfp.dsl.executor_main ...`` it hands argv, environment, working
directory and its stdin/stdout/stderr to a warm interpreter (see
:mod:`pipelines.warm`) and exits with the task's exit code; anything else, or a
warm interpreter that is not there, runs the real interpreter instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time

EXECUTOR = ["-m", "kfp.dsl.executor_main"]
SOCKETS_ENV = "TWINFLOW_WARM_SOCKETS"
REAL_PYTHON_ENV = "TWINFLOW_WARM_PYTHON"
STRICT_ENV = "TWINFLOW_WARM_STRICT"  # "1": a zygote that failed to import fails its tasks
WAIT_S = 180.0  # a warm interpreter still importing (TensorFlow, cold disk) is waited for


def main(args: list[str]) -> int:
    """Run the task through a warm interpreter, or fall back to the real one."""
    sockets = json.loads(os.environ.get(SOCKETS_ENV, "{}"))
    path = sockets.get(_kind(args), sockets.get("base")) if args[:2] == EXECUTOR else None
    conn = _connect(path) if path else None
    if conn is None:
        failed = f"{path}.failed"
        if path and os.path.exists(failed):
            if os.environ.get(STRICT_ENV) == "1":
                with open(failed, encoding="utf-8") as why:
                    sys.stderr.write(f"twinflow: warm interpreter failed to preload:\n"
                                     f"{why.read()}")
                return 1
            sys.stderr.write(f"twinflow: warm interpreter failed to preload (see {failed}); "
                             "running this task cold\n")
        real = os.environ[REAL_PYTHON_ENV]
        os.execv(real, [real, *args])
    payload = json.dumps({"argv": args, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    socket.send_fds(conn, [struct.pack("!Q", len(payload))], [0, 1, 2])
    conn.sendall(payload)
    reader = conn.makefile("r", encoding="utf-8")
    pid = int(reader.readline() or 0)
    def forward(signum: int, _frame: object) -> None:
        if pid:
            os.killpg(pid, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    line = reader.readline()
    if not line:  # the task died without reporting (killed): no exit code to pass on
        sys.stderr.write(f"twinflow: warm task process {pid} ended without an exit code\n")
        return 1
    return int(line)


LIGHT_TASKS = ("start_run", "finish_run")


def _kind(args: list[str]) -> str:
    """The warm interpreter a task needs: `light` for the run's bookkeeping tasks, else
    its `framework` parameter, if it has one."""
    try:
        if args[args.index("--function_to_execute") + 1] in LIGHT_TASKS:
            return "light"
    except (ValueError, IndexError):
        pass
    try:
        executor_input = json.loads(args[args.index("--executor_input") + 1])
        framework = executor_input["inputs"]["parameterValues"].get("framework", "")
    except (ValueError, IndexError, KeyError, TypeError):
        return "base"
    # Any framework has a zygote of its own (unknown kinds fall back to `base` in main).
    return str(framework) or "base"


def _connect(path: str) -> socket.socket | None:
    """Connect once the warm interpreter listens; None if it failed or never came up."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if os.path.exists(path + ".failed"):
            return None
        try:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            time.sleep(0.02)
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
