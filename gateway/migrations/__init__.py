"""Alembic migrations of the job store, run by `JobStore` when it opens (`upgrade`).

Revisions live in `versions/`; each is written by hand against plain SQLAlchemy types so it
runs the same on SQLite and PostgreSQL. Gateways that start together take turns: a PostgreSQL
advisory lock on PostgreSQL, a file lock beside the SQLite file.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent
ADVISORY_LOCK_KEY = 0x617564696F  # "audio": any constant shared by every gateway


def alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (idempotent: nothing to do when it is there)."""
    if engine.dialect.name == "sqlite":
        with _sqlite_file_lock(engine), engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
        return
    with engine.begin() as connection:
        # held to the end of this transaction: a second gateway waits, then finds it done
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )
        command.upgrade(alembic_config(connection), revision)
