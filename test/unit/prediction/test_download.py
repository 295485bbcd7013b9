"""One shared download per model, and when a download is tried at all."""

from __future__ import annotations

import threading
import time

import pytest

from common.config import Settings
from common.errors import ModelUnavailable
from gateway.stack import free_port
from prediction.download import Downloads, download_failed, fetch_refusal


def test_concurrent_fetches_share_one_download():
    downloads, calls, started = Downloads(), [], threading.Event()

    def slow() -> None:
        calls.append(1)
        started.set()
        time.sleep(0.3)

    threads = [threading.Thread(target=downloads.fetch, args=("m", slow)) for _ in range(4)]
    threads[0].start()
    started.wait(5)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(5)
    assert calls == [1]
    assert downloads.running() == []


def test_a_failure_reaches_every_waiter_and_the_next_call_tries_again():
    downloads, calls = Downloads(), []

    def broken() -> None:
        calls.append(1)
        time.sleep(0.2)
        raise ModelUnavailable("m: broken")

    errors: list[str] = []

    def ask() -> None:
        try:
            downloads.fetch("m", broken)
        except ModelUnavailable as e:
            errors.append(e.message)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == ["m: broken"] * 3 and len(calls) == 1
    with pytest.raises(ModelUnavailable):
        downloads.fetch("m", broken)
    assert len(calls) == 2


def test_no_fetch_when_switched_off_or_offline():
    assert "AUTO_FETCH=false" in fetch_refusal(Settings(_env_file=None, auto_fetch=False), [])
    offline = Settings(_env_file=None, auto_fetch=True, hf_hub_offline=True)
    assert "HF_HUB_OFFLINE" in fetch_refusal(offline, ["http://127.0.0.1:1"])
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused at once
    start = time.perf_counter()
    why = fetch_refusal(Settings(_env_file=None, auto_fetch=True), [closed])
    assert why is not None and why.startswith("no network"), why
    assert time.perf_counter() - start < 3


def test_a_timeout_says_which_setting():
    error = download_failed("htdemucs", TimeoutError("timed out"), 3)
    assert "no data for 3 s (FETCH_TIMEOUT_S)" in error.message
    assert "./run.sh fetch-models htdemucs" in error.message
