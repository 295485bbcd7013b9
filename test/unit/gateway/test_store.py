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
