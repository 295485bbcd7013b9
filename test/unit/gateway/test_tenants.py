"""Tenants, the quota, idempotency claims and fair claiming, on both engines."""

from __future__ import annotations

import time

import pytest

from common.errors import Conflict, InvalidOption, NotFound
from gateway.access import QuotaExceeded, check_quota
from gateway.idempotency import claim, release, request_hash, settle
from gateway.store import JobRecord, JobStore
from gateway.tenants import (
    NameTaken,
    create_tenant,
    list_tenants,
    record_usage,
    revoke_tenant,
    tenant_for_key,
    usage,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = JobStore(url)
    yield store
    store.close()


def test_a_key_is_kept_as_its_hash_and_revoked_for_good(store):
    tenant, key = create_tenant(store, "alice", webhook_secret="whsec_x")
    with store.engine.connect() as c:
        stored = c.exec_driver_sql("SELECT key_hash, key_prefix FROM tenants").all()
    assert key not in str(stored) and stored[0][1] == key[:10]
    assert tenant_for_key(store, key) == tenant
    assert tenant_for_key(store, key + "x") is None
    with pytest.raises(NameTaken):
        create_tenant(store, "alice", webhook_secret="whsec_y")
    revoke_tenant(store, "alice")
    assert tenant_for_key(store, key) is None
    assert list_tenants(store) == [] and len(list_tenants(store, revoked=True)) == 1
    with pytest.raises(NotFound):
        revoke_tenant(store, "alice")


def test_the_quota_says_when_room_for_this_song_frees_up(store):
    tenant, _ = create_tenant(store, "bob", minutes_per_day=10, webhook_secret="whsec_x")
    record_usage(store, tenant.id, "j1", 240.0)  # 4 min, the oldest
    record_usage(store, tenant.id, "j2", 300.0)  # 5 min
    with store.engine.begin() as c:  # the first went in 20 h ago
        c.execute(usage.update().where(usage.c.job_id == "j1").values(at=usage.c.at - 72000))
    check_quota(store, tenant, 60.0)  # 9 + 1 fits
    with pytest.raises(QuotaExceeded) as refused:
        check_quota(store, tenant, 180.0)  # 9 + 3 > 10: room once j1 (4 min) leaves, in ~4 h
    assert "9.0 min used" in refused.value.message and "3.0 min" in refused.value.message
    retry = int(refused.value.headers["Retry-After"])
    assert 4 * 3600 - 60 <= retry <= 4 * 3600 + 5
    assert "frees up in 4 h 0 min" in refused.value.message or "3 h 59 min" in refused.value.message
    with pytest.raises(InvalidOption):
        check_quota(store, tenant, 660.0)  # longer than the whole day's quota


def test_an_idempotency_key_is_claimed_once_and_freed_by_a_failure(store):
    asked = request_hash("sha-of-audio", {"model": "dsp"})
    assert claim(store, "t1", "k", asked, 3600) is None  # ours to work on
    with pytest.raises(Conflict):
        claim(store, "t1", "k", asked, 3600)  # still being worked on
    release(store, "t1", "k")
    assert claim(store, "t1", "k", asked, 3600) is None  # the retry may go on
    settle(store, "t1", "k", "job1")
    assert claim(store, "t1", "k", asked, 3600) == "job1"
    with pytest.raises(InvalidOption):
        claim(store, "t1", "k", request_hash("other audio", {"model": "dsp"}), 3600)
    assert claim(store, "t2", "k", asked, 3600) is None  # another tenant's key is its own
    time.sleep(0.01)
    assert claim(store, "t1", "k", asked, 0.001) is None  # expired: free again


def job(job_id: str, tenant: str, rank: int, at: float) -> JobRecord:
    return JobRecord(job_id, "queued", at, at, tenant=tenant, rank=rank)


def test_claims_go_round_robin_between_tenants_within_their_limits(store):
    busy, _ = create_tenant(store, "busy", concurrent=1, webhook_secret="whsec_x")
    for k in range(4):
        store.insert(job(f"busy{k}", busy.id, k, 1.0 + k))
    store.insert(job("other0", "other-tenant", 0, 10.0))
    first = store.claim("w1", 60)
    assert first == ("busy0", "queued")
    # busy is at its limit of 1: the other tenant's job, though newer, is next
    assert store.claim("w2", 60) == ("other0", "queued")
    assert store.claim("w3", 60) is None  # busy's next waits for its running job
    store.update("busy0", status="done")
    store.release("busy0", "w1")
    assert store.claim("w1", 60) == ("busy1", "queued")
