"""Webhooks as the Standard Webhooks spec (standardwebhooks.com) has them, kept in an outbox.

When a job ends, one row of `webhook_events` is written in the same transaction as the job's
final status (`enqueue`), so an ended job always has its event, whichever gateway dies when.
Any gateway on the database then delivers it (`gateway.outbox.WebhookSender`): it claims a due
event with a lease on the attempt (`claim_due`), POSTs the stored body and records the outcome
(`mark_delivered`, `mark_failed`). Retries send the same bytes under the same `webhook-id`, so
a receiver can drop the duplicates at-least-once delivery brings; only `webhook-timestamp` and
the signature are new on each attempt, as the spec wants.

Times in the table are the database's clock (`db_now`), as the job leases are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from common.errors import AudiosplitError
from gateway.store import ENDED, JobStore, db_now, metadata

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # 192 bits, in the spec's suggested 24..64 bytes
MAX_BACKOFF_S = 3600.0  # retries are at least hourly, however many came before
LAST_ERROR_CHARS = 300  # what `last_error` keeps of a message

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # the webhook-id header: "msg_…"
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("tenant", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),  # "job.done" | "job.failed" | …
    sa.Column("payload", sa.Text, nullable=False),  # the exact body every attempt sends
    sa.Column("status", sa.Text, nullable=False),  # "pending" | "delivered" | "failed"
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.Float, nullable=False),  # database clock, Unix seconds
    sa.Column("lease_until", sa.Float),  # an attempt in progress until then
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float),
    sa.Index("webhook_events_due", "status", "next_at"),
    sa.Index("webhook_events_job", "job_id"),
)
ev = webhook_events.c
PENDING = ev.status == "pending"
# due, and no attempt in progress (or the gateway that made it died: its lease ran out)
DUE = sa.and_(
    PENDING, ev.next_at <= db_now(), sa.or_(ev.lease_until.is_(None), ev.lease_until < db_now())
)


class InvalidSecret(AudiosplitError):
    """A signing secret that is not `whsec_` and base64."""

    code = "invalid_webhook_secret"
    status = 500


# --- signatures ---------------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_event_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value: `v1,` and the base64 HMAC-SHA256, keyed with the
    secret's decoded bytes, of `{msg_id}.{timestamp}.{body}`."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        # unpadded base64 too, as the spec's libraries accept it
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as e:
        raise InvalidSecret(f"a webhook secret is 'whsec_' and base64; this one is not: {e}") from e
    if not key:
        raise InvalidSecret("the webhook secret is empty")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


# --- writing and reading events -----------------------------------------------------------------


def enqueue(
    connection: sa.Connection,
    *,
    job_id: str,
    tenant: str,
    url: str,
    status: str,
    job_json: dict[str, Any],
) -> str:
    """Add the pending event of a job that ended with `status`, on the caller's connection and
    in its transaction (with the job's final status: both or neither). Returns its id."""
    if status not in ENDED:
        raise ValueError(f"a webhook is sent when a job ends ({', '.join(ENDED)}), not {status!r}")
    event_type = f"job.{status}"
    body = {
        "type": event_type,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": job_json,
    }
    event_id = new_event_id()
    connection.execute(
        webhook_events.insert().values(
            id=event_id,
            job_id=job_id,
            tenant=tenant,
            url=url,
            event_type=event_type,
            payload=json.dumps(body, separators=(",", ":")),
            status="pending",
            attempts=0,
            next_at=db_now(),
            created_at=db_now(),
        )
    )
    return event_id


def webhook_states(store: JobStore, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The latest event of each job that has one, as the job JSON's `webhook` field:
    {"url", "status", "attempts", "last_error", "id"}."""
    if not job_ids:
        return {}
    query = (
        sa.select(ev.job_id, ev.url, ev.status, ev.attempts, ev.last_error, ev.id)
        .where(ev.job_id.in_(job_ids))
        .order_by(ev.created_at)  # a later event of the same job overwrites an earlier one
    )
    rows = store._read(lambda c: c.execute(query).all())
    return {
        row.job_id: {
            "url": row.url,
            "status": row.status,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "id": row.id,
        }
        for row in rows
    }


def webhook_state(store: JobStore, job_id: str) -> dict[str, Any] | None:
    return webhook_states(store, [job_id]).get(job_id)


# --- delivery: claims and outcomes --------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One attempt this sender may make: `lease_until` is also its token, so an outcome
    written after the lease ran out (and another sender took the event) changes nothing."""

    id: str
    job_id: str
    tenant: str
    url: str
    payload: str
    attempts: int  # attempts before this one
    lease_until: float


def retry_delay(attempts: int, backoff_s: float) -> float:
    """Seconds from the `attempts`-th failed attempt to the next: backoff_s, then doubling,
    capped at an hour."""
    return min(MAX_BACKOFF_S, backoff_s * 2.0 ** min(max(attempts - 1, 0), 40))


def claim_due(store: JobStore, n: int, lease_s: float) -> list[Claim]:
    """Lease up to `n` due events, most overdue first. As `JobStore.claim`: PostgreSQL skips
    the rows another sender is claiming (FOR UPDATE SKIP LOCKED); on SQLite, where that clause
    compiles to nothing and writers take turns, the UPDATE's own `DUE` condition means a row
    another sender claimed meanwhile is not claimed again. Two statements, not an UPDATE of a
    `WHERE id IN (SELECT … LIMIT n)`: PostgreSQL may run that subquery again for every row
    and so lease more than `n`."""
    chosen = (
        sa.select(ev.id).where(DUE).order_by(ev.next_at).limit(n).with_for_update(skip_locked=True)
    )
    columns = (ev.id, ev.job_id, ev.tenant, ev.url, ev.payload, ev.attempts, ev.lease_until)

    def take(c: sa.Connection) -> list[Claim]:
        ids = list(c.execute(chosen).scalars())
        if not ids:
            return []
        statement = (
            webhook_events.update()
            .where(ev.id.in_(ids), DUE)
            .values(lease_until=db_now() + lease_s)
            .returning(*columns)
        )
        taken = {row.id: Claim(**row._mapping) for row in c.execute(statement)}
        return [taken[i] for i in ids if i in taken]  # RETURNING's order is the table's

    return store._transaction(take)


def _ours(claim: Claim) -> sa.ColumnElement[bool]:
    return sa.and_(ev.id == claim.id, PENDING, ev.lease_until == claim.lease_until)


def mark_delivered(store: JobStore, claim: Claim) -> bool:
    """The receiver answered 2xx. Not fenced by the lease: a delivery is a delivery, even one
    recorded late. False when the event was no longer pending (recorded already)."""
    statement = (
        webhook_events.update()
        .where(ev.id == claim.id, PENDING)
        .values(
            status="delivered",
            attempts=ev.attempts + 1,
            delivered_at=db_now(),
            lease_until=None,
            last_error=None,
        )
    )
    return store._write(lambda c: c.execute(statement).rowcount) == 1


def mark_failed(
    store: JobStore,
    claim: Claim,
    error: str,
    *,
    backoff_s: float,
    retry_s: float,
    final: bool = False,
) -> str | None:
    """Record a failed attempt: the next is due after `retry_delay`, but never later than
    `retry_s` after the event was made, and an attempt failing after that gives the event up.
    `final`: give up now (nothing could ever succeed). Returns the status now ("pending" or
    "failed"), None when the lease was no longer ours (another sender's attempt counts)."""
    now = db_now()
    deadline = ev.created_at + retry_s
    retry_at = now + retry_delay(claim.attempts + 1, backoff_s)
    give_up = sa.true() if final else now >= deadline
    statement = (
        webhook_events.update()
        .where(_ours(claim))
        .values(
            status=sa.case((give_up, "failed"), else_="pending"),
            attempts=ev.attempts + 1,
            last_error=error[:LAST_ERROR_CHARS],
            next_at=sa.case((retry_at > deadline, deadline), else_=retry_at),
            lease_until=None,
        )
        .returning(ev.status)
    )
    return store._write(lambda c: c.execute(statement).scalar())


def release(store: JobStore, claim: Claim) -> None:
    """Give an attempt up unmade or unfinished (the sender stops): due again at once."""
    statement = webhook_events.update().where(_ours(claim)).values(lease_until=None)
    store._write(lambda c: c.execute(statement))
