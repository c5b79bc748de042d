"""Local processes: who owns a piece of work, and nothing left behind.

**Owners.** A process killed with SIGKILL cannot mark its work as ended, so what it owned records
the owner instead: the host, the pid and the process's start time (which tells a
reused pid apart). A later process on the same host that finds the owner gone ends
the work for it (a trial FAILED, a run FAILED). An owner on another host, or none
recorded, is never judged: only heartbeats can tell (Optuna's RDB storage does).

**No orphans.** A process twinflow starts dies with its parent: the kernel sends it a
signal when the parent dies (Linux ``PR_SET_PDEATHSIG``), even when the parent was
SIGKILLed and ran no cleanup, and :func:`stop_descendants` stops every process below
this one on an interrupt. (The kernel watches the *thread* that forked the child: start
children from the main thread.)
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psutil

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
# Resolved once, before any fork: a pre-exec hook should do nothing but the call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
STOP_GRACE_SECONDS = 10.0


def owner(pid: int | None = None) -> str:
    """``host:pid:start:boot:pid namespace`` of process ``pid`` (default: this one).

    The start is the kernel's start tick of the process (``/proc/PID/stat``), not a wall
    clock time: psutil's ``create_time`` moves when the clock is stepped (NTP at boot, a
    resumed VM), which would make a live owner look gone. The boot id and the pid
    namespace say whether a later process can judge the pid at all (another container
    with the same host name, a reboot)."""
    pid = pid or os.getpid()
    try:
        return ":".join((socket.gethostname(), str(pid), _start_ticks(pid), *_machine()))
    except OSError:  # no /proc (not Linux): no owner, so never judged gone
        return ""


def gone(recorded: str) -> bool:
    """The recorded owner ran in this boot of this machine, in this pid namespace, and
    that process no longer exists. Anything else (another host or container, an older
    format, a process this user may not inspect) is never judged gone."""
    parts = recorded.split(":")
    if len(parts) != 5 or not parts[1].isdigit():
        return False
    host, pid, started, *machine = parts
    if host != socket.gethostname() or tuple(machine) != _machine():
        return False
    try:
        return _start_ticks(int(pid)) != started
    except FileNotFoundError:
        return True
    except OSError:  # e.g. /proc mounted with hidepid: cannot tell
        return False


def _start_ticks(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; field 22 is 20th after it.
        return stat.read().rsplit(")", 1)[1].split()[19]


def _machine() -> tuple[str, str]:
    """This boot of this kernel, and this process's pid namespace."""
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
        boot_id = boot.read().strip()[:8]
    namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:[").rstrip("]")
    return boot_id, namespace


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the work (a KeyboardInterrupt, so that what handles
    Ctrl-C handles SIGTERM the same way)."""

    def __init__(self, signal_name: str, run_key: str = "") -> None:
        super().__init__(signal_name)
        self.signal_name, self.run_key = signal_name, run_key

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130, 143)."""
        return 128 + int(signal.Signals[self.signal_name])


@contextlib.contextmanager
def interrupts(*signals: signal.Signals,
               first: Callable[[], object] | None = None) -> Iterator[None]:
    """Each of ``signals`` (default SIGTERM: what `timeout`, CI, `docker stop` and
    Kubernetes send) raises :class:`Interrupted` in the main thread, as Ctrl-C raises
    KeyboardInterrupt, instead of ending the process with no cleanup; ``first`` runs
    before it is raised. Only the first signal counts: a second one (e.g. forwarded by
    a launcher and sent by the kernel as the parent dies) must not cut short the
    cleanup the first started. Outside the main thread, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired, parent = False, os.getppid()

    def interrupt(signum: int, _frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            if os.getppid() != parent:
                _detach_output()  # the parent-death signal: the pipes it read are gone
            if first is not None:
                first()
            raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in signals or (signal.SIGTERM,)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _detach_output() -> None:
    """Point stdout and stderr at /dev/null: a write to the pipe of a dead parent raises
    BrokenPipeError, which would fail a step that is being stopped."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux; a no-op
    elsewhere). Exits at once if the parent (pid ``parent``) is already gone."""
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, int(sig))
    if parent is not None and os.getppid() != parent:
        os._exit(128 + int(sig))  # the parent died before the call


def orphaned(owner_id: str) -> bool:
    """The `twinflow run` process ``owner_id`` (:func:`owner`) that this task belongs to
    has died. The kernel closes a dead process's pipes before anything else, so a task
    that writes all the time meets a BrokenPipeError before any signal: that too means
    'stopped', not 'failed'. Output is pointed at /dev/null once this is seen, so the
    cleanup's own lines cannot fail."""
    if not owner_id or not gone(owner_id):
        return False
    _detach_output()
    return True


def watch_owner(owner_id: str, sig: int = signal.SIGTERM, every: float = 1.0) -> None:
    """Send ``sig`` to this process once ``owner_id`` is gone (a daemon thread).

    A parent-death signal only follows the direct parent, and KFP starts a cold task
    through ``sh -c``, which outlives a killed `twinflow run`; the owner's pid is what
    the task really depends on."""
    if not owner_id:
        return

    def watch() -> None:
        while not gone(owner_id):
            time.sleep(every)
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="twinflow-owner-watch", daemon=True).start()


def kill_with_parent() -> None:
    """A ``preexec_fn`` for subprocess.Popen: SIGKILL the child when its parent dies (a
    training worker whose supervisor is gone has no one to stop it otherwise)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def stop_descendants(grace: float = STOP_GRACE_SECONDS) -> int:
    """Stop every process below this one; how many there were.

    Top down: SIGTERM to the direct children first, so that each passes it on in its
    own way (a task stops its training workers and marks its run KILLED) rather than
    seeing its workers die first and reporting a failure; then SIGTERM to what is left
    after ``grace`` seconds, and SIGKILL after as long again.
    """
    me = psutil.Process()
    below = me.children(recursive=True)
    alive = me.children()
    for signal_all in (_terminate, _terminate, _kill):
        signal_all(alive)
        _, alive = psutil.wait_procs(below, timeout=grace)
        if not alive:
            break
    if alive:
        log.warning("%d processes outlived SIGKILL", len(alive))
    return len(below)


def _terminate(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
