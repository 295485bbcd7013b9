"""Delay from a job's end to its webhook's arrival, through the outbox (gateway/webhooks.py,
gateway/outbox.py), on SQLite and on a real PostgreSQL (loopback).

    ./run.sh bench bench_webhooks [--events 50] [--gap-ms 20] [--poll-s 1.0]

`--events` events are enqueued one at a time, `--gap-ms` apart, each in its own transaction as
a job's final write makes it, and a running WebhookSender delivers them to a real loopback
receiver. Prints the median and p99 of the delay from the start of that write to the
receiver's reading of the request, in milliseconds: once with the sender poked after each
commit (what the gateway does), once with the sender left to find events at its poll
(`--poll-s`), which is what a gateway other than the one that ended the job sees.
PostgreSQL runs from Debian's binaries as in the tests (test/postgres.py), fsync off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.pglocal import on_both_engines  # noqa: E402
from common.ports import free_port  # noqa: E402
from gateway.outbox import WebhookSender  # noqa: E402
from gateway.store import JobStore  # noqa: E402
from gateway.webhooks import enqueue, new_secret  # noqa: E402

SECRET = new_secret()


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: the sender's 8 parallel connects would overflow it,
    # and a dropped SYN is sent again only after a second
    request_queue_size = 128
    daemon_threads = True


class Receiver:
    """Loopback receiver: when (time.perf_counter) each webhook-id arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        arrived = self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                arrived.setdefault(self.headers["webhook-id"], time.perf_counter())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def end_job(store: JobStore, job_id: str, url: str) -> str:
    with store.engine.begin() as c:  # the job's final status would be written here too
        job = {"id": job_id, "status": "done", "stems": ["vocals", "drums", "bass", "other"]}
        return enqueue(c, job_id=job_id, tenant="t", url=url, status="done", job_json=job)


async def delays(store: JobStore, receiver: Receiver, args: argparse.Namespace, poke: bool):
    """Milliseconds from each job's final write to its webhook's arrival."""
    started: dict[str, float] = {}
    async with httpx.AsyncClient(trust_env=False) as client:
        sender = WebhookSender(
            store, secret_for=lambda _: SECRET, client=client, owner="bench", poll_s=args.poll_s
        )
        await sender.start()
        try:
            for i in range(args.events):
                start = time.perf_counter()
                # in a thread, as the gateway's runner ends a job
                event_id = await asyncio.to_thread(end_job, store, f"job{i:04d}", receiver.url)
                started[event_id] = start
                if poke:
                    sender.poke()
                await asyncio.sleep(args.gap_ms / 1000)
            deadline = time.monotonic() + args.poll_s * 2 + 30
            while not set(started) <= set(receiver.arrived) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            await sender.stop()
    missing = set(started) - set(receiver.arrived)
    if missing:
        raise SystemExit(f"{len(missing)} of {len(started)} webhooks never arrived")
    return [(receiver.arrived[e] - t) * 1000 for e, t in started.items()]


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"p50 {statistics.median(ordered):7.1f} ms   p99 {p99:7.1f} ms   max {ordered[-1]:7.1f} ms"
    )


def bench(name: str, url: str, args: argparse.Namespace) -> None:
    store = JobStore(url)
    receiver = Receiver()
    load = os.getloadavg()[0]
    print(f"{name} ({args.events} events, {args.gap_ms:g} ms apart; load average {load:.1f})")
    try:
        poked = asyncio.run(delays(store, receiver, args, poke=True))
        print(f"  poked after commit   {summary(poked)}")
        polled = asyncio.run(delays(store, receiver, args, poke=False))
        print(f"  poll every {args.poll_s:g} s     {summary(polled)}")
    finally:
        receiver.stop()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    on_both_engines("bench-webhooks", lambda engine, url: bench(engine, url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
