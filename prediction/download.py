"""First use fetches: whether the model hubs answer, and one shared download per model.

The download itself is the library's own (`demucs.pretrained.get_model`, openunmix's loaders),
run with the hubs online, so the files are verified as the library verifies them (torch.hub's
SHA-256 prefix in the file name, huggingface_hub's own hashes) and land where the offline
lookup finds them. This module only decides whether to try and makes concurrent jobs wait on
one download: it never imports a family (the family modules import it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from urllib.parse import urlsplit

import httpx

from common.config import Settings
from common.errors import ModelUnavailable

log = logging.getLogger("audiosplit.download")

CHECK_TIMEOUT_S = 2.0  # one HEAD to a hub: long enough for a slow link, short enough per job

_answers: dict[str, tuple[float, bool]] = {}  # url -> (monotonic time checked, answered)
_answers_lock = threading.Lock()


def hub_answers(url: str, ttl_s: float) -> bool:
    """Whether `url`'s host answers HTTP at all (any status), checked at most once per `ttl_s`.

    Offline, the libraries' own retries cost ~25 s per attempt; this costs one short HEAD a
    minute, so `model=auto` falls back at once."""
    now = time.monotonic()
    with _answers_lock:
        cached = _answers.get(url)
        if cached is not None and now - cached[0] < ttl_s:
            return cached[1]
    parts = urlsplit(url)
    try:
        httpx.head(f"{parts.scheme}://{parts.netloc}/", timeout=CHECK_TIMEOUT_S)
        answered = True
    except httpx.HTTPError:
        answered = False
    with _answers_lock:
        _answers[url] = (time.monotonic(), answered)
    if not answered:
        log.info("%s does not answer: treating the hub as offline", url)
    return answered


def fetch_refusal(settings: Settings, urls: list[str]) -> str | None:
    """None when weights may be fetched from one of `urls` now; else why not, for a person."""
    if not settings.auto_fetch:
        return "fetching on first use is off (AUTO_FETCH=false)"
    if settings.hf_hub_offline:
        return "the hubs are switched off (HF_HUB_OFFLINE=1)"
    if any(hub_answers(u, settings.network_check_ttl_s) for u in urls):
        return None
    hosts = " nor ".join(urlsplit(u).netloc for u in urls)
    return f"no network: neither {hosts} answered within {CHECK_TIMEOUT_S:.0f} s"


def download_failed(name: str, error: BaseException, timeout_s: float) -> ModelUnavailable:
    """The job's error for a failed download: what happened and what to do."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, TimeoutError) or "timed out" in str(error).lower():
        text = f"no data for {timeout_s:g} s (FETCH_TIMEOUT_S): {text}"
    return ModelUnavailable(
        f"{name}: downloading the weights failed ({text}). Nothing was kept; try again later, "
        f"run `./run.sh fetch-models {name}` where the network allows, or copy the file(s) "
        "into models/ by hand.",
        code="model_download_failed",
    )


class Downloads:
    """One download per model at a time: a second job asking for the same model waits for the
    first one's result instead of starting another."""

    def __init__(self) -> None:
        self._running: dict[str, Future] = {}
        self._lock = threading.Lock()

    def fetch(self, name: str, download: Callable[[], None]) -> None:
        """Run `download` for `name`, or wait for the one already running; re-raises its error.
        Blocks: call it in a worker thread."""
        with self._lock:
            future = self._running.get(name)
            owner = future is None
            if owner:
                future = self._running[name] = Future()
        assert future is not None
        if owner:
            try:
                start = time.perf_counter()
                log.info("downloading %s", name)
                download()
                log.info("downloaded %s in %.1fs", name, time.perf_counter() - start)
                future.set_result(None)
            except BaseException as e:
                log.warning("downloading %s failed: %s", name, e)
                future.set_exception(e)
            finally:
                with self._lock:
                    self._running.pop(name, None)
        future.result()

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)
