"""Cost of the job store's hot calls on SQLite and on a real PostgreSQL (loopback).

    ./run.sh bench bench_store [--calls 2000] [--jobs 1000] [--threads 8]

The store holds `--jobs` jobs; then, per engine, prints the median and p99 of one call, in
microseconds: `get` (what a status poll costs), `update(progress=…)` (what a running job does
several times a second), `claim` with nothing claimable (what an idle worker does every
CLAIM_POLL_S) and `renew`; then `get` again from `--threads` threads at once while one thread
updates, as a busy gateway does. PostgreSQL runs from Debian's binaries as in the tests
(test/postgres.py), with durability off (fsync=off): a production server's commits cost more.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.pglocal import on_both_engines  # noqa: E402
from gateway.store import JobRecord, JobStore  # noqa: E402


def timed(call: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"median {statistics.median(ordered):7.0f} us   p99 {p99:7.0f} us"


def fill(store: JobStore, jobs: int) -> None:
    now = time.time()
    for i in range(jobs):
        status = "done" if i < jobs - 1 else "running"
        store.insert(
            JobRecord(
                id=f"job{i:06d}",
                status=status,
                created_at=now + i,
                updated_at=now + i,
                stems=["vocals", "drums", "bass", "other"],
                options={"resolved": {"model": "htdemucs", "shifts": 0, "overlap": 0.25}},
                content_hash=f"{i:064x}",
            )
        )


def concurrent_gets(store: JobStore, job_id: str, threads: int, calls: int) -> list[float]:
    samples: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poller() -> None:
        mine = timed(lambda: store.get(job_id), calls)
        with lock:
            samples.extend(mine)

    def updater() -> None:
        k = 0
        while not stop.is_set():
            store.update(job_id, progress=(k % 100) / 100)
            k += 1
            time.sleep(0.005)

    writer = threading.Thread(target=updater)
    writer.start()
    pollers = [threading.Thread(target=poller) for _ in range(threads)]
    for t in pollers:
        t.start()
    for t in pollers:
        t.join()
    stop.set()
    writer.join()
    return samples


def bench(name: str, url: str, args: argparse.Namespace) -> None:
    store = JobStore(url)
    fill(store, args.jobs)
    hot = f"job{args.jobs - 1:06d}"
    store.claim("bench/1", 30, hot)
    load = os.getloadavg()[0]
    print(f"{name} ({args.jobs} jobs; load average {load:.1f} on {os.cpu_count()} cores)")
    print(f"  get                {summary(timed(lambda: store.get(hot), args.calls))}")
    k = iter(range(10**9))
    update = timed(lambda: store.update(hot, progress=next(k) / 1e9), args.calls)
    print(f"  update(progress)   {summary(update)}")
    print(f"  claim (none free)  {summary(timed(lambda: store.claim('bench/2', 30), args.calls))}")
    renew = timed(lambda: store.renew(hot, "bench/1", 30), args.calls)
    print(f"  renew              {summary(renew)}")
    busy = concurrent_gets(store, hot, args.threads, args.calls // args.threads)
    print(f"  get, {args.threads} threads + writer {summary(busy)}")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    on_both_engines("bench-store", lambda engine, url: bench(engine, url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
