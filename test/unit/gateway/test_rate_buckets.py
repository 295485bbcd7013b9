"""The rate limit's token buckets in the job store, on both engines (SQLite and a real
PostgreSQL): shared by every store on one database, never giving out the last token twice."""

import threading

import pytest
import sqlalchemy as sa

from gateway.store import JobStore, rate_buckets


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return request.getfixturevalue("pg_url")


def test_a_bucket_gives_per_minute_tokens_then_says_how_long_to_wait(url):
    store = JobStore(url)
    assert [store.take_token("1.2.3.4", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = store.take_token("1.2.3.4", 3)
    assert 0.0 < wait <= 20.0  # one token every 20 s at 3 a minute
    assert store.take_token("5.6.7.8", 3) == 0.0  # another client has its own bucket


def test_two_stores_on_one_database_share_the_bucket(url):
    a, b = JobStore(url), JobStore(url)
    assert a.take_token("c", 2) == 0.0
    assert b.take_token("c", 2) == 0.0
    assert a.take_token("c", 2) > 0.0 and b.take_token("c", 2) > 0.0


def test_concurrent_takers_never_take_more_than_the_bucket_holds(url):
    stores = [JobStore(url) for _ in range(4)]
    taken, lock = [], threading.Lock()
    start = threading.Barrier(len(stores) * 5)

    def take(store: JobStore) -> None:
        start.wait()
        got = store.take_token("burst", 10)
        with lock:
            taken.append(got == 0.0)

    threads = [threading.Thread(target=take, args=(s,)) for s in stores for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 10 and len(taken) == 20


def test_the_bucket_refills_by_the_database_clock(url):
    store = JobStore(url)
    assert store.take_token("c", 1) == 0.0
    assert store.take_token("c", 1) > 0.0
    # as if the last take were 61 s ago: full again, and forgotten as full by the sweeper
    with store.engine.begin() as c:
        c.execute(rate_buckets.update().values(at=rate_buckets.c.at - 61.0))
    assert store.forget_full_buckets() == 1
    assert store.take_token("c", 1) == 0.0
    with store.engine.begin() as c:
        c.execute(rate_buckets.update().values(at=rate_buckets.c.at - 30.0))
    assert store.forget_full_buckets() == 0  # half full: kept
    assert store.take_token("c", 1) > 0.0  # half a token is not one
    count = sa.select(sa.func.count()).select_from(rate_buckets)
    with store.engine.connect() as c:
        assert c.execute(count).scalar() == 1
