"""How many tenants' jobs one gateway lists in under 50 ms: GET /api/jobs with keys on, as the
store grows.

    ./run.sh bench bench_tenants [--tenants 10,100,1000] [--jobs-per-tenant 100]
                                 [--requests 200] [--admin-requests 50]

Starts a real PostgreSQL (Debian's binaries, `common.pglocal`, durability off as in the tests)
and one gateway process on it with AUTH=keys, and an admin tenant. For each store size in
`--tenants` (ascending) the store grows to that many tenants, made with `create_tenant`, each
with `--jobs-per-tenant` done jobs inserted in bulk through the store's engine (created within
the last hour, so the tenants' jobs interleave in time), then ANALYZE (what autovacuum does
within a minute of such a fill). Then, one request at a time on one connection, `--requests`
GET /api/jobs?limit=100 with the key of a random tenant, and `--admin-requests` with the admin
key, without and with `?tenant=NAME` of a random tenant; each answer is checked (200, its page,
its `total` against the jobs filled). Prints per store size the jobs in it and p50/p99 ms of
each listing; under it, what each store call behind a listing takes on its own (median ms,
called from this process: the page's SELECT, the COUNT for `total`, and the read of every
tenant that `?tenant=NAME` makes); last, the largest store whose tenant listing's p99 stays
under 50 ms. The client, the gateway and the database share this machine's cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_status import pct, start_gateway, wait_healthy  # noqa: E402
from common.pglocal import PostgresServer, require_bindir, server_user  # noqa: E402
from common.ports import free_port  # noqa: E402
from gateway.store import JobRecord, JobStore, jobs  # noqa: E402
from gateway.tenants import Tenant, create_tenant, list_tenants  # noqa: E402
from gateway.webhooks import new_secret  # noqa: E402

PAGE = 100  # limit= of every listing
BUDGET_MS = 50.0  # what a listing's p99 should stay under
WARMUP_REQUESTS = 10  # per kind of listing, not counted
STORE_CALL_REPEATS = 20
INSERT_BATCH = 5000  # rows per executemany
FILLED_WITHIN_S = 3600.0  # well inside the retention: the gateway's sweep deletes none


@dataclass(frozen=True)
class Keyed:
    tenant: Tenant
    key: str


def make_tenants(store: JobStore, first: int, last: int) -> list[Keyed]:
    """Tenants number `first` to `last - 1`, each with its key."""
    made = [
        create_tenant(store, f"tenant-{i:05d}", webhook_secret=new_secret())
        for i in range(first, last)
    ]
    return [Keyed(tenant, key) for tenant, key in made]


def fill(store: JobStore, owners: list[Keyed], per_tenant: int, rng: random.Random) -> None:
    """`per_tenant` done jobs for each of `owners`, in bulk, then ANALYZE."""
    now = time.time()
    rows = []
    for owner in owners:
        for j in range(per_tenant):
            created = now - rng.uniform(0.0, FILLED_WITHIN_S)
            job = JobRecord(
                id=f"{owner.tenant.id}-{j:06d}",
                status="done",
                stage="done",
                created_at=created,
                updated_at=created + 60.0,
                progress=1.0,
                model="htdemucs",
                stems=["vocals", "drums", "bass", "other"],
                options={"resolved": {"model": "htdemucs", "shifts": 0, "overlap": 0.25}},
                filename=f"song {j}.flac",
                content_hash=f"{rng.getrandbits(256):064x}",
                n_frames=44100 * 200,
                duration_s=200.0,
                tenant=owner.tenant.id,
            )
            rows.append(job.__dict__)
            if len(rows) == INSERT_BATCH:
                insert(store, rows)
                rows = []
    insert(store, rows)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("ANALYZE jobs"))


def insert(store: JobStore, rows: list[dict]) -> None:
    if rows:
        with store.engine.begin() as c:
            c.execute(jobs.insert(), rows)


def time_listing(
    client: httpx.Client,
    n: int,
    pick: Callable[[], tuple[str, dict[str, str], int]],
) -> list[float]:
    """`n` timed GET /api/jobs (after a warm-up), ms each. `pick()` gives the request's key,
    its query and the `total` its answer must carry."""
    samples = []
    for i in range(WARMUP_REQUESTS + n):
        key, params, total = pick()
        start = time.perf_counter()
        r = client.get("/api/jobs", params={"limit": PAGE, **params}, headers={"X-API-Key": key})
        elapsed = time.perf_counter() - start
        if r.status_code != 200:
            raise RuntimeError(f"GET /api/jobs {params} answered {r.status_code}: {r.text[:200]}")
        body = r.json()
        if body["total"] != total or len(body["jobs"]) != min(PAGE, total):
            raise RuntimeError(
                f"GET /api/jobs {params}: total {body['total']} and {len(body['jobs'])} jobs, "
                f"expected total {total}"
            )
        if i >= WARMUP_REQUESTS:
            samples.append(elapsed * 1000)
    return samples


def median_ms(call: Callable[[], object]) -> float:
    times = []
    for _ in range(STORE_CALL_REPEATS):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def spread(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"p50 {statistics.median(ordered):6.1f}  p99 {pct(ordered, 0.99):6.1f}"


def measure(
    client: httpx.Client,
    store: JobStore,
    admin: Keyed,
    keyed: list[Keyed],
    opts,
    rng: random.Random,
) -> float:
    """Prints one store size's figures; returns the tenant listing's p99 (ms)."""
    per_tenant = opts.jobs_per_tenant
    in_store = len(keyed) * per_tenant

    def as_tenant() -> tuple[str, dict[str, str], int]:
        return rng.choice(keyed).key, {}, per_tenant

    def as_admin() -> tuple[str, dict[str, str], int]:
        return admin.key, {}, in_store

    def as_admin_of() -> tuple[str, dict[str, str], int]:
        return admin.key, {"tenant": rng.choice(keyed).tenant.name}, per_tenant

    own = time_listing(client, opts.requests, as_tenant)
    everyone = time_listing(client, opts.admin_requests, as_admin)
    filtered = time_listing(client, opts.admin_requests, as_admin_of)
    print(
        f"{len(keyed):6d} tenants x {per_tenant} = {in_store:8d} jobs   tenant {spread(own)}   "
        f"admin {spread(everyone)}   admin ?tenant= {spread(filtered)}   (ms)"
    )
    one = rng.choice(keyed).tenant.id
    calls = {
        "tenant page": lambda: store.list(limit=PAGE, tenant=one),
        "tenant COUNT": lambda: store.count(tenant=one),
        "all page": lambda: store.list(limit=PAGE),
        "all COUNT": lambda: store.count(),
        "every tenant (?tenant=)": lambda: list_tenants(store, revoked=True),
    }
    print(
        "        store calls, median ms: "
        + ", ".join(f"{name} {median_ms(call):.1f}" for name, call in calls.items())
    )
    return pct(sorted(own), 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", default="10,100,1000", help="store sizes, in tenants")
    parser.add_argument("--jobs-per-tenant", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200, help="tenant listings per size")
    parser.add_argument("--admin-requests", type=int, default=50, help="of each admin listing")
    opts = parser.parse_args()
    try:
        sizes = sorted({int(n) for n in opts.tenants.split(",")})
    except ValueError:
        parser.error(f"--tenants is a comma-separated list of counts, not {opts.tenants!r}")
    if sizes[0] < 1 or opts.jobs_per_tenant < 1:
        parser.error("--tenants and --jobs-per-tenant must be 1 or more")

    root = Path(tempfile.mkdtemp(prefix="audiosplit-bench-tenants-"))
    root.chmod(0o755)  # PostgreSQL's own user must reach its folder
    pg = PostgresServer(require_bindir(), root / "pg", free_port(), server_user())
    gateway: subprocess.Popen | None = None
    rng = random.Random(0)
    try:
        pg.init()
        pg.start()
        db_url = pg.create_database("bench")
        store = JobStore(db_url)
        admin = Keyed(*create_tenant(store, "admin", admin=True, webhook_secret=new_secret()))
        port = free_port()
        gateway = start_gateway(port, db_url, root / "data", "gateway-0", auth="keys")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, gateway)
        print(
            f"GET /api/jobs?limit={PAGE} on 1 gateway with AUTH=keys on one PostgreSQL, one "
            f"request at a time: {opts.requests} with a random tenant's key, {opts.admin_requests} "
            f"with an admin key without and with ?tenant=NAME; {os.cpu_count()} cores shared by "
            "the client, the gateway and the database"
        )
        keyed: list[Keyed] = []
        within: list[tuple[int, int]] = []  # (tenants, jobs) of the sizes under the budget
        with httpx.Client(base_url=url, timeout=30) as client:
            for size in sizes:
                added = make_tenants(store, len(keyed), size)
                fill(store, added, opts.jobs_per_tenant, rng)
                keyed += added
                p99 = measure(client, store, admin, keyed, opts, rng)
                if p99 < BUDGET_MS:
                    within.append((size, size * opts.jobs_per_tenant))
        if within:
            size, in_store = within[-1]
            print(
                f"largest store whose tenant listing p99 < {BUDGET_MS:g} ms: {size} tenants, "
                f"{in_store} jobs (of those tried)"
            )
        else:
            print(f"no store tried kept the tenant listing's p99 under {BUDGET_MS:g} ms")
        store.close()
    finally:
        if gateway is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gateway.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                gateway.wait(timeout=30)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
