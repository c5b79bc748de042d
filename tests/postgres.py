"""A real PostgreSQL server for the shared-store tests: Debian's ``postgresql``
binaries, a throw-away cluster in a temporary directory, listening on 127.0.0.1 only,
stopped at the end of the session. Skips (saying why) where the binaries are missing.

As root (CI) the server runs as the ``postgres`` system user: PostgreSQL refuses to
run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """``postgresql://twinflow@127.0.0.1:PORT/twinflow`` of a throw-away server, stopped
    and deleted on exit (bench/ uses it too); RuntimeError without the binaries."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; "
                           "setup.sh does it as root)")
    # Not under pytest's tmp_path: its folders are private to root, and the server's
    # user must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="twinflow-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run(_as_server_user(list(cmd)), check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "twinflow", "--auth=trust",
        "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
        "-o", f"-h 127.0.0.1 -p {port} -k {sock} -F", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "twinflow",
            "twinflow")
        yield f"postgresql://twinflow@127.0.0.1:{port}/twinflow"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url``; its URL."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A server this session started (see :func:`running_postgres`); skips without one."""
    if _bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; setup.sh does "
                    "it as root)")
    with running_postgres() as url:
        yield url
