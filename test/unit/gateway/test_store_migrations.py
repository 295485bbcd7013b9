"""Upgrades keep old jobs: a SQLite file written by the store before migrations existed is
adopted in place; and a PostgreSQL restart costs a store call a wait, not an error."""

import json
import sqlite3
import threading
import time

import pytest
import sqlalchemy as sa

from gateway.store import JobRecord, JobStore, StoreUnavailable

# The pre-migration store's schema, exactly as gateway/store.py had it (commit 698e1eb):
# created with IF NOT EXISTS, then ADDED_COLUMNS added to an older file on open.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    model_reason TEXT NOT NULL DEFAULT '',
    stems TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    warnings TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    peak REAL,
    ready_s REAL NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}',
    filename TEXT NOT NULL DEFAULT '',
    content_hash TEXT NOT NULL DEFAULT '',
    n_frames INTEGER NOT NULL DEFAULT 0,
    duration_s REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_hash ON jobs(content_hash);
"""
OLD_ADDED_COLUMNS = (
    ("notes", "TEXT NOT NULL DEFAULT '[]'"),
    ("peak", "REAL"),
    ("ready_s", "REAL NOT NULL DEFAULT 0"),
)
# the first release's table: before notes, peak and ready_s
FIRST_SCHEMA = "\n".join(
    line for line in OLD_SCHEMA.splitlines() if not line.strip().startswith(("notes", "peak"))
).replace("    ready_s REAL NOT NULL DEFAULT 0,\n", "")


def old_row(job_id: str, status: str, **values) -> dict:
    return {"id": job_id, "status": status, "created_at": 1.0, "updated_at": 2.0, **values}


def record(job_id: str) -> JobRecord:
    now = time.time()
    return JobRecord(id=job_id, status="queued", created_at=now, updated_at=now)


def write_old_file(path, schema: str, rows: list[dict]) -> None:
    """What the pre-migration store left: its schema, its JSON-as-text columns, WAL mode."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    for row in rows:
        cols = ", ".join(row)
        db.execute(
            f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(row))})", [*row.values()]
        )
    db.close()


def test_a_file_of_the_pre_migration_store_is_adopted_with_its_rows(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    write_old_file(
        path,
        OLD_SCHEMA,
        [
            old_row(
                "done1",
                "done",
                progress=1.0,
                stage="done",
                model="htdemucs",
                stems=json.dumps(["vocals", "drums", "bass", "other"]),
                warnings=json.dumps(["clipped"]),
                notes=json.dumps(["reused"]),
                peak=1.25,
                ready_s=30.5,
                options=json.dumps({"resolved": {"model": "htdemucs"}}),
                content_hash="abc",
                n_frames=1345050,
                duration_s=30.5,
            ),
            old_row("fail1", "failed", error=json.dumps({"code": "x", "message": "m"})),
            old_row("run1", "running", progress=0.4),
        ],
    )
    store = JobStore(path)
    done = store.get("done1")
    assert (done.status, done.model, done.stems, done.warnings, done.notes) == (
        "done",
        "htdemucs",
        ["vocals", "drums", "bass", "other"],
        ["clipped"],
        ["reused"],
    )
    assert (done.peak, done.ready_s, done.n_frames, done.options) == (
        1.25,
        30.5,
        1345050,
        {"resolved": {"model": "htdemucs"}},
    )
    assert store.get("fail1").error == {"code": "x", "message": "m"}
    assert store.find_done("abc").id == "done1"
    # the interrupted job is runnable again: its (absent) lease counts as expired
    assert store.claim("gw/1", 30) == ("run1", "running")
    store.close()
    version = sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall()
    assert version == [("0004",)]
    JobStore(path).get("done1")  # opening again: nothing left to migrate


def test_a_first_release_file_gains_the_later_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    assert "notes" not in FIRST_SCHEMA and "ready_s" not in FIRST_SCHEMA
    write_old_file(path, FIRST_SCHEMA, [old_row("old", "done")])
    store = JobStore(path)
    job = store.get("old")
    assert (job.notes, job.peak, job.ready_s) == ([], None, 0.0)
    store.update("old", notes=["reused"], peak=3.7)
    assert (store.get("old").notes, store.get("old").peak) == (["reused"], 3.7)


def test_the_same_schema_on_both_engines(tmp_path, pg_url):
    def columns(url: str) -> dict[str, bool]:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        JobStore(url).close()
        found = {c["name"]: c["nullable"] for c in sa.inspect(engine).get_columns("jobs")}
        engine.dispose()
        return found

    sqlite = columns(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    assert sqlite == columns(pg_url)
    assert {"lease_owner", "lease_until", "ready_s"} <= set(sqlite)


def test_a_store_call_while_postgresql_restarts_waits_for_it(postgres, pg_url):
    store = JobStore(pg_url, retry_s=60)
    store.insert(record("a"))
    assert store.get("a").status == "queued"
    postgres.stop("fast")  # every pooled connection is now dead
    restarted = threading.Timer(1.5, postgres.start)
    restarted.start()
    try:
        begun = time.monotonic()
        job = store.update("a", progress=0.5)  # retried until the server is back
        waited = time.monotonic() - begun
    finally:
        restarted.join()
    assert job.progress == 0.5 and waited >= 1.0
    assert store.get("a").progress == 0.5 and store.claim("gw/1", 30) == ("a", "queued")
    postgres.stop("fast")  # and a read (a status poll) waits the same way
    restarted = threading.Timer(1.5, postgres.start)
    restarted.start()
    try:
        assert store.get("a").progress == 0.5
    finally:
        restarted.join()


def test_a_database_that_stays_away_fails_the_call_after_the_bound(postgres, pg_url):
    store = JobStore(pg_url, retry_s=1.0)
    store.insert(record("a"))
    postgres.stop("fast")
    try:
        begun = time.monotonic()
        with pytest.raises(StoreUnavailable, match="did not answer for 1 s"):
            store.get("a")
        assert time.monotonic() - begun < 10
    finally:
        postgres.start()
    assert store.get("a").id == "a"  # and it works again without reopening


def test_migration_0004_gives_earlier_jobs_the_open_tenant_and_goes_back(tmp_path):
    """A store at 0003 (before tenants) keeps its jobs: they become the open mode's ('')."""
    from alembic import command

    from gateway.migrations import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    engine = sa.create_engine(url)
    upgrade(engine, "0003")
    with engine.begin() as c:
        c.execute(
            sa.text(
                "INSERT INTO jobs (id, status, progress, stage, model, model_reason, stems, "
                "warnings, notes, ready_s, options, filename, content_hash, n_frames, "
                "duration_s, created_at, updated_at) VALUES ('old1', 'done', 1, 'done', 'dsp', "
                "'', '[]', '[]', '[]', 0, '{}', 'a.wav', 'h', 10, 1.0, 1.0, 2.0)"
            )
        )
    engine.dispose()
    store = JobStore(url)
    job = store.get("old1")
    assert job.tenant == "" and job.callback_url is None and job.status == "done"
    store.close()
    with engine.begin() as c:
        command.downgrade(alembic_config(c), "0003")
        assert "tenant" not in {col["name"] for col in sa.inspect(c).get_columns("jobs")}
        assert c.execute(sa.text("SELECT id FROM jobs")).scalars().all() == ["old1"]
