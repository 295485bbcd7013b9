"""A real PostgreSQL server for the tests: one per session on a free loopback port, in a
temporary directory, stopped at the end (fixture `postgres`); `pg_url` gives each test an
empty database of its own on it.

The server is `common.pglocal`'s (Debian's binaries, run as an unprivileged user as root; what
`./run.sh up --scaled` starts too). Tests that need it skip, saying why, where no binaries are
found.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.pglocal import (  # noqa: F401 - the tests' names for these
    SUPERUSER,
    PostgresMissing,
    PostgresServer,
    find_bindir,
    require_bindir,
    server_user,
    wait_accepting,
)
from common.ports import free_port


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        bindir = require_bindir()
    except PostgresMissing as e:
        pytest.skip(str(e))
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
