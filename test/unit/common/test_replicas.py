import asyncio
import socket

import httpx
import pytest

import common.replicas as replicas
from common.errors import UpstreamError
from common.replicas import ReplicaPool, _expand


def test_a_name_that_resolves_to_several_addresses_is_several_replicas(monkeypatch):
    def fake_getaddrinfo(host, port, type=0):
        assert host == "predictor"
        return [(socket.AF_INET, type, 6, "", (f"10.0.0.{i}", port)) for i in (3, 1, 2, 1)]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert _expand("http://predictor:8005") == [
        "http://10.0.0.1:8005",
        "http://10.0.0.2:8005",
        "http://10.0.0.3:8005",
    ]
    assert _expand("http://127.0.0.1:8005") == ["http://127.0.0.1:8005"]


def test_a_name_with_one_address_or_none_stays_the_name():
    def unknown(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert _expand("http://fuser:8006", lambda h, p: ["10.0.0.9"]) == ["http://fuser:8006"]
    assert _expand("http://fuser:8006", unknown) == ["http://fuser:8006"]
    assert _expand("http://[::1]:8006", unknown) == ["http://[::1]:8006"]
    assert _expand("http://p:1", lambda h, p: ["fd00::2", "fd00::1"]) == [
        "http://[fd00::1]:1",
        "http://[fd00::2]:1",
    ]


def pool_with(handler, urls, retries=2):
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ReplicaPool("predictor", urls, client, retries)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(replicas, "BACKOFF_BASE_S", 0.0)


def test_failed_calls_move_to_another_replica_and_a_failing_one_cools_down():
    seen = []

    def handler(request):
        if request.url.host == "a":
            raise httpx.ConnectError("refused")
        if request.url.path != "/ready":
            seen.append(request.url.host)
        return httpx.Response(200, json={"ok": True})

    pool = pool_with(handler, ["http://a:1", "http://b:1"])

    async def run():
        for _ in range(6):
            r = await pool.request("GET", "/x")
            assert r.status_code == 200

    asyncio.run(run())
    assert seen.count("b") == 6
    assert seen.count("a") <= replicas.FAILS_BEFORE_COOLDOWN  # then left out for the cool-down


def test_4xx_is_returned_not_retried_and_5xx_everywhere_is_an_upstream_error():
    calls = []

    def handler(request):
        if request.url.path == "/ready":
            return httpx.Response(200)
        calls.append(request.url.path)
        return httpx.Response(422 if request.url.path == "/bad" else 503, text="no")

    pool = pool_with(handler, ["http://a:1", "http://b:1"], retries=2)
    assert asyncio.run(pool.request("GET", "/bad")).status_code == 422
    assert calls == ["/bad"]
    with pytest.raises(UpstreamError, match="3 attempts"):
        asyncio.run(pool.request("GET", "/down"))


def test_least_in_flight_and_sticky_keys():
    pool = pool_with(lambda r: httpx.Response(200), ["http://a:1", "http://b:1", "http://c:1"])
    pool._refresh()
    pool.replicas["http://a:1"].in_flight = 2
    pool.replicas["http://b:1"].in_flight = 1
    pool.replicas["http://c:1"].in_flight = 0
    assert pool.pick().url == "http://c:1"
    assert pool.pick(exclude={"http://c:1"}).url == "http://b:1"
    assert {pool.pick_sticky("job-1").url for _ in range(5)} == {pool.pick_sticky("job-1").url}


def test_refused_connections_are_retried_through_the_grace_time_not_other_errors():
    calls = {"n": 0}

    def restarting(request):
        if request.url.path == "/ready":
            raise httpx.ConnectError("refused")  # one replica, not ready: tried all the same
        calls["n"] += 1
        if calls["n"] <= 6:
            raise httpx.ConnectError("refused")  # the service is starting again
        return httpx.Response(200)

    pool = pool_with(restarting, ["http://a:1"], retries=1)
    assert asyncio.run(pool.request("GET", "/x", connect_grace_s=30)).status_code == 200
    assert calls["n"] == 7
    calls["n"] = 0
    with pytest.raises(UpstreamError, match="2 attempts"):
        asyncio.run(pool.request("GET", "/x"))  # no grace: the attempt count rules

    def broken(request):
        return httpx.Response(200 if request.url.path == "/ready" else 500)

    with pytest.raises(UpstreamError, match="2 attempts"):
        asyncio.run(
            pool_with(broken, ["http://a:1"], retries=1).request("GET", "/x", connect_grace_s=30)
        )


def test_sticky_keys_move_only_off_a_replica_that_leaves():
    urls = [f"http://10.0.0.{i}:8006" for i in range(1, 5)]
    answer = {"now": [u.split("//")[1].split(":")[0] for u in urls]}
    pool = ReplicaPool(
        "fuser",
        ["http://fuser:8006"],
        httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))),
        1,
        resolve=lambda host, port: answer["now"],
    )
    pool._refresh()
    before = {f"job-{k}": pool.pick_sticky(f"job-{k}").url for k in range(200)}
    assert set(before.values()) == set(urls)  # spread over every replica
    answer["now"] = answer["now"][1:]  # 10.0.0.1 goes away
    pool._refresh()
    after = {key: pool.pick_sticky(key).url for key in before}
    moved = {key for key in before if before[key] != after[key]}
    assert moved == {key for key, url in before.items() if url == urls[0]}
    # not ready counts as away for new work, and its keys come back when it is ready again
    pool.replicas[urls[1]].ready = False
    assert all(pool.pick_sticky(k).url != urls[1] for k in before)
    pool.replicas[urls[1]].ready = True
    assert {key: pool.pick_sticky(key).url for key in before} == after
