"""A real PostgreSQL server for the tests: one per session on a free loopback port, in a
temporary directory, stopped at the end (fixture `postgres`); `pg_url` gives each test an
empty database of its own on it.

The server binaries come from Debian's `postgresql` package (`./run.sh install` installs it as
root). PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user
that package makes, or as an `audiosplit` system user made here if that is missing. Tests that
need it skip, saying why, where no binaries are found.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.stack import free_port

SUPERUSER = "audiosplit"  # the database role the tests connect as (trust auth on loopback)


def find_bindir() -> Path | None:
    """Where pg_ctl and initdb are: PATH, else Debian's /usr/lib/postgresql/<major>/bin."""
    for pg_ctl in [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))]:
        if pg_ctl and (Path(pg_ctl).resolve().parent / "initdb").exists():
            return Path(pg_ctl).resolve().parent
    return None


def server_user() -> str | None:
    """None when not root (the server runs as us); else an unprivileged user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "audiosplit"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "audiosplit"],
        check=True,
    )
    return "audiosplit"


class PostgresServer:
    """initdb + pg_ctl on 127.0.0.1:`port`, data and socket under `root`."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str | None):
        self.bindir, self.root, self.port, self.user = bindir, root, port, user
        self.data = root / "data"
        self.log = root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}\n{log}")

    def init(self) -> None:
        if self.user is not None:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "--no-sync")

    def start(self) -> None:
        # durability off: a test database need not survive a power cut, and fsyncs on a busy
        # 2-core machine would dominate every commit
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (no pg_ctl/initdb on PATH or under "
            "/usr/lib/postgresql): `./run.sh install` installs Debian's postgresql as root"
        )
    root = Path(tempfile.mkdtemp(prefix="audiosplit-pg-"))
    server = PostgresServer(bindir, root, free_port(), server_user())
    try:
        server.init()
        server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    yield server
    with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
        server.stop("immediate")
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """An empty database of its own for one test."""
    return postgres.create_database()


def wait_accepting(url: str, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
