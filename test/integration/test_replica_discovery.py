"""Replica discovery against real servers: several uvicorn processes on loopback addresses
(127.0.0.2, .3, ...: all loopback on Linux) on one port, behind one service name whose DNS
answer the test changes through the pool's resolver hook, as a Kubernetes headless Service's
answer changes when pods come and go. The servers are test/integration/replica_app.py, built by
the project's service factory, so `/ready` is the real endpoint."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import weakref
from collections import Counter

import httpx
import pytest

import common.replicas as replicas
from common.replicas import ReplicaPool
from test.replicautil import NAME, Dns, Replicas, shared_free_port

SETTLE_S = 4 * replicas.REFRESH_EVERY_S + 3  # a bound for a change to be seen, not a speed figure
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 8)]


# elsewhere only 127.0.0.1 is a loopback address unless one adds aliases
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs 127.0.0.0/8 (Linux)")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    servers = Replicas(shared_free_port(ADDRESSES), tmp_path_factory.mktemp("replica_logs"))
    try:
        servers.start("127.0.0.2")
        servers.start("127.0.0.3")
        yield servers
    finally:
        servers.stop_all()


def pool_for(servers: Replicas, dns: Dns, client: httpx.AsyncClient, retries=2) -> ReplicaPool:
    return ReplicaPool("predictor", [f"http://{NAME}:{servers.port}"], client, retries, resolve=dns)


async def who(pool: ReplicaPool, n: int) -> Counter:
    """Which replicas answered n calls, a few at a time as the gateway sends chunks."""
    seen: Counter = Counter()
    for _ in range(0, n, 4):
        answers = await asyncio.gather(
            *(pool.request("POST", "/work", content=b"x") for _ in range(4))
        )
        seen.update(a.json()["replica"] for a in answers)
    return seen


async def until(condition, what: str) -> float:
    """Seconds until the async `condition()` holds; fails the test past SETTLE_S."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > SETTLE_S:
            raise AssertionError(f"{what}: not within {SETTLE_S:.0f}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def test_pods_that_come_and_go_are_found_and_dropped(servers):
    dns = Dns("127.0.0.2", "127.0.0.3")

    async def run():
        async with httpx.AsyncClient() as client:
            pool = pool_for(servers, dns, client)
            assert set(await who(pool, 16)) == {"127.0.0.2", "127.0.0.3"}

            # a pod is scheduled: it starts, turns ready, and DNS lists it
            servers.start("127.0.0.4")
            dns.addresses.append("127.0.0.4")
            await until(lambda: _reaches(pool, "127.0.0.4"), "a new replica gets work")

            # a pod is removed from DNS (scaled down, drained): it is still up, gets nothing
            dns.addresses.remove("127.0.0.2")
            await until(lambda: _gone(pool, servers.url("127.0.0.2")), "a removed replica is left")
            assert set(await who(pool, 24)) == {"127.0.0.3", "127.0.0.4"}
            await pool.aclose()

    try:
        asyncio.run(run())
    finally:
        servers.kill("127.0.0.4")
    assert dns.asked >= 3  # re-resolved in the background, not once


async def _reaches(pool: ReplicaPool, address: str) -> bool:
    return address in await who(pool, 8)


async def _gone(pool: ReplicaPool, url: str) -> bool:
    return url not in pool.replicas


def test_a_replica_that_fails_ready_gets_no_new_work_until_it_passes(servers):
    dns = Dns("127.0.0.2", "127.0.0.3")
    switch = servers.url("127.0.0.3") + "/readiness"

    async def run():
        async with httpx.AsyncClient() as client:
            pool = pool_for(servers, dns, client)
            assert set(await who(pool, 16)) == {"127.0.0.2", "127.0.0.3"}
            (await client.put(switch, params={"ready": "false"})).raise_for_status()
            await until(lambda: _not_ready(pool, servers.url("127.0.0.3")), "/ready seen failing")
            # still alive and serving what it has, but it gets no new work
            assert (await client.get(servers.url("127.0.0.3") + "/ready")).status_code == 503
            assert set(await who(pool, 40)) == {"127.0.0.2"}

            (await client.put(switch, params={"ready": "true"})).raise_for_status()
            await until(lambda: _reaches(pool, "127.0.0.3"), "a replica ready again gets work")
            await pool.aclose()

    asyncio.run(run())


async def _not_ready(pool: ReplicaPool, url: str) -> bool:
    replica = pool.replicas.get(url)
    return replica is not None and replica.ready is False


def test_a_request_in_flight_to_a_replica_that_dies_is_retried_on_another(servers):
    servers.start("127.0.0.5")
    dns = Dns("127.0.0.2", "127.0.0.5")
    doomed = servers.url("127.0.0.5")

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            pool = pool_for(servers, dns, client)
            await pool.start()
            # two slow chunks at once: least-in-flight sends one to each replica
            body = b"\0" * 100_000
            calls = [
                asyncio.create_task(pool.request("POST", "/work?delay_s=3", content=body))
                for _ in range(2)
            ]

            async def doomed_busy() -> bool:
                return (await client.get(doomed + "/in-flight")).json()["in_flight"] == 1

            await until(doomed_busy, "a chunk in flight on the replica to kill")
            servers.kill("127.0.0.5")  # kill -9 mid-request; DNS still lists it
            answers = await asyncio.gather(*calls)
            assert [a.json() for a in answers] == [{"replica": "127.0.0.2", "bytes": 100_000}] * 2
            # the dead replica is still in the DNS answer, but gets nothing new
            await until(lambda: _not_ready(pool, doomed), "a dead replica seen not ready")
            assert set(await who(pool, 16)) == {"127.0.0.2"}
            await pool.aclose()

    try:
        asyncio.run(run())
    finally:
        if "127.0.0.5" in servers.procs:
            servers.kill("127.0.0.5")


def test_when_no_replica_is_up_the_request_waits_for_one_within_the_grace_time(servers):
    """Every pod restarting at once (a rollout, a node lost): DNS lists them, none answers. The
    request keeps trying them through the grace time and goes through once one is up."""
    dns = Dns("127.0.0.6", "127.0.0.7")

    async def run():
        async with httpx.AsyncClient() as client:
            pool = ReplicaPool(
                "predictor", [f"http://{NAME}:{servers.port}"], client, 1, 120.0, resolve=dns
            )
            call = asyncio.create_task(pool.request("POST", "/work", content=b"x"))
            await asyncio.sleep(1.0)
            assert not call.done()
            assert {r.ready for r in pool.replicas.values()} == {False}
            await asyncio.to_thread(servers.start, "127.0.0.6")
            answer = await asyncio.wait_for(call, SETTLE_S)
            assert answer.json()["replica"] == "127.0.0.6"
            await pool.aclose()

    try:
        asyncio.run(run())
    finally:
        if "127.0.0.6" in servers.procs:
            servers.kill("127.0.0.6")


def test_an_answer_and_the_body_sent_go_with_their_last_reference(servers):
    """No reference cycle keeps a call's response, nor the request body it carried, for the
    cyclic collector (httpx 0.28 makes one): a gateway fanning out a long song's chunks held
    dozens of their multi-megabyte bodies at once. With the collector off, dropping the
    response frees both."""
    body = bytes(4 << 20)

    async def run() -> list[bool]:
        async with httpx.AsyncClient() as client:
            pool = ReplicaPool("predictor", [servers.url("127.0.0.2")], client, 2)
            response = await pool.request("POST", "/work", content=body)
            assert response.json()["bytes"] == len(body)
            refs = [weakref.ref(response), weakref.ref(response.request)]
            del response
            gone = [ref() is None for ref in refs]
            await pool.aclose()
            return gone

    gc.disable()
    try:
        assert asyncio.run(run()) == [True, True]
    finally:
        gc.enable()
