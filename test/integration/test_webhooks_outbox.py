"""WebhookSender against real loopback receivers and a real job store (SQLite file, or the
tests' PostgreSQL): signed deliveries the spec's own library verifies, retries under one
webhook-id, a hanging receiver that holds up nobody else, redirects not followed, the egress
proxy's refusals, two senders sharing a database, and a sender killed -9 mid-attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import standardwebhooks

from common.ports import free_port
from gateway.egress import client_options
from gateway.egress_proxy import EgressProxy
from gateway.outbox import WebhookSender
from gateway.store import JobStore
from gateway.webhooks import enqueue, new_secret, webhook_events, webhook_state
from test.postgres import wait_accepting

REPO = Path(__file__).resolve().parents[2]
SECRET = new_secret()
SECRETS = {"t1": SECRET}
HANG_S = 60.0  # a hanging answer's longest wait (released at the end of each test)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class Receiver:
    """A webhook receiver on a loopback port, in a thread. `script[path]` says how to answer
    that path's requests in turn (the last answer repeats): a status code, "hang" (no answer
    until the test ends), or a redirect's Location."""

    def __init__(self, script: dict[str, list[int | str]], port: int | None = None):
        self.script = script
        self.port = port or free_port()
        self.received: list[Received] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    n = sum(r.path == self.path for r in receiver.received)
                    receiver.received.append(
                        Received(self.path, dict(self.headers), body, time.monotonic())
                    )
                answers = receiver.script.get(self.path, [404])
                answer = answers[min(n, len(answers) - 1)]
                if answer == "hang":
                    receiver.released.wait(HANG_S)
                    return
                if isinstance(answer, str):
                    self.send_response(302)
                    self.send_header("Location", answer)
                else:
                    self.send_response(answer)
                    self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, False)
        self._server.daemon_threads = True
        # socketserver listens with a backlog of 5: the senders' 16 parallel connects would
        # overflow it, and a dropped SYN is sent again only a second later
        self._server.request_queue_size = 128
        self._server.server_bind()
        self._server.server_activate()
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731 - quick stop
        threading.Thread(target=serve, daemon=True).start()

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver_factory() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(script: dict[str, list[int | str]], port: int | None = None, start=True) -> Receiver:
        receiver = Receiver(script, port)
        made.append(receiver)
        if start:
            receiver.start()
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[JobStore]:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    yield store
    store.close()


def add(store: JobStore, url: str, job_id: str = "j1", tenant: str = "t1") -> str:
    with store.engine.begin() as c:
        return enqueue(
            c, job_id=job_id, tenant=tenant, url=url, status="done", job_json={"id": job_id}
        )


def payload(store: JobStore, event_id: str) -> bytes:
    query = sa.select(webhook_events.c.payload).where(webhook_events.c.id == event_id)
    with store.engine.connect() as c:
        return c.execute(query).scalar_one().encode()


def verified(received: Received) -> dict:
    return standardwebhooks.Webhook(SECRET).verify(received.body, received.headers)


@contextlib.asynccontextmanager
async def sending(store: JobStore, client: httpx.AsyncClient | None = None, **options):
    options = {"poll_s": 0.1, "owner": "test", "timeout_s": 5.0, **options}
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        sender = WebhookSender(store, secret_for=SECRETS.__getitem__, client=client, **options)
        await sender.start()
        stack.push_async_callback(sender.stop)
        yield sender


async def until(check: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (found := await asyncio.to_thread(check)):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)
    return found


def state_is(store: JobStore, job_id: str, status: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        state = webhook_state(store, job_id)
        return state if state and state["status"] == status else None

    return check


# --- one sender --------------------------------------------------------------------------------


def test_an_event_is_delivered_once_signed_with_the_stored_body(sqlite_store, receiver_factory):
    receiver = receiver_factory({"/hook": [204]})

    async def run() -> float:
        # a poll far slower than the delivery asked for: the poke is what finds the event
        async with sending(sqlite_store, poll_s=10.0) as sender:
            await asyncio.sleep(0.2)  # the sender's first look is over: it waits for a poll
            start = time.monotonic()
            event_id = add(sqlite_store, receiver.url("/hook"))
            await asyncio.to_thread(sender.poke)  # as the runner's threads will
            state = await until(state_is(sqlite_store, "j1", "delivered"), 5, "delivered")
            assert state["attempts"] == 1 and state["id"] == event_id
            await asyncio.sleep(0.3)  # and no second attempt follows
            return receiver.at("/hook")[0].at - start

    took = asyncio.run(run())
    (got,) = receiver.at("/hook")
    assert took < 3.0  # the poll would have taken 10 s
    assert got.body == payload(sqlite_store, got.headers["webhook-id"])
    body = verified(got)
    assert body["type"] == "job.done" and body["data"] == {"id": "j1"}
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 5


def test_a_receiver_down_for_a_while_gets_the_event_when_it_is_back(sqlite_store, receiver_factory):
    """Down for 20 s (the issue's case). Attempts at 0, 0.7, 2.1, 4.9, 10.5 and 21.7 s (backoff
    0.7 s, doubling): the first five find nothing listening, the sixth finds it back."""
    receiver = receiver_factory({"/hook": [200]}, start=False)
    event_id = add(sqlite_store, receiver.url("/hook"))

    async def run() -> dict:
        async with sending(sqlite_store, backoff_s=0.7):
            await asyncio.sleep(20.0)
            down = webhook_state(sqlite_store, "j1")
            assert down["status"] == "pending" and down["attempts"] == 5, down
            assert down["last_error"].startswith("connection failed"), down
            receiver.start()
            return await until(state_is(sqlite_store, "j1", "delivered"), 15, "delivered")

    state = asyncio.run(run())
    assert state["attempts"] == 6 and state["last_error"] is None
    (got,) = receiver.at("/hook")
    assert got.headers["webhook-id"] == event_id and verified(got)


def test_a_failing_receiver_gets_every_retry_under_one_id_with_the_same_body(
    sqlite_store, receiver_factory
):
    receiver = receiver_factory({"/hook": [500, 503, 200]})
    event_id = add(sqlite_store, receiver.url("/hook"))

    async def run() -> None:
        async with sending(sqlite_store, backoff_s=0.2):
            await until(state_is(sqlite_store, "j1", "delivered"), 10, "delivered")

    asyncio.run(run())
    got = receiver.at("/hook")
    assert [r.headers["webhook-id"] for r in got] == [event_id] * 3
    assert {r.body for r in got} == {payload(sqlite_store, event_id)}
    for r in got:  # each attempt signed anew, each signature good
        verified(r)
    assert webhook_state(sqlite_store, "j1")["attempts"] == 3
    assert got[1].at - got[0].at >= 0.2 and got[2].at - got[1].at >= 0.4  # backing off


def test_a_500_is_recorded_and_retried(sqlite_store, receiver_factory):
    receiver = receiver_factory({"/hook": [500]})
    add(sqlite_store, receiver.url("/hook"))

    async def run() -> dict:
        async with sending(sqlite_store, backoff_s=0.2):
            return await until(
                lambda: (s := webhook_state(sqlite_store, "j1"))["attempts"] >= 2 and s,
                10,
                "a second attempt",
            )

    state = asyncio.run(run())
    assert state["status"] == "pending" and state["last_error"] == "HTTP 500 Internal Server Error"


def test_a_hanging_receiver_holds_up_no_other_delivery(sqlite_store, receiver_factory):
    receiver = receiver_factory({"/hang": ["hang"], "/ok": [200]})

    async def run() -> tuple[float, dict]:
        async with sending(sqlite_store, timeout_s=3.0, backoff_s=30.0) as sender:
            start = time.monotonic()
            add(sqlite_store, receiver.url("/hang"), job_id="slow")
            sender.poke()
            await until(lambda: receiver.at("/hang"), 2, "the hanging attempt")
            add(sqlite_store, receiver.url("/ok"), job_id="fast")
            sender.poke()
            await until(state_is(sqlite_store, "fast", "delivered"), 2.5, "the other delivery")
            other = time.monotonic() - start
            assert webhook_state(sqlite_store, "slow")["attempts"] == 0  # still hanging
            slow = await until(
                lambda: (s := webhook_state(sqlite_store, "slow"))["attempts"] and s, 8, "timeout"
            )
            return other, slow | {"after": time.monotonic() - start}

    other, slow = asyncio.run(run())
    assert other < 2.5
    assert slow["status"] == "pending" and slow["last_error"] == "no answer within 3 s"
    assert 2.9 < slow["after"] < 6  # cut off at timeout_s


def test_a_redirect_is_not_followed(sqlite_store, receiver_factory):
    receiver = receiver_factory({"/hook": []})
    elsewhere = receiver.url("/somewhere")
    receiver.script["/hook"] = [elsewhere]
    add(sqlite_store, receiver.url("/hook"))

    async def run() -> dict:
        async with sending(sqlite_store, backoff_s=30.0):
            return await until(
                lambda: (s := webhook_state(sqlite_store, "j1"))["attempts"] and s, 5, "attempt"
            )

    state = asyncio.run(run())
    assert state["last_error"] == f"redirected to {elsewhere}: webhooks do not follow redirects"
    assert receiver.at("/somewhere") == [] and len(receiver.at("/hook")) == 1


def test_a_tenant_that_no_longer_exists_fails_its_events(sqlite_store, receiver_factory):
    receiver = receiver_factory({"/hook": [200]})
    add(sqlite_store, receiver.url("/hook"), tenant="gone")

    async def run() -> dict:
        async with sending(sqlite_store):
            return await until(state_is(sqlite_store, "j1", "failed"), 5, "failed")

    state = asyncio.run(run())
    assert state["last_error"] == "tenant 'gone' no longer exists: no secret to sign with"
    assert receiver.received == []


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://127.0.0.1/hook", "not an http(s) URL"),
        ("http://[::1/hook", "not a valid URL"),
    ],
)
def test_a_url_no_attempt_can_reach_fails_at_once(sqlite_store, url, error):
    add(sqlite_store, url)

    async def run() -> dict:
        async with sending(sqlite_store):
            return await until(state_is(sqlite_store, "j1", "failed"), 5, "failed")

    state = asyncio.run(run())
    assert state["attempts"] == 1 and state["last_error"].startswith(error), state


@pytest.mark.parametrize("allow_private", [True, False], ids=["allowed", "refused"])
def test_through_the_egress_proxy(sqlite_store, receiver_factory, allow_private):
    """As the gateway sends: through its SSRF guard, which refuses loopback by default."""
    receiver = receiver_factory({"/hook": [200]})
    add(sqlite_store, receiver.url("/hook"))

    async def run() -> dict:
        proxy = EgressProxy(allow_private=allow_private)
        await proxy.start()
        try:
            async with (
                httpx.AsyncClient(**client_options(proxy.url)) as client,
                sending(sqlite_store, client, backoff_s=30.0),
            ):
                return await until(
                    lambda: (s := webhook_state(sqlite_store, "j1"))["attempts"] and s, 5, "attempt"
                )
        finally:
            await proxy.stop()

    state = asyncio.run(run())
    if allow_private:
        assert state["status"] == "delivered" and verified(receiver.at("/hook")[0])
    else:
        assert state["status"] == "pending" and receiver.received == []
        assert state["last_error"].startswith("refused by the egress proxy: "), state
        assert "loopback" in state["last_error"]


def test_a_database_outage_does_not_end_the_sender(postgres, pg_url, receiver_factory, caplog):
    receiver = receiver_factory({"/hook": [200]})
    store = JobStore(pg_url, retry_s=0.5)

    async def run() -> None:
        async with sending(store):
            await asyncio.to_thread(postgres.stop, "fast")
            try:
                await asyncio.sleep(1.5)  # claims meet the outage meanwhile
            finally:
                await asyncio.to_thread(postgres.start)
                await asyncio.to_thread(wait_accepting, postgres.url())
            add(store, receiver.url("/hook"))
            await until(state_is(store, "j1", "delivered"), 10, "delivered after the outage")

    with caplog.at_level(logging.WARNING, "audiosplit.webhooks"):
        try:
            asyncio.run(run())
        finally:
            store.close()
    assert any("job database is down" in r.getMessage() for r in caplog.records)
    assert len(receiver.at("/hook")) == 1


def test_a_stopped_sender_hands_its_attempt_back_at_once(sqlite_store, receiver_factory):
    receiver = receiver_factory({"/hook": ["hang", 200]})
    event_id = add(sqlite_store, receiver.url("/hook"))

    async def run() -> float:
        async with sending(sqlite_store, owner="a", timeout_s=30.0):  # a lease of 35 s
            await until(lambda: receiver.at("/hook"), 5, "the first attempt")
        stopped = time.monotonic()
        async with sending(sqlite_store, owner="b"):
            await until(state_is(sqlite_store, "j1", "delivered"), 5, "delivered")
        return stopped

    stopped = asyncio.run(run())
    first, second = receiver.at("/hook")
    assert second.at - stopped < 5  # not after the 35 s lease
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert webhook_state(sqlite_store, "j1")["attempts"] == 1


# --- several senders on one PostgreSQL database ------------------------------------------------


def test_two_senders_deliver_each_event_exactly_once(pg_url, receiver_factory):
    receiver = receiver_factory({"/hook": [200]})
    stores = [JobStore(pg_url), JobStore(pg_url)]
    ids = {add(stores[0], receiver.url("/hook"), job_id=f"j{i:02d}") for i in range(50)}

    async def run() -> None:
        async with sending(stores[0], owner="a"), sending(stores[1], owner="b"):
            await until(lambda: len(receiver.at("/hook")) >= 50, 20, "50 deliveries")
            await asyncio.sleep(0.5)  # time for a duplicate, were there one

    try:
        asyncio.run(run())
        states = {s["id"]: s for s in (webhook_state(stores[0], f"j{i:02d}") for i in range(50))}
    finally:
        for store in stores:
            store.close()
    got = [r.headers["webhook-id"] for r in receiver.at("/hook")]
    assert sorted(got) == sorted(ids)  # every event, none twice
    assert {s["status"] for s in states.values()} == {"delivered"}
    assert {s["attempts"] for s in states.values()} == {1}


KILLED_SENDER = """
import asyncio, sys
import httpx
from gateway.outbox import WebhookSender
from gateway.store import JobStore

async def main():
    async with httpx.AsyncClient(trust_env=False) as client:
        sender = WebhookSender(
            JobStore(sys.argv[1]), secret_for=lambda tenant: sys.argv[2], client=client,
            owner="doomed", timeout_s=float(sys.argv[3]), lease_margin_s=1.0, poll_s=0.1,
        )
        await sender.start()
        await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_sender_killed_mid_attempt_loses_no_event(pg_url, receiver_factory):
    """The first attempt's receiver hangs; its sender is killed -9 while it waits. Its lease
    (timeout 3 s + margin 1 s) runs out, and another sender makes the attempt again under the
    same webhook-id."""
    receiver = receiver_factory({"/hook": ["hang", 200]})
    store = JobStore(pg_url)
    event_id = add(store, receiver.url("/hook"))
    doomed = subprocess.Popen(
        [sys.executable, "-c", KILLED_SENDER, pg_url, SECRET, "3"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 20
        while not receiver.at("/hook"):
            assert doomed.poll() is None and time.monotonic() < deadline, "no first attempt"
            time.sleep(0.05)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    killed_at = time.monotonic()

    async def run() -> dict:
        async with sending(store, owner="survivor"):
            return await until(state_is(store, "j1", "delivered"), 10, "delivered")

    try:
        state = asyncio.run(run())
    finally:
        store.close()
    first, second = receiver.at("/hook")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert first.body == second.body and verified(second)
    # not before the dead sender's lease ran out (it began with the first attempt)
    assert second.at - first.at > 3.5 and second.at > killed_at
    assert state["attempts"] == 1  # the killed attempt never recorded an outcome
