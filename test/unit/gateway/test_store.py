"""The job store on both engines: SQLite (a file) and a real PostgreSQL (test/postgres.py)."""

import threading
import time

import pytest

from common.errors import NotFound
from gateway.store import JobRecord, JobStore


def record(job_id, status="queued", **kw):
    now = kw.pop("at", time.time())
    return JobRecord(id=job_id, status=status, created_at=now, updated_at=now, **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A fresh, empty database of each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_jobs_survive_reopening_the_store(url):
    store = JobStore(url)
    store.insert(record("a", stems=["vocals", "no_vocals"], options={"resolved": {"model": "dsp"}}))
    store.update("a", status="running", progress=0.5, warnings=["w"], ready_s=7.5)
    store.close()
    again = JobStore(url)
    job = again.get("a")
    assert (job.status, job.progress, job.stems, job.warnings, job.ready_s) == (
        "running",
        0.5,
        ["vocals", "no_vocals"],
        ["w"],
        7.5,
    )
    assert job.options == {"resolved": {"model": "dsp"}} and job.error is None
    assert again.ids_with_status("running", "queued") == ["a"]


def test_counts_list_delete_and_cache_lookup(url):
    store = JobStore(url)
    store.insert(record("a", content_hash="h1", at=1.0))
    store.insert(record("b", status="done", content_hash="h1", at=2.0))
    store.insert(record("c", status="failed", error={"code": "x", "message": "y"}, at=3.0))
    assert store.counts() == {"queued": 1, "running": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert [j.id for j in store.list()] == ["c", "b", "a"]  # newest first
    assert [j.id for j in store.list(limit=1, offset=1)] == ["b"]
    assert [j.id for j in store.list(status="failed")] == ["c"]
    assert store.get("c").error == {"code": "x", "message": "y"}
    assert store.find_done("h1").id == "b" and store.find_done("h2") is None
    assert store.older_than(2.5) == ["b"]  # finished and older: a queued job never is
    store.delete("b")
    store.delete("b")  # a second sweeper deleting it again is harmless
    with pytest.raises(NotFound):
        store.get("b")
    with pytest.raises(NotFound):
        store.update("b", status="done")


def test_update_returns_the_row_and_refuses_unknown_fields(url):
    store = JobStore(url)
    store.insert(record("a", at=1.0))
    job = store.update("a", stage="separating", progress=0.25)
    assert (job.stage, job.progress) == ("separating", 0.25) and job.updated_at > 1.0
    assert store.update("a", updated_at=5.0).updated_at == 5.0  # explicit wins (the sweeper's)
    with pytest.raises(TypeError, match="lease_owner"):
        store.update("a", lease_owner="me")  # leases change only through claim/renew/release
    with pytest.raises(TypeError, match="id"):
        store.update("a", id="b")


def test_claim_renew_release(url):
    store = JobStore(url)
    store.insert(record("old", at=1.0))
    store.insert(record("new", at=2.0))
    store.insert(record("done", status="done", at=0.5))
    assert store.claim("A/1", 30) == ("old", "queued")  # the oldest runnable job
    assert store.claim("B/1", 30) == ("new", "queued")
    assert store.claim("B/1", 30) is None  # nothing runnable left with a free lease
    assert store.claim("B/1", 30, "old") is None  # held by A
    owner, left = store.lease("old")
    assert owner == "A/1" and 29 < left <= 30
    assert store.renew("old", "A/1", 60) and 59 < store.lease("old")[1] <= 60
    assert not store.renew("old", "B/1", 60)  # only the holder renews
    store.release("old", "B/1")  # nor releases
    assert store.lease("old")[0] == "A/1"
    store.release("old", "A/1")
    assert store.lease("old") == (None, None)
    assert store.claim("B/1", 30, "old") == ("old", "queued")


def test_an_expired_lease_is_taken_over_and_the_old_holder_loses_it(url):
    store = JobStore(url)
    store.insert(record("a"))
    store.update("a", status="running")
    assert store.claim("A/1", 0.3) == ("a", "running")
    assert store.claim("B/1", 30) is None
    time.sleep(0.5)  # A died: nobody renewed
    assert store.claim("B/1", 30) == ("a", "running")
    assert not store.renew("a", "A/1", 30)  # A, back from a pause, must stop
    assert store.renew("a", "B/1", 30)


def test_an_expired_lease_nobody_took_is_still_renewable(url):
    """A short outage of the database costs the holder nothing if nobody took the job."""
    store = JobStore(url)
    store.insert(record("a"))
    assert store.claim("A/1", 0.2)
    time.sleep(0.4)
    assert store.renew("a", "A/1", 30) and store.lease("a")[0] == "A/1"


def test_a_restarted_gateway_frees_its_earlier_leases_only(url):
    store = JobStore(url)
    for job_id in ("a", "b", "c"):
        store.insert(record(job_id))
    store.claim("host:8000/aaaa", 30, "a")
    store.claim("host:8000/bbbb", 30, "b")
    store.claim("host:80001/cccc", 30, "c")  # another gateway whose id starts the same
    assert store.release_owned_by("host:8000/") == 2
    assert [store.lease(j)[0] for j in ("a", "b", "c")] == [None, None, "host:80001/cccc"]
    assert store.release_owned_by("100%_/") == 0  # LIKE wildcards in an id match literally


def test_claimers_on_two_connections_never_share_a_job(url):
    """Two gateways (two stores, each its own pool) with four threads each race for 40 jobs:
    every job is claimed exactly once."""
    first, second = JobStore(url), JobStore(url)
    for i in range(40):
        first.insert(record(f"j{i:02d}", at=float(i)))
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def claimer(store: JobStore, owner: str) -> None:
        start.wait()
        misses = 0
        while misses < 3:
            claimed = store.claim(owner, 60)
            if claimed is None:
                misses += 1
                continue
            with lock:
                claims.append((claimed[0], owner))

    threads = [
        threading.Thread(target=claimer, args=(store, f"{name}/{k}"))
        for name, store in (("A", first), ("B", second))
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    ids = [job_id for job_id, _ in claims]
    assert sorted(ids) == [f"j{i:02d}" for i in range(40)], "a job claimed twice or never"
    for job_id, owner in claims:
        assert first.lease(job_id)[0] == owner
    assert len({owner for _, owner in claims}) > 1  # the race really was a race


def test_two_stores_opening_a_new_database_at_once_both_work(url):
    """Two gateways starting together both run the migrations: they take turns."""
    stores: list[JobStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            stores.append(JobStore(url))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(stores) == 2
    stores[0].insert(record("a"))
    assert stores[1].get("a").status == "queued"
