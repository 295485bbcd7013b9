"""`Idempotency-Key` on POST /api/jobs: a retried submission (the app's request timed out)
returns the job the first one made instead of making a second.

The key is the tenant's: (tenant, key) -> the job, with a hash of what was asked (the audio's
SHA-256 or the URL, and the options). The row is claimed before the work starts, so two
gateways given the same key at once make one job: the second finds the claim and answers 409
until the first is done, then the job. A request that fails (a 4xx) frees its claim, so the
retry can succeed. Claims older than IDEMPOTENCY_HOURS are free again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import sqlalchemy as sa
from sqlalchemy import exc

from common.errors import Conflict, InvalidOption
from gateway.store import JobStore, metadata

idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column("tenant", sa.Text, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("request_hash", sa.Text, nullable=False),
    sa.Column("job_id", sa.Text),  # None while the first request is being worked on
    sa.Column("created_at", sa.Float, nullable=False),
)
HEADER = "idempotency-key"
KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, as the IETF draft's examples


def check_key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise InvalidOption(
            "the Idempotency-Key header is 1 to 255 printable ASCII characters (a UUID is usual)"
        )
    return key


def request_hash(source: str, requested: dict) -> str:
    """What a request asked for: its audio (SHA-256) or URL, and its options as sent."""
    options = json.dumps(requested, sort_keys=True, default=str)
    return hashlib.sha256(f"{source}|{options}".encode()).hexdigest()


def claim(store: JobStore, tenant: str, key: str, asked: str, max_age_s: float) -> str | None:
    """Claim the key for this request: None when it is ours to work on now; the id of the
    job it made before when the same request comes again. Conflict (409) while another
    request with the key is being worked on; InvalidOption (422) when the key was used for a
    different request."""
    t = idempotency.c
    now = time.time()
    row_of = sa.select(t.request_hash, t.job_id, t.created_at).where(
        t.tenant == tenant, t.key == key
    )

    def take(c: sa.Connection):
        row = c.execute(row_of).first()
        if row is not None and row.created_at < now - max_age_s:
            c.execute(idempotency.delete().where(t.tenant == tenant, t.key == key))
            row = None
        if row is None:
            c.execute(
                idempotency.insert().values(
                    tenant=tenant, key=key, request_hash=asked, job_id=None, created_at=now
                )
            )
        return row

    try:
        row = store._transaction(take)
    except exc.IntegrityError:  # another gateway claimed it between our read and insert
        row = store._read(lambda c: c.execute(row_of).first())
        if row is None:
            raise Conflict(_busy(key), code="idempotency_in_progress") from None
    if row is None:
        return None
    if row.job_id is None:  # whatever it asks: the first request decides what the key means
        raise Conflict(_busy(key), code="idempotency_in_progress")
    if row.request_hash != asked:
        raise InvalidOption(
            f"the Idempotency-Key {key!r} was used for a different request (other audio, URL "
            "or options) in the last hours: use a new key for a new request",
            code="idempotency_mismatch",
        )
    return row.job_id


def _busy(key: str) -> str:
    return (
        f"a request with the Idempotency-Key {key!r} is being worked on: try again in a "
        "few seconds for its job"
    )


def settle(store: JobStore, tenant: str, key: str, job_id: str) -> None:
    """The claimed request made this job."""
    t = idempotency.c
    statement = idempotency.update().where(t.tenant == tenant, t.key == key).values(job_id=job_id)
    store._write(lambda c: c.execute(statement))


def release(store: JobStore, tenant: str, key: str) -> None:
    """The claimed request failed: the key is free for its retry."""
    t = idempotency.c
    statement = idempotency.delete().where(t.tenant == tenant, t.key == key, t.job_id.is_(None))
    store._write(lambda c: c.execute(statement))


def forget_old(store: JobStore, max_age_s: float) -> int:
    statement = idempotency.delete().where(idempotency.c.created_at < time.time() - max_age_s)
    return store._write(lambda c: c.execute(statement).rowcount)
