"""Tenants: who a request acts for, their keys and their limits (AUTH=keys).

A tenant is one API key made with `audiosplit keys create`, kept in the job store as the
SHA-256 of the key (a key is 32 random bytes: nobody finds a preimage, so a slow password hash
would buy nothing). Keys listed in the API_KEYS setting are tenants too, each its own, with no
limits and the WEBHOOK_SECRET setting as their signing secret. In open mode every request acts
for `OPEN`, the one owner of every job ('' in `jobs.tenant`).

Every lookup reads the database, so a key revoked through one gateway is refused by every
gateway at its next request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import exc

from common.errors import AudiosplitError, InvalidOption, NotFound
from gateway.store import JobStore, db_now, metadata, tenants

KEY_PREFIX = "as_"  # recognisable in logs and secret scanners
SHOWN_PREFIX_CHARS = 10  # "as_" and 7 characters: enough to tell keys apart in a listing

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant", sa.Text, nullable=False),
    sa.Column("job_id", sa.Text, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("at", sa.Float, nullable=False),  # database clock
)
DAY_S = 86400.0


@dataclass(frozen=True)
class Tenant:
    id: str  # '' for the open mode's one owner
    name: str
    admin: bool = False
    minutes_per_day: float | None = None  # None: no quota
    concurrent: int | None = None  # None: no limit of its own
    webhook_url: str | None = None  # its default callback
    webhook_secret: str | None = None  # None: the WEBHOOK_SECRET setting signs
    key_prefix: str = ""
    created_at: float = 0.0
    revoked_at: float | None = None


OPEN = Tenant(id="", name="open", admin=True)


class NameTaken(AudiosplitError):
    code = "name_taken"
    status = 409


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def settings_tenant(key: str) -> Tenant:
    """An API_KEYS key as a tenant of its own: its id is derived from the key, so every
    gateway with the same setting gives it the same id (and the same jobs)."""
    digest = hash_key(key)
    return Tenant(id=f"key-{digest[:16]}", name=f"API_KEYS …{key[-4:]}", key_prefix=key[:4])


def _tenant(row) -> Tenant:
    return Tenant(**{k: v for k, v in row._mapping.items() if k != "key_hash"})


def create_tenant(
    store: JobStore,
    name: str,
    *,
    admin: bool = False,
    minutes_per_day: float | None = None,
    concurrent: int | None = None,
    webhook_url: str | None = None,
    webhook_secret: str,
) -> tuple[Tenant, str]:
    """A new tenant and its key: (tenant, key). The key is shown once; only its hash stays."""
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise InvalidOption("a tenant's name is 1 to 100 printable characters")
    if minutes_per_day is not None and minutes_per_day <= 0:
        raise InvalidOption("--minutes-per-day must be above 0")
    if concurrent is not None and concurrent < 1:
        raise InvalidOption("--concurrent must be 1 or more")
    key = new_key()
    values = {
        "id": "tnt_" + secrets.token_hex(8),
        "name": name,
        "key_hash": hash_key(key),
        "key_prefix": key[:SHOWN_PREFIX_CHARS],
        "admin": admin,
        "minutes_per_day": minutes_per_day,
        "concurrent": concurrent,
        "webhook_url": webhook_url,
        "webhook_secret": webhook_secret,
        "created_at": time.time(),
        "revoked_at": None,
    }
    try:
        store._write(lambda c: c.execute(tenants.insert().values(**values)))
    except exc.IntegrityError as e:
        raise NameTaken(f"a tenant named {name!r} exists already: pick another name") from e
    values.pop("key_hash")
    return Tenant(**values), key


def list_tenants(store: JobStore, *, revoked: bool = False) -> list[Tenant]:
    query = sa.select(tenants).order_by(tenants.c.created_at)
    if not revoked:
        query = query.where(tenants.c.revoked_at.is_(None))
    return [_tenant(r) for r in store._read(lambda c: c.execute(query).all())]


def revoke_tenant(store: JobStore, name: str) -> Tenant:
    """The key stops working at every gateway's next request; the jobs stay."""
    statement = (
        tenants.update()
        .where(tenants.c.name == name, tenants.c.revoked_at.is_(None))
        .values(revoked_at=time.time())
        .returning(*[c for c in tenants.c if c.name != "key_hash"])
    )
    row = store._write(lambda c: c.execute(statement).first())
    if row is None:
        raise NotFound(f"no tenant named {name!r} with a key in force (`audiosplit keys list`)")
    return _tenant(row)


def tenant_for_key(store: JobStore, key: str) -> Tenant | None:
    """The tenant whose key this is, None when it is no key in force (unknown or revoked)."""
    query = sa.select(tenants).where(
        tenants.c.key_hash == hash_key(key), tenants.c.revoked_at.is_(None)
    )
    row = store._read(lambda c: c.execute(query).first())
    return _tenant(row) if row is not None else None


def tenant_by_name(store: JobStore, name: str) -> Tenant | None:
    """Revoked or not (an admin may list a revoked tenant's jobs)."""
    query = sa.select(tenants).where(tenants.c.name == name)
    row = store._read(lambda c: c.execute(query).first())
    return _tenant(row) if row is not None else None


def tenant_by_id(store: JobStore, tenant_id: str) -> Tenant | None:
    row = store._read(
        lambda c: c.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
    )
    return _tenant(row) if row is not None else None


# --- usage (the daily quota) ---------------------------------------------------------------


def record_usage(store: JobStore, tenant: str, job_id: str, seconds: float) -> None:
    values = {"tenant": tenant, "job_id": job_id, "seconds": seconds, "at": db_now()}
    store._write(lambda c: c.execute(usage.insert().values(**values)))


def usage_window(store: JobStore, tenant: str) -> tuple[float, list[tuple[float, float]]]:
    """Seconds of audio accepted in the last 24 h, and each acceptance as (age_s, seconds),
    oldest first: when the oldest leaves the window, room frees up."""
    query = (
        sa.select(db_now() - usage.c.at, usage.c.seconds)
        .where(usage.c.tenant == tenant, usage.c.at > db_now() - DAY_S)
        .order_by(usage.c.at)
    )
    rows = [(float(a), float(s)) for a, s in store._read(lambda c: c.execute(query).all())]
    return sum(s for _, s in rows), rows


def forget_old_usage(store: JobStore) -> int:
    statement = usage.delete().where(usage.c.at < db_now() - DAY_S)
    return store._write(lambda c: c.execute(statement).rowcount)
