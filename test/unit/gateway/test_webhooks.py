"""The webhook outbox's parts without HTTP: signatures (checked with the spec's own library),
events written in the caller's transaction, the retry schedule, claims and their leases, the
retry window; on SQLite and on a real PostgreSQL."""

import base64
import json
import time

import pytest
import sqlalchemy as sa
import standardwebhooks

from gateway.store import JobStore
from gateway.webhooks import (
    MAX_BACKOFF_S,
    InvalidSecret,
    claim_due,
    enqueue,
    mark_delivered,
    mark_failed,
    new_secret,
    release,
    retry_delay,
    sign,
    signed_headers,
    webhook_events,
    webhook_state,
    webhook_states,
)

JOB = {"id": "j1", "status": "done", "stems": ["vocals", "no_vocals"]}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = JobStore(url)
    yield store
    store.close()


def add(store: JobStore, job_id: str = "j1", status: str = "done", url: str = "http://r/") -> str:
    with store.engine.begin() as c:
        return enqueue(c, job_id=job_id, tenant="t1", url=url, status=status, job_json=JOB)


def row(store: JobStore, event_id: str) -> sa.Row:
    with store.engine.connect() as c:
        return c.execute(sa.select(webhook_events).where(webhook_events.c.id == event_id)).one()


def backdate(store: JobStore, event_id: str, **seconds_ago: float) -> None:
    """Move an event's times into the past (the database clock's past)."""
    values = {k: webhook_events.c[k] - s for k, s in seconds_ago.items()}
    with store.engine.begin() as c:
        c.execute(webhook_events.update().where(webhook_events.c.id == event_id).values(values))


# --- signatures --------------------------------------------------------------------------------


def test_a_signature_verifies_with_the_standard_webhooks_library():
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    body = json.dumps({"type": "job.done", "data": {"title": "Café"}}, ensure_ascii=False).encode()
    headers = signed_headers(secret, "msg_abc", int(time.time()), body)
    assert standardwebhooks.Webhook(secret).verify(body, headers)["data"]["title"] == "Café"
    # the same id and body at another time: another signature, as each attempt has
    assert sign(secret, "msg_abc", 1, body) != sign(secret, "msg_abc", 2, body)


@pytest.mark.parametrize(
    "tamper", ["body", "id", "timestamp", "secret"], ids=lambda t: f"other {t}"
)
def test_a_signature_fails_for_anything_else(tamper):
    secret, now = new_secret(), int(time.time())
    headers = signed_headers(secret, "msg_abc", now, b'{"a":1}')
    body, verifier = b'{"a":1}', standardwebhooks.Webhook(secret)
    if tamper == "body":
        body = b'{"a":2}'
    elif tamper == "id":
        headers["webhook-id"] = "msg_abd"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(now - 1)
    else:
        verifier = standardwebhooks.Webhook(new_secret())
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        verifier.verify(body, headers)


def test_an_unpadded_secret_signs_as_the_library_reads_it():
    secret = "whsec_" + base64.b64encode(b"0123456789abcdefghijk").decode().rstrip("=")
    headers = signed_headers(secret, "msg_1", int(time.time()), b"{}")
    standardwebhooks.Webhook(secret).verify(b"{}", headers)


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_"])
def test_a_bad_secret_is_our_error(secret):
    with pytest.raises(InvalidSecret):
        sign(secret, "msg_1", 1, b"{}")


# --- the retry schedule ------------------------------------------------------------------------


def test_backoff_doubles_from_the_first_wait_up_to_an_hour():
    assert [retry_delay(n, 5.0) for n in range(1, 8)] == [5, 10, 20, 40, 80, 160, 320]
    assert retry_delay(11, 5.0) == MAX_BACKOFF_S == retry_delay(10_000, 5.0)
    # 24 h at the default settings is ~35 attempts: ~10 in the first hour, then hourly
    assert sum(retry_delay(n, 5.0) for n in range(1, 11)) < 3 * 3600


# --- events in the store -----------------------------------------------------------------------


def test_an_event_is_written_in_the_callers_transaction(store):
    with pytest.raises(RuntimeError), store.engine.begin() as c:
        enqueue(c, job_id="j0", tenant="t1", url="http://r/", status="done", job_json=JOB)
        raise RuntimeError("the job's final write failed")
    assert webhook_state(store, "j0") is None  # rolled back with it
    event_id = add(store)
    assert event_id.startswith("msg_")
    assert webhook_state(store, "j1") == {
        "url": "http://r/",
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "id": event_id,
    }
    stored = row(store, event_id)
    body = json.loads(stored.payload)
    assert body["type"] == stored.event_type == "job.done" and body["data"] == JOB
    assert body["timestamp"].endswith("Z") and stored.lease_until is None
    assert abs(stored.created_at - time.time()) < 5 and stored.next_at == pytest.approx(
        stored.created_at, abs=0.01
    )


def test_only_ended_jobs_have_events(store):
    with pytest.raises(ValueError, match="running"), store.engine.begin() as c:
        enqueue(c, job_id="j", tenant="", url="http://r/", status="running", job_json={})


def test_states_give_each_jobs_latest_event(store):
    add(store, "a", "failed")
    newest = add(store, "a", "done", url="http://r/2")
    add(store, "b", "cancelled")
    states = webhook_states(store, ["a", "b", "none"])
    assert set(states) == {"a", "b"}
    assert states["a"]["id"] == newest and states["a"]["url"] == "http://r/2"
    assert webhook_states(store, []) == {}


def test_a_claim_leases_the_attempt_to_one_sender(store):
    event_id = add(store)
    (claim,) = claim_due(store, 8, lease_s=30)
    assert (claim.id, claim.job_id, claim.attempts) == (event_id, "j1", 0)
    assert claim.payload == row(store, event_id).payload
    assert claim_due(store, 8, lease_s=30) == []  # leased: nobody else sends it meanwhile
    release(store, claim)
    assert [c.id for c in claim_due(store, 8, lease_s=30)] == [event_id]


def test_an_expired_lease_is_claimed_again_and_the_stale_outcome_ignored(store):
    add(store)
    (first,) = claim_due(store, 1, lease_s=0.05)  # its sender dies mid-attempt
    time.sleep(0.1)
    (second,) = claim_due(store, 1, lease_s=30)
    assert second.id == first.id and second.lease_until != first.lease_until
    assert mark_failed(store, first, "late", backoff_s=5, retry_s=3600) is None
    assert webhook_state(store, "j1")["attempts"] == 0
    assert mark_failed(store, second, "HTTP 500", backoff_s=5, retry_s=3600) == "pending"
    assert webhook_state(store, "j1")["attempts"] == 1


def test_claims_take_the_most_overdue_first_and_at_most_n(store):
    ids = [add(store, f"j{i}") for i in range(5)]
    backdate(store, ids[3], next_at=60)
    claimed = claim_due(store, 2, lease_s=30)
    assert len(claimed) == 2 and claimed[0].id == ids[3]
    assert len(claim_due(store, 8, lease_s=30)) == 3


def test_a_failed_attempt_waits_out_the_backoff(store):
    event_id = add(store)
    (claim,) = claim_due(store, 1, lease_s=30)
    assert mark_failed(store, claim, "HTTP 503 Service Unavailable", backoff_s=5, retry_s=3600)
    stored = row(store, event_id)
    assert (stored.status, stored.attempts, stored.last_error) == (
        "pending",
        1,
        "HTTP 503 Service Unavailable",
    )
    assert stored.next_at - stored.created_at == pytest.approx(5, abs=1)
    assert stored.lease_until is None and claim_due(store, 1, lease_s=30) == []
    backdate(store, event_id, next_at=10)
    (again,) = claim_due(store, 1, lease_s=30)
    assert again.attempts == 1
    mark_failed(store, again, "HTTP 503", backoff_s=5, retry_s=3600)
    stored = row(store, event_id)
    assert stored.next_at - time.time() == pytest.approx(10, abs=1)  # doubled


def test_the_last_attempt_is_at_the_end_of_the_window_then_the_event_fails(store):
    event_id = add(store)
    backdate(store, event_id, created_at=3590, next_at=3590)  # made nearly an hour ago
    (claim,) = claim_due(store, 1, lease_s=30)
    assert mark_failed(store, claim, "HTTP 500", backoff_s=60, retry_s=3600) == "pending"
    stored = row(store, event_id)
    assert stored.next_at == pytest.approx(stored.created_at + 3600)  # not 60 s on
    backdate(store, event_id, created_at=20, next_at=20)  # the window has passed
    (last,) = claim_due(store, 1, lease_s=30)
    assert mark_failed(store, last, "HTTP 500", backoff_s=60, retry_s=3600) == "failed"
    assert webhook_state(store, "j1") == {
        "url": "http://r/",
        "status": "failed",
        "attempts": 2,
        "last_error": "HTTP 500",
        "id": event_id,
    }
    assert claim_due(store, 1, lease_s=30) == []


def test_a_hopeless_attempt_fails_the_event_at_once(store):
    add(store)
    (claim,) = claim_due(store, 1, lease_s=30)
    error = "tenant 't1' no longer exists: no secret to sign with"
    assert mark_failed(store, claim, error, backoff_s=5, retry_s=86400, final=True) == "failed"
    assert webhook_state(store, "j1")["last_error"] == error


def test_a_delivery_ends_the_event_even_recorded_after_the_lease(store):
    event_id = add(store)
    (claim,) = claim_due(store, 1, lease_s=0.05)
    time.sleep(0.1)
    assert mark_delivered(store, claim)
    stored = row(store, event_id)
    assert (stored.status, stored.attempts, stored.lease_until) == ("delivered", 1, None)
    assert stored.delivered_at >= stored.created_at
    assert not mark_delivered(store, claim)  # a second sender's late success changes nothing
    assert claim_due(store, 1, lease_s=30) == []
