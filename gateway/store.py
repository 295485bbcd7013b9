"""The gateway's job store on SQLAlchemy Core: one code path for SQLite (the default, a file
under the data dir, WAL) and PostgreSQL (several gateways sharing the work).

The schema is made and upgraded by the Alembic revisions in `gateway/migrations/`, run when the
store opens; the first of them adopts a file written before migrations existed. Besides the
job's own fields, a row holds a lease (`lease_owner`, `lease_until`): the one gateway that runs
the job renews it while it runs, and any gateway may claim a job whose lease has expired.
Lease times are the database's clock, so gateways on machines whose clocks differ still agree.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from common.errors import AudiosplitError, NotFound
from gateway.migrations import upgrade

log = logging.getLogger("audiosplit.store")

STATUSES = ("queued", "running", "done", "failed", "cancelled")
RUNNABLE = ("queued", "running")  # a job in these states wants a gateway to run it
ENDED = ("done", "failed", "cancelled")
T = TypeVar("T")


class JobCancelled(Exception):
    """The job was cancelled (or deleted) while it ran: stop, and clean up after it."""


class StoreUnavailable(AudiosplitError):
    """The database did not answer for `db_retry_s` (down, restarting, unreachable)."""

    code = "store_unavailable"
    status = 503


class JSONText(sa.types.TypeDecorator):
    """JSON kept as TEXT: the format files of earlier releases hold, the same on both engines."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return json.dumps(value)

    def process_result_value(self, value, dialect):
        return json.loads(value) if value is not None else None


class db_now(FunctionElement):
    """The database's clock in Unix seconds (float)."""

    type = sa.Float()
    inherit_cache = True


@compiles(db_now)
def _db_now_postgresql(element, compiler, **kw) -> str:
    # clock_timestamp, not now(): now() is the start of the transaction
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


@compiles(db_now, "sqlite")
def _db_now_sqlite(element, compiler, **kw) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


metadata = sa.MetaData()
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("model_reason", sa.Text, nullable=False),
    sa.Column("stems", JSONText, nullable=False),
    sa.Column("error", JSONText),
    sa.Column("warnings", JSONText, nullable=False),
    sa.Column("notes", JSONText, nullable=False),
    sa.Column("peak", sa.Float),
    sa.Column("ready_s", sa.Float, nullable=False),
    sa.Column("options", JSONText, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("n_frames", sa.Integer, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_until", sa.Float),  # database clock, Unix seconds
    sa.Column("tenant", sa.Text, nullable=False),  # '' in open mode (migration 0004)
    sa.Column("callback_url", sa.Text),
    sa.Column("source_url", sa.Text),
    sa.Column("title", sa.Text),
    sa.Column("rank", sa.Integer, nullable=False),
)
# tenants and their limits (migration 0004; gateway/tenants.py makes and reads them)
tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("key_prefix", sa.Text, nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("minutes_per_day", sa.Float),
    sa.Column("concurrent", sa.Integer),
    sa.Column("webhook_url", sa.Text),
    sa.Column("webhook_secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)
# per-client token buckets of the rate limit (migration 0003): tokens left at `at`
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("client", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("at", sa.Float, nullable=False),  # database clock, Unix seconds
)
BUCKET_FULL_AFTER_S = 60.0  # an empty bucket refills in a minute: older rows are full again


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
    tenant: str = ""  # who made it: '' in open mode (AUTH=open), else the tenant's id
    callback_url: str | None = None  # where the job's end is POSTed (webhooks)
    source_url: str | None = None  # an imported song's URL
    title: str | None = None  # and its title as the page gave it
    rank: int = 0  # its tenant's jobs waiting or running when it came: claims go by it


RECORD_COLUMNS = [jobs.c[name] for name in JobRecord.__dataclass_fields__]
# a row whose lease has run out (or was never taken, or was released)
LEASE_FREE = sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < db_now())
# Fair claiming between tenants: how many jobs each tenant has running now (a live lease),
# and its limit of jobs at once (None: none of its own).
_held = jobs.alias("held")
HELD = (
    sa.select(sa.func.count())
    .where(
        _held.c.tenant == jobs.c.tenant,
        _held.c.status.in_(RUNNABLE),
        _held.c.lease_until >= db_now(),
    )
    .scalar_subquery()
)
CONCURRENT = sa.select(tenants.c.concurrent).where(tenants.c.id == jobs.c.tenant).scalar_subquery()
# built once: status polls and progress updates are the hot path, building a statement per call
# cost more than running it
GET = sa.select(*RECORD_COLUMNS).where(jobs.c.id == sa.bindparam("job_id"))
UPDATE = jobs.update().where(jobs.c.id == sa.bindparam("job_id")).returning(*RECORD_COLUMNS)


def engine_url(url: str) -> sa.URL:
    """`postgresql://…` means psycopg 3 here (SQLAlchemy would pick psycopg2 by default)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str) -> Engine:
    parsed = engine_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": 30.0}
        )

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL keeps it consistent; fsync less
            cursor.close()

        return engine
    # pre-ping: a connection the database dropped (a restart) is replaced before use, not
    # failed on; the pool is sized for the event loop plus the runner's threads
    return sa.create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=16)


class JobStore:
    """Thread-safe (a connection pool; every statement is short). A call that meets an
    unreachable database retries with backoff for `retry_s`, then raises StoreUnavailable."""

    def __init__(self, url: str | Path, retry_s: float = 20.0):
        """`url`: a database URL, or the path of a SQLite file."""
        url = f"sqlite:///{url}" if isinstance(url, Path) else url
        self.url = url
        self.retry_s = retry_s
        self.engine = make_engine(url)
        # every call but `claim` is one statement, atomic on its own: autocommit saves the
        # BEGIN and COMMIT/ROLLBACK round trips around it (the same pool of connections)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._retrying(lambda: upgrade(self.engine))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def insert(self, job: JobRecord) -> None:
        self._write(lambda c: c.execute(jobs.insert().values(**job.__dict__)))

    def insert_ended(
        self,
        job: JobRecord,
        on_end: Callable[[sa.Connection, JobRecord], Callable[[], None] | None] | None,
    ) -> None:
        """A job born ended (a reused result) with its webhook event, in one transaction."""

        after: list[Callable[[], None]] = []

        def work(c: sa.Connection) -> None:
            after.clear()
            c.execute(jobs.insert().values(**job.__dict__))
            if on_end is not None and (then := on_end(c, job)) is not None:
                after.append(then)

        self._transaction(work)
        for then in after:
            then()

    def get(self, job_id: str) -> JobRecord:
        row = self._read(lambda c: c.execute(GET, {"job_id": job_id}).first())
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return JobRecord(**row._mapping)

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        changes.setdefault("updated_at", time.time())
        unknown = set(changes) - set(JobRecord.__dataclass_fields__)
        if unknown or "id" in changes:
            raise TypeError(
                f"JobStore.update cannot set {sorted(unknown | ({'id'} & set(changes)))}"
            )
        # the SET clause is the keys of the parameters
        row = self._write(lambda c: c.execute(UPDATE, {"job_id": job_id, **changes}).first())
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return JobRecord(**row._mapping)

    def list(
        self,
        limit: int = 100,
        offset: int = 0,
        status: str | None = None,
        tenant: str | None = None,
    ) -> list[JobRecord]:
        """Newest first; `tenant`: only that tenant's jobs (None: everyone's)."""
        query = sa.select(*RECORD_COLUMNS).where(*self._filters(status, tenant))
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit).offset(offset)
        rows = self._read(lambda c: c.execute(query).all())
        return [JobRecord(**r._mapping) for r in rows]

    def count(self, status: str | None = None, tenant: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(jobs).where(*self._filters(status, tenant))
        return self._read(lambda c: c.execute(query).scalar())

    @staticmethod
    def _filters(status: str | None, tenant: str | None) -> list:
        where = []
        if status:
            where.append(jobs.c.status == status)
        if tenant is not None:
            where.append(jobs.c.tenant == tenant)
        return where

    def backlog(self, tenant: str) -> int:
        """The tenant's jobs waiting or running: a new job's `rank`."""
        query = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.tenant == tenant, jobs.c.status.in_(RUNNABLE))
        )
        return self._read(lambda c: c.execute(query).scalar())

    def queue_place(self, job: JobRecord) -> int:
        """1 + the queued jobs ahead of this queued one in the claims' order (rank, then age;
        a tenant at its limit of jobs at once is passed over, so this is an upper bound)."""
        ahead = sa.or_(
            jobs.c.rank < job.rank,
            sa.and_(jobs.c.rank == job.rank, jobs.c.created_at < job.created_at),
        )
        query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "queued", ahead)
        return 1 + self._read(lambda c: c.execute(query).scalar())

    def recent_run_s(self, n: int = 20) -> float | None:
        """The median wall time of the last `n` jobs that ran to the end (queue time included:
        it is what a queued job's wait is made of), None before any."""
        query = (
            sa.select(jobs.c.updated_at - jobs.c.created_at)
            .where(jobs.c.status == "done", ~jobs.c.notes.contains("result reused"))
            .order_by(jobs.c.updated_at.desc())
            .limit(n)
        )
        times = sorted(self._read(lambda c: list(c.execute(query).scalars())))
        return times[len(times) // 2] if times else None

    def transition(
        self,
        job_id: str,
        on_end: Callable[[sa.Connection, JobRecord], Callable[[], None] | None] | None = None,
        *,
        only_from: tuple[str, ...] = RUNNABLE,
        **changes: Any,
    ) -> JobRecord | None:
        """A change of status that must not overwrite another (a job cancelled meanwhile stays
        cancelled): only from a status in `only_from`, None when the job is gone or no longer
        in one. For the last transition (done, failed, cancelled) `on_end` runs in the same
        transaction (its webhook event into the outbox): a gateway killed right after cannot
        leave an ended job without its event; what `on_end` returns runs after the commit."""
        changes.setdefault("updated_at", time.time())
        statement = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status.in_(only_from))
            .values(**changes)
            .returning(*RECORD_COLUMNS)
        )

        after: list[Callable[[], None]] = []

        def work(c: sa.Connection) -> JobRecord | None:
            after.clear()  # a retried transaction runs `on_end` again
            row = c.execute(statement).first()
            if row is None:
                return None
            job = JobRecord(**row._mapping)
            if on_end is not None and (then := on_end(c, job)) is not None:
                after.append(then)
            return job

        job = self._transaction(work)
        for then in after:  # what `on_end` asked to run once committed (wake the sender)
            then()
        return job

    def cancelled_to_clean(self) -> list[JobRecord]:
        """Cancelled jobs whose files are not cleaned yet and that no gateway works on."""
        query = sa.select(*RECORD_COLUMNS).where(
            jobs.c.status == "cancelled", jobs.c.stage != "cancelled", LEASE_FREE
        )
        return [JobRecord(**r._mapping) for r in self._read(lambda c: c.execute(query).all())]

    def ids_with_status(self, *statuses: str) -> list[str]:
        query = sa.select(jobs.c.id).where(jobs.c.status.in_(statuses)).order_by(jobs.c.created_at)
        return self._read(lambda c: list(c.execute(query).scalars()))

    def find_done(self, content_hash: str) -> JobRecord | None:
        """A finished job with the same audio and options, for the result cache."""
        query = (
            sa.select(*RECORD_COLUMNS)
            .where(jobs.c.content_hash == content_hash, jobs.c.status == "done")
            .order_by(jobs.c.created_at.desc())
            .limit(1)
        )
        row = self._read(lambda c: c.execute(query).first())
        return JobRecord(**row._mapping) if row else None

    def counts(self) -> dict[str, int]:
        query = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        found = dict(self._read(lambda c: c.execute(query).all()))
        return {s: found.get(s, 0) for s in STATUSES}

    def older_than(self, cutoff: float) -> list[str]:
        query = sa.select(jobs.c.id).where(jobs.c.updated_at < cutoff, jobs.c.status.in_(ENDED))
        return self._read(lambda c: list(c.execute(query).scalars()))

    def delete(self, job_id: str) -> None:
        """Deleting a job that is already gone does nothing (two sweepers may meet)."""
        self._write(lambda c: c.execute(jobs.delete().where(jobs.c.id == job_id)))

    # --- leases -------------------------------------------------------------------------------

    def claim(
        self, owner: str, lease_s: float, job_id: str | None = None
    ) -> tuple[str, str] | None:
        """Take the lease of one runnable job whose lease is free (`job_id`, or the next in
        fair order), within its tenant's limit of jobs at once:
        (id, status before) or None. PostgreSQL skips rows another gateway is claiming (FOR
        UPDATE SKIP LOCKED); on SQLite, where that clause compiles to nothing, the conditional
        UPDATE is what makes two claimers of one row get one winner."""
        claimable = sa.and_(
            jobs.c.status.in_(RUNNABLE),
            LEASE_FREE,
            sa.or_(CONCURRENT.is_(None), HELD < CONCURRENT),  # the tenant's jobs at once
        )
        query = sa.select(jobs.c.id, jobs.c.status).where(claimable)
        if job_id is not None:
            query = query.where(jobs.c.id == job_id)
        # Fair between tenants, round robin: the job of the tenant with the fewest jobs
        # running goes first, then the job with the fewest of its tenant's jobs ahead of it when
        # it came (`rank`), then the oldest. A tenant's 50 queued jobs are ranks 0..49; another
        # tenant's one job, rank 0, runs next, not after them.
        query = (
            query.order_by(HELD, jobs.c.rank, jobs.c.created_at)
            .limit(1)
            .with_for_update(skip_locked=True, of=jobs)
        )

        def take(c: sa.Connection) -> tuple[str, str] | None | bool:
            """(id, status) claimed; None: nothing claimable; False: another claimer won."""
            row = c.execute(query).first()
            if row is None:
                return None
            taken = c.execute(
                jobs.update()
                .where(jobs.c.id == row.id, claimable)
                .values(lease_owner=owner, lease_until=db_now() + lease_s)
            )
            return (row.id, row.status) if taken.rowcount == 1 else False

        for _ in range(3):  # on SQLite another gateway may win the row we chose: choose again
            claimed = self._transaction(take)
            if claimed is not False:
                return claimed
            if job_id is not None:
                return None
        return None

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend our lease; False when the job is gone or another gateway holds it now.
        An expired lease nobody took is still ours: a short database outage costs no job."""
        statement = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
            .values(lease_until=db_now() + lease_s)
        )
        return self._write(lambda c: c.execute(statement).rowcount) == 1

    def release(self, job_id: str, owner: str) -> None:
        """Give the lease up (the job ended, or this gateway stops): claimable at once."""
        statement = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        self._write(lambda c: c.execute(statement))

    def release_owned_by(self, owner_prefix: str) -> int:
        """Free the leases an earlier life of this gateway held (it was killed): its jobs
        resume at once instead of after the lease runs out. Returns how many."""
        statement = (
            jobs.update()
            .where(jobs.c.lease_owner.startswith(owner_prefix, autoescape=True))
            .values(lease_owner=None, lease_until=None)
        )
        return self._write(lambda c: c.execute(statement).rowcount)

    def lease(self, job_id: str) -> tuple[str | None, float | None]:
        """(owner, seconds left by the database clock) of a job's lease, for tests and logs."""
        query = sa.select(jobs.c.lease_owner, jobs.c.lease_until - db_now()).where(
            jobs.c.id == job_id
        )
        row = self._read(lambda c: c.execute(query).first())
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return row[0], row[1]

    # --- rate limit ---------------------------------------------------------------------------

    def take_token(self, client: str, per_minute: int) -> float:
        """Take one of `client`'s tokens from a bucket of `per_minute`, refilled continuously
        by the database clock and shared by every gateway on this database: 0.0 when taken,
        else the seconds until one is there. One statement: the upsert locks the client's row,
        so two gateways never both take its last token; a refusal leaves the row as it was."""
        b, rate, full = rate_buckets.c, per_minute / 60.0, float(per_minute)
        filled = b.tokens + (db_now() - b.at) * rate
        refilled = sa.case((filled > full, full), else_=filled)
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        take = (
            dialect_insert(rate_buckets)
            .values(client=client, tokens=full - 1.0, at=db_now())
            .on_conflict_do_update(
                index_elements=[b.client],
                set_={"tokens": refilled - 1.0, "at": db_now()},
                where=refilled >= 1.0,
            )
            .returning(b.tokens)
        )
        if self._write(lambda c: c.execute(take).first()) is not None:
            return 0.0
        query = sa.select(refilled).where(b.client == client)
        left = self._read(lambda c: c.execute(query).scalar())
        return max(0.0, (1.0 - (left if left is not None else 0.0)) / rate)

    def forget_full_buckets(self) -> int:
        """Drop the buckets that have refilled (a missing one counts as full). How many."""
        statement = rate_buckets.delete().where(rate_buckets.c.at < db_now() - BUCKET_FULL_AFTER_S)
        return self._write(lambda c: c.execute(statement).rowcount)

    # --- plumbing -----------------------------------------------------------------------------

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        """One statement (reads and single-statement writes alike)."""

        def once() -> T:
            with self._autocommit.connect() as c:
                return work(c)

        return self._retrying(once)

    _write = _read

    def _transaction(self, work: Callable[[sa.Connection], T]) -> T:
        def once() -> T:
            with self.engine.begin() as c:
                return work(c)

        return self._retrying(once)

    def _retrying(self, once: Callable[[], T]) -> T:
        """Run `once`, again with backoff while the database cannot be reached or is busy
        (OperationalError: refused, reset, restarting, SQLite locked) for at most retry_s."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return once()
            except (exc.OperationalError, exc.InterfaceError) as e:
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(
                        f"the job database did not answer for {self.retry_s:.0f} s "
                        f"({type(e.orig).__name__}: {str(e.orig).strip()[:200]})"
                    ) from e
                log.warning("job database unavailable, retrying in %.2fs: %s", delay, e.orig)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
