"""Status poll latency under 100 pollers spread over two gateways on one PostgreSQL.

    ./run.sh bench bench_status [--pollers 100] [--seconds 20] [--interval 1.0]
                                [--running 4] [--finished 2000]
                                [--auth open|keys] [--tenants 100]

Starts a real PostgreSQL (Debian's binaries, `common.pglocal`, durability off as in the tests)
and two real gateway processes on it; fills the store with `--finished` done jobs and
`--running` running ones, whose leases a stand-in runner holds and whose progress it writes 4
times a second (what a running job costs the database); then `--pollers` httpx async clients,
half on each gateway, each GET /api/jobs/{id} of a random job every `--interval` s (0: as fast
as answers come). With `--auth keys` both gateways run with AUTH=keys: `--tenants` tenants are
made in the store before they start, the jobs are dealt out among them, and each poller polls
only one tenant's jobs, with that tenant's X-API-Key (so each poll also reads the key's tenant
and the job's owner: what keys cost a poll). Prints the auth mode, then p50, p90, p99 and max
of the answers, per gateway and together, the polls per second and any error. The pollers run
on the same machine as the gateways and the database: on a small machine they compete for its
cores, so read the figures as contended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.pglocal import PostgresServer, require_bindir, server_user  # noqa: E402
from common.ports import free_port  # noqa: E402
from gateway.store import JobRecord, JobStore, db_now, jobs  # noqa: E402
from gateway.tenants import create_tenant  # noqa: E402
from gateway.webhooks import new_secret  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WARMUP_S = 2.0
RUNNER = "bench-runner/0"  # holds the running jobs' leases: the gateways never claim them


@dataclass(frozen=True)
class Caller:
    """Who a poller polls as: the headers it sends and the jobs it may see."""

    headers: dict[str, str]
    job_ids: list[str]


def make_tenants(store: JobStore, n: int) -> list[tuple[str, str]]:
    """`n` tenants in the store: (id, key) of each."""
    made = [create_tenant(store, f"tenant-{i:04d}", webhook_secret=new_secret()) for i in range(n)]
    return [(tenant.id, key) for tenant, key in made]


def fill(
    store: JobStore, finished: int, running: int, owners: list[str]
) -> tuple[list[str], list[str]]:
    """The jobs, dealt out in turn among `owners` (tenant ids; [''] in open mode)."""
    now = time.time()
    done_ids = [f"done{i:06d}" for i in range(finished)]
    running_ids = [f"runn{i:06d}" for i in range(running)]
    for i, job_id in enumerate(done_ids + running_ids):
        store.insert(
            JobRecord(
                id=job_id,
                status="done" if i < finished else "running",
                stage="done" if i < finished else "separating",
                created_at=now - finished + i,
                updated_at=now - finished + i,
                progress=1.0 if i < finished else 0.3,
                model="htdemucs",
                stems=["vocals", "drums", "bass", "other"],
                options={"resolved": {"model": "htdemucs", "shifts": 0, "overlap": 0.25}},
                filename=f"song {i}.flac",
                content_hash=f"{i:064x}",
                n_frames=44100 * 200,
                duration_s=200.0,
                tenant=owners[i % len(owners)],
            )
        )
    hold = jobs.update().where(jobs.c.id.in_(running_ids))
    with store.engine.begin() as c:
        c.execute(hold.values(lease_owner=RUNNER, lease_until=db_now() + 3600))
    return done_ids, running_ids


def write_progress(store: JobStore, running_ids: list[str], stop: threading.Event) -> int:
    """What the runners of the running jobs write: progress, 4 times a second each."""
    writes, progress = 0, 0.3
    while not stop.wait(0.25):
        progress = min(0.99, progress + 0.001)
        for job_id in running_ids:
            store.update(job_id, progress=progress, stage="separating")
            writes += 1
    return writes


def start_gateway(
    port: int, db_url: str, data_dir: Path, name: str, auth: str = "open"
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": db_url,
        "GATEWAY_ID": name,
        "GATEWAY_PORT": str(port),
        "PREDICTOR_URLS": "http://127.0.0.1:9",  # nothing behind: only status polls here
        "LOG_LEVEL": "WARNING",
        "AUTH": auth,
    }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
    return subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway on {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f} s")


async def poller(
    client: httpx.AsyncClient,
    ids: list[str],
    window: tuple[float, float],
    interval: float,
    out: list,
    errors: list,
) -> None:
    """One client with its own connection, polling random jobs; the answers that start
    within `window` (monotonic seconds) count."""
    measure_from, until = window
    rng = random.Random()
    async with client:
        await asyncio.sleep(rng.uniform(0, interval or 0.01))  # not all in step
        while (now := time.monotonic()) < until:
            start = time.perf_counter()
            try:
                r = await client.get(f"/api/jobs/{rng.choice(ids)}")
                ok = r.status_code == 200
            except httpx.HTTPError as e:
                ok, r = False, e
            elapsed = time.perf_counter() - start
            if now >= measure_from:
                (out if ok else errors).append(elapsed if ok else repr(r)[:120])
            if interval:
                await asyncio.sleep(max(0.0, interval - elapsed))


def pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, samples: list[float], seconds: float) -> None:
    ordered = sorted(samples)
    if not ordered:
        print(f"{name:>10}: no answers")
        return
    ms = [x * 1000 for x in ordered]
    print(
        f"{name:>10}: {len(ms):6d} polls ({len(ms) / seconds:6.0f}/s)   p50 "
        f"{statistics.median(ms):6.1f} ms   p90 {pct(ms, 0.90):6.1f} ms   p99 "
        f"{pct(ms, 0.99):6.1f} ms   max {ms[-1]:6.1f} ms"
    )


async def poll_all(urls: list[str], callers: list[Caller], opts) -> tuple[dict[str, list], list]:
    """Poller i polls as callers[i % len(callers)], on gateway urls[i % len(urls)]."""
    # the clients first (each would make its own TLS context, ~50 ms of CPU), then the clock
    tls = ssl.create_default_context()
    clients = [
        httpx.AsyncClient(
            base_url=urls[i % len(urls)],
            headers=callers[i % len(callers)].headers,
            timeout=30,
            verify=tls,
        )
        for i in range(opts.pollers)
    ]
    measure_from = time.monotonic() + WARMUP_S
    window = (measure_from, measure_from + opts.seconds)
    samples: dict[str, list[float]] = {url: [] for url in urls}
    errors: list[str] = []
    tasks = [
        poller(
            c,
            callers[i % len(callers)].job_ids,
            window,
            opts.interval,
            samples[str(c.base_url).rstrip("/")],
            errors,
        )
        for i, c in enumerate(clients)
    ]
    await asyncio.gather(*tasks)
    return samples, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0, help="s between polls (the page: 1)")
    parser.add_argument("--running", type=int, default=4)
    parser.add_argument("--finished", type=int, default=2000)
    parser.add_argument("--auth", choices=["open", "keys"], default="open")
    parser.add_argument("--tenants", type=int, default=100, help="with --auth keys")
    opts = parser.parse_args()
    if opts.auth == "keys" and not 1 <= opts.tenants <= opts.finished + opts.running:
        parser.error("--tenants must be 1 or more, and no more than the jobs")

    root = Path(tempfile.mkdtemp(prefix="audiosplit-bench-status-"))
    root.chmod(0o755)  # PostgreSQL's own user must reach its folder
    pg = PostgresServer(require_bindir(), root / "pg", free_port(), server_user())
    gateways: list[subprocess.Popen] = []
    try:
        pg.init()
        pg.start()
        db_url = pg.create_database("bench")
        store = JobStore(db_url)
        keyed = make_tenants(store, opts.tenants) if opts.auth == "keys" else [("", "")]
        done_ids, running_ids = fill(
            store, opts.finished, opts.running, [tenant for tenant, _ in keyed]
        )
        all_ids = done_ids + running_ids
        callers = [
            Caller({"X-API-Key": key} if key else {}, all_ids[i :: len(keyed)])
            for i, (_, key) in enumerate(keyed)
        ]
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            name = f"gateway-{i}"
            gateways.append(start_gateway(port, db_url, root / f"data{i}", name, opts.auth))
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for url, proc in zip(urls, gateways, strict=True):
            wait_healthy(url, proc)
            if opts.auth == "keys":  # keys really on: a poll without one is refused
                refused = httpx.get(f"{url}/api/jobs/{all_ids[0]}").status_code
                if refused != 401:
                    raise RuntimeError(f"{url} answered {refused} to a poll without a key")
        stop = threading.Event()
        writes: list[int] = []
        writer = threading.Thread(
            target=lambda: writes.append(write_progress(store, running_ids, stop))
        )
        writer.start()
        auth = (
            f"auth keys ({opts.tenants} tenants; a poller polls one tenant's jobs with its key)"
            if opts.auth == "keys"
            else "auth open"
        )
        print(
            f"{opts.pollers} pollers over 2 gateways on one PostgreSQL, {auth}, each polling every "
            f"{opts.interval:g} s for {opts.seconds:g} s (after {WARMUP_S:g} s of warm-up); "
            f"{opts.finished} finished and {opts.running} running jobs; {os.cpu_count()} cores "
            "shared by the pollers, both gateways and the database (contended)"
        )
        try:
            samples, errors = asyncio.run(poll_all(urls, callers, opts))
        finally:
            stop.set()
            writer.join()
        for i, url in enumerate(urls):
            report(f"gateway {'AB'[i]}", samples[url], opts.seconds)
        report("both", [x for s in samples.values() for x in s], opts.seconds)
        print(f"progress writes of the running jobs: {writes[0] if writes else 0}")
        count = sa.select(sa.func.count()).select_from(jobs)
        with store.engine.connect() as c:
            print(f"jobs in the store: {c.execute(count).scalar()}")
        if errors:
            print(f"errors: {len(errors)}, e.g. {errors[:3]}")
        store.close()
    finally:
        for proc in gateways:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in gateways:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
