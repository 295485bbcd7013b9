"""The rate limit across gateways: two real gateway processes on one real PostgreSQL share
each client's bucket, so the (N+1)-th submission within the minute is refused whichever
gateway it reaches, and a burst spread over both gets exactly N through."""

from __future__ import annotations

import concurrent.futures
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from common.ports import free_port
from test.stackutil import spawn_gateway, wait_process_healthy

PER_MINUTE = 4


@pytest.fixture
def two_gateways(pg_url, tmp_path) -> Iterator[list[str]]:
    """Two gateways on one database; nothing behind them (the submissions here are refused
    for their body, after the limit counted them, as test_access's are)."""
    procs, urls = [], []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = {
                "DATA_DIR": str(tmp_path / name),
                "DATABASE_URL": pg_url,
                "GATEWAY_ID": f"gateway-{name}",
                "RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
                "PREDICTOR_URLS": "http://127.0.0.1:9",
            }
            proc = spawn_gateway(port, env)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
            wait_process_healthy(urls[-1], proc)
        yield urls
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def submit(url: str) -> httpx.Response:
    return httpx.post(url + "/api/jobs", content=b"x", timeout=30)


def test_the_next_submission_is_refused_by_either_gateway(two_gateways):
    a, b = two_gateways
    codes = [submit(url).status_code for url in (a, b, a, b)]
    assert codes == [400] * PER_MINUTE  # each counted, then refused for what it is
    for url in (a, b):
        r = submit(url)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60 // PER_MINUTE
        assert r.json()["error"]["code"] == "rate_limited"
    assert httpx.get(b + "/api/jobs", timeout=30).status_code == 200  # polling is not limited


def test_a_burst_over_both_gateways_gets_exactly_the_limit_through(two_gateways):
    urls = two_gateways * 6  # 12 submissions at once, half to each
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        codes = list(pool.map(lambda url: submit(url).status_code, urls))
    assert sorted(codes) == [400] * PER_MINUTE + [429] * (len(urls) - PER_MINUTE)
