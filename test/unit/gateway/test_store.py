import time

import pytest

from common.errors import NotFound
from gateway.store import JobRecord, JobStore


def record(job_id, status="queued", **kw):
    now = time.time()
    return JobRecord(id=job_id, status=status, created_at=now, updated_at=now, **kw)


def test_jobs_survive_reopening_the_file(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.insert(record("a", stems=["vocals", "no_vocals"], options={"resolved": {"model": "dsp"}}))
    store.update("a", status="running", progress=0.5, warnings=["w"])
    store.close()
    again = JobStore(path)
    job = again.get("a")
    assert (job.status, job.progress, job.stems, job.warnings) == (
        "running",
        0.5,
        ["vocals", "no_vocals"],
        ["w"],
    )
    assert job.options == {"resolved": {"model": "dsp"}}
    assert again.ids_with_status("running", "queued") == ["a"]


def test_counts_list_delete_and_cache_lookup(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.insert(record("a", content_hash="h1"))
    store.insert(record("b", status="done", content_hash="h1"))
    store.insert(record("c", status="failed", error={"code": "x", "message": "y"}))
    assert store.counts() == {"queued": 1, "running": 0, "done": 1, "failed": 1}
    assert [j.id for j in store.list(status="failed")] == ["c"]
    assert store.find_done("h1").id == "b" and store.find_done("h2") is None
    store.delete("b")
    with pytest.raises(NotFound):
        store.get("b")
    with pytest.raises(NotFound):
        store.update("b", status="done")


def test_a_file_from_before_notes_and_peak_gains_the_columns(tmp_path):
    import sqlite3

    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, progress REAL NOT NULL "
        "DEFAULT 0, stage TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', model_reason "
        "TEXT NOT NULL DEFAULT '', stems TEXT NOT NULL DEFAULT '[]', error TEXT, warnings TEXT "
        "NOT NULL DEFAULT '[]', options TEXT NOT NULL DEFAULT '{}', filename TEXT NOT NULL "
        "DEFAULT '', content_hash TEXT NOT NULL DEFAULT '', n_frames INTEGER NOT NULL DEFAULT 0, "
        "duration_s REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    old.execute(
        "INSERT INTO jobs (id, status, created_at, updated_at) VALUES ('old', 'done', 1, 1)"
    )
    old.commit()
    old.close()
    store = JobStore(path)
    job = store.get("old")
    assert (job.notes, job.peak) == ([], None)
    store.update("old", notes=["reused"], peak=3.7)
    assert (store.get("old").notes, store.get("old").peak) == (["reused"], 3.7)
