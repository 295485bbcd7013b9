"""The gateway's job store: one SQLite file (WAL) under the data dir, so jobs survive restarts."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import NotFound

STATUSES = ("queued", "running", "done", "failed")

SCHEMA = """
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

# Columns added after the first release: (name, definition), added to an older file on open.
ADDED_COLUMNS = (
    ("notes", "TEXT NOT NULL DEFAULT '[]'"),
    ("peak", "REAL"),
    ("ready_s", "REAL NOT NULL DEFAULT 0"),
)

JSON_FIELDS = ("stems", "error", "warnings", "notes", "options")


@dataclass
class JobRecord:
    id: str
    status: str
    created_at: float
    updated_at: float
    progress: float = 0.0
    stage: str = ""
    model: str = ""
    model_reason: str = ""
    stems: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # information, not warnings
    peak: float | None = None  # absolute peak over all stems once done (may exceed 1.0)
    ready_s: float = 0.0  # seconds from the start of the result that are final so far
    options: dict[str, Any] = field(default_factory=dict)
    filename: str = ""
    content_hash: str = ""
    n_frames: int = 0
    duration_s: float = 0.0


class JobStore:
    """Thread-safe: one connection guarded by a lock (every statement is short)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        have = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)")}
        for name, definition in ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, job: JobRecord) -> None:
        row = self._to_row(job)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", list(row.values()))

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return self._from_row(row)

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        changes["updated_at"] = time.time()
        row = self._to_row_partial(changes)
        sets = ", ".join(f"{k} = ?" for k in row)
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*row.values(), job_id])
        if cur.rowcount == 0:
            raise NotFound(f"no job {job_id!r}")
        return self.get(job_id)

    def list(self, limit: int = 100, offset: int = 0, status: str | None = None) -> list[JobRecord]:
        query, args = "SELECT * FROM jobs", []
        if status:
            query, args = query + " WHERE status = ?", [status]
        query += " ORDER BY created_at DESC LIMIT ? OFFSET ?"
        with self._lock:
            rows = self._db.execute(query, [*args, limit, offset]).fetchall()
        return [self._from_row(r) for r in rows]

    def ids_with_status(self, *statuses: str) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY created_at", statuses
            ).fetchall()
        return [r["id"] for r in rows]

    def find_done(self, content_hash: str) -> JobRecord | None:
        """A finished job with the same audio and options, for the result cache."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE content_hash = ? AND status = 'done' "
                "ORDER BY created_at DESC LIMIT 1",
                (content_hash,),
            ).fetchone()
        return self._from_row(row) if row else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) n FROM jobs GROUP BY status")
            found = {r["status"]: r["n"] for r in rows.fetchall()}
        return {s: found.get(s, 0) for s in STATUSES}

    def older_than(self, cutoff: float) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE updated_at < ? AND status IN ('done', 'failed')",
                (cutoff,),
            ).fetchall()
        return [r["id"] for r in rows]

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    @staticmethod
    def _to_row_partial(values: dict[str, Any]) -> dict[str, Any]:
        return {k: json.dumps(v) if k in JSON_FIELDS else v for k, v in values.items()}

    def _to_row(self, job: JobRecord) -> dict[str, Any]:
        return self._to_row_partial(dict(job.__dict__))

    @staticmethod
    def _from_row(row: sqlite3.Row) -> JobRecord:
        values = dict(row)
        for k in JSON_FIELDS:
            values[k] = json.loads(values[k]) if values[k] is not None else None
        return JobRecord(**values)
