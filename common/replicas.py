"""Calls to a downstream service that may run as several replicas.

A pool is built from a service's URL list. A URL whose host name resolves to several addresses
(compose `--scale`, a Kubernetes headless Service) counts as one replica per address. Once the
pool has served its first request, a background task keeps it current: every `REFRESH_EVERY_S`
it re-resolves the names (pods that come and go are added and dropped within seconds) and asks
every replica's `/ready`; a replica that does not answer 200 gets no new requests until it does
again. Requests never wait for either: they read the last answer.

Each call goes to the ready replica with the fewest requests in flight. A failed or timed-out
call, a 5xx, or a connection lost mid-request (the replica died) is retried on another replica
with backoff; a refused connection marks the replica not ready at once (it is down or
restarting) and keeps being retried for the pool's grace time. A replica that fails
`FAILS_BEFORE_COOLDOWN` times in a row is left out for `COOLDOWN_S`. When no replica is ready
the pool still tries them all, so one replica that is starting is waited for, not skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from common.errors import UpstreamError
from common.logs import trace_headers
from common.metrics import CHUNK_RETRIES

log = logging.getLogger("audiosplit.replicas")

# A Kubernetes headless Service's DNS answer follows its ready pods within seconds (CoreDNS
# answers them with a 5 s TTL); the pool looks as often, so a new pod gets work soon after it
# is ready and a removed one none after at most this long.
REFRESH_EVERY_S = 2.0
PROBE_TIMEOUT_S = 5.0  # lenient: a predictor busy on every core answers slowly, not never
FAILS_BEFORE_COOLDOWN = 2
COOLDOWN_S = 10.0
BACKOFF_BASE_S = 0.25
MAX_BACKOFF_S = 2.0

# (host, port) -> the addresses the host has now; may raise OSError (an unknown name)
Resolver = Callable[[str, int | None], list[str]]


def system_resolver(host: str, port: int | None) -> list[str]:
    """The addresses `getaddrinfo` gives for a host (every pod of a headless Service)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    fails: int = 0
    cool_until: float = 0.0
    ready: bool | None = None  # the last /ready answer; None: not asked yet (counts as ready)


def _expand(url: str, resolve: Resolver = system_resolver) -> list[str]:
    """One URL -> one per address its host resolves to (itself if it is an IP, resolves to one
    address or to none: then the request's own error says what is wrong)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    if host in ("localhost",):
        return [url]
    try:
        addresses = sorted(set(resolve(host, parts.port)))
    except OSError:
        return [url]
    if len(addresses) <= 1:
        return [url]
    netloc = lambda a: (f"[{a}]" if ":" in a else a) + (f":{parts.port}" if parts.port else "")  # noqa: E731
    return [urlunsplit(parts._replace(netloc=netloc(a))) for a in addresses]


def _rendezvous(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{url}".encode(), digest_size=8).digest(), "big")


class ReplicaPool:
    def __init__(
        self,
        service: str,
        urls: list[str],
        client: httpx.AsyncClient,
        retries: int,
        connect_grace_s: float = 0.0,
        *,
        resolve: Resolver = system_resolver,
    ):
        """`resolve` answers a host's addresses (tests pass one whose answer changes)."""
        if not urls:
            raise ValueError(f"no URL configured for {service}")
        self.service = service
        self.urls = urls
        self.client = client
        self.retries = retries
        self.connect_grace_s = connect_grace_s  # default for `request`
        self.resolve = resolve
        self.replicas: dict[str, Replica] = {}
        self._resolved_at = 0.0
        self._watcher: asyncio.Task | None = None

    # ---- the replica set, kept current in the background ----

    def _set_replicas(self, current: list[str]) -> None:
        before = set(self.replicas)
        self.replicas = {u: self.replicas.get(u) or Replica(u) for u in current}
        self._resolved_at = time.monotonic()
        if before and before != set(current):
            added, gone = sorted(set(current) - before), sorted(before - set(current))
            log.info(
                "%s replicas: %d (added %s, removed %s)", self.service, len(current), added, gone
            )

    def _refresh(self) -> None:
        """Resolve now, on this thread (only before the watcher runs, or without a loop)."""
        self._set_replicas([u for url in self.urls for u in _expand(url, self.resolve)])

    async def refresh(self) -> None:
        """Resolve every name (in a thread: DNS blocks), then ask every replica's /ready."""
        expanded = await asyncio.gather(
            *(asyncio.to_thread(_expand, url, self.resolve) for url in self.urls)
        )
        self._set_replicas([u for urls in expanded for u in urls])
        await asyncio.gather(*(self._probe(r) for r in list(self.replicas.values())))

    async def _probe(self, replica: Replica) -> None:
        try:
            response = await self.client.get(replica.url + "/ready", timeout=PROBE_TIMEOUT_S)
            ready = response.status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready != replica.ready and replica.ready is not None:
            log.info("%s %s is %s", self.service, replica.url, "ready" if ready else "not ready")
        replica.ready = ready

    async def _watch(self) -> None:
        while not self.client.is_closed:  # closed: the service that owns it is shutting down
            try:
                await self.refresh()
            except Exception:  # a bug here must not stop discovery for good
                log.exception("refreshing the %s replicas failed; trying again", self.service)
            await asyncio.sleep(REFRESH_EVERY_S)

    async def start(self) -> None:
        """Start the background watcher (the first `request` does this); resolve the names
        now if they never were, but leave the /ready probes to the watcher."""
        loop = asyncio.get_running_loop()
        watcher = self._watcher
        if watcher is not None and not watcher.done() and watcher.get_loop() is loop:
            return
        self._watcher = loop.create_task(self._watch(), name=f"replicas-{self.service}")
        if not self.replicas:
            expanded = await asyncio.gather(
                *(asyncio.to_thread(_expand, url, self.resolve) for url in self.urls)
            )
            self._set_replicas([u for urls in expanded for u in urls])

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    # ---- choosing a replica ----

    def _usable(self, candidates: list[Replica]) -> list[Replica]:
        now = time.monotonic()
        ready = [r for r in candidates if r.ready is not False] or candidates
        return [r for r in ready if r.cool_until <= now] or ready

    def pick(self, exclude: set[str] = frozenset()) -> Replica:
        if not self.replicas:
            self._refresh()
        candidates = [r for r in self.replicas.values() if r.url not in exclude] or list(
            self.replicas.values()
        )
        usable = self._usable(candidates)
        least = min(r.in_flight for r in usable)
        return random.choice([r for r in usable if r.in_flight == least])

    def pick_sticky(self, key: str) -> Replica:
        """The same replica for the same key while it stays (job -> fuser). Rendezvous hashing:
        a replica that goes away or stops being ready moves only its own keys."""
        if not self.replicas:
            self._refresh()
        usable = self._usable(list(self.replicas.values()))
        return max(usable, key=lambda r: _rendezvous(key, r.url))

    async def request(
        self,
        method: str,
        path: str,
        *,
        sticky_key: str | None = None,
        timeout: float | None = None,
        connect_grace_s: float | None = None,
        **kwargs,
    ) -> httpx.Response:
        """Send to a replica, retrying other replicas on connection errors, timeouts and 5xx.

        4xx answers are returned as they are: the request itself is wrong, a retry will not help.
        """
        await self.start()
        headers = {**trace_headers(), **kwargs.pop("headers", {})}
        grace = self.connect_grace_s if connect_grace_s is None else connect_grace_s
        grace_until = time.monotonic() + grace
        tried: set[str] = set()
        last_error = ""
        attempt = 0
        while True:
            replica = self.pick_sticky(sticky_key) if sticky_key else self.pick(tried)
            tried.add(replica.url)
            replica.in_flight += 1
            refused = False
            try:
                response = await self.client.request(
                    method,
                    replica.url + path,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    **kwargs,
                )
                release_stream(response)
                if response.status_code < 500:
                    replica.fails = 0
                    return response
                last_error = f"{response.status_code} {error_message(response)}"
            except httpx.HTTPError as e:
                refused = isinstance(e, httpx.ConnectError)
                last_error = f"{type(e).__name__}: {e}"
            finally:
                replica.in_flight -= 1
            if refused:
                replica.ready = False  # down: no new requests until its /ready passes again
            replica.fails += 1
            if replica.fails >= FAILS_BEFORE_COOLDOWN:
                replica.cool_until = time.monotonic() + COOLDOWN_S
            attempt += 1
            log.warning(
                "%s %s%s failed (attempt %d): %s", method, replica.url, path, attempt, last_error
            )
            # A refused connection is a service (re)starting: within the grace time keep trying,
            # whatever the count, so a job resumed by a restarted gateway waits for the others.
            restarting = refused and time.monotonic() < grace_until
            if attempt > self.retries and not restarting:
                break
            CHUNK_RETRIES.labels(self.service).inc()
            backoff = min(MAX_BACKOFF_S, BACKOFF_BASE_S * 2 ** min(attempt - 1, 8))
            await asyncio.sleep(backoff * (0.5 + random.random()))
        raise UpstreamError(
            f"the {self.service} service failed after {attempt} attempts: {last_error}"
        )


def release_stream(response: httpx.Response) -> None:
    """Let a read response go as soon as its last reference does. httpx 0.28 keeps a reference
    cycle between a response and the stream that times it (encode/httpx#3733), so a response,
    its body and its request's body wait for the cyclic collector: by then they have outlived
    a few collections and sit in the oldest generation, collected seldom. A gateway sending a
    10-minute song's chunks (4 MB windows out, 14 MB stems back, 14 MB on to the fuser) held
    tens of them at once, more the more chunks a job had. The body is read and the stream
    closed here, so a new empty stream replaces the one that points back."""
    response.stream = httpx.ByteStream(b"")


def expect_ok(response, what: str) -> None:
    """A 4xx from a downstream service is our request's fault: surface its message."""
    if response.status_code >= 400:
        message = error_message(response)
        raise UpstreamError(f"{what} refused the request ({response.status_code}): {message}")


def error_message(response: httpx.Response) -> str:
    """The message of a service's error answer (`{"error": {"message": ...}}`), else its text."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
