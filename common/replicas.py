"""Calls to a downstream service that may run as several replicas.

A pool is built from a service's URL list. A URL whose host name resolves to several addresses
(compose `--scale`, a Kubernetes headless service) counts as one replica per address; names are
re-resolved every `RESOLVE_EVERY_S` so scaled replicas are found. Each call goes to the replica
with the fewest requests in flight; a failed or timed-out call is retried on another replica with
backoff (a refused connection keeps being retried for the pool's grace time: the service is
restarting), and a replica that fails `FAILS_BEFORE_COOLDOWN` times in a row is left out for
`COOLDOWN_S` (unless every replica is cooling down).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
import zlib
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from common.errors import UpstreamError
from common.logs import trace_headers
from common.metrics import CHUNK_RETRIES

log = logging.getLogger("audiosplit.replicas")

RESOLVE_EVERY_S = 15.0
FAILS_BEFORE_COOLDOWN = 2
COOLDOWN_S = 10.0
BACKOFF_BASE_S = 0.25
MAX_BACKOFF_S = 2.0


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    fails: int = 0
    cool_until: float = 0.0


def _expand(url: str) -> list[str]:
    """One URL -> one per address its host resolves to (itself if it is an IP or unresolvable)."""
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
        infos = socket.getaddrinfo(host, parts.port, type=socket.SOCK_STREAM)
    except OSError:
        return [url]
    addresses = sorted({info[4][0] for info in infos})
    if len(addresses) <= 1:
        return [url]
    netloc = lambda a: (f"[{a}]" if ":" in a else a) + (f":{parts.port}" if parts.port else "")  # noqa: E731
    return [urlunsplit(parts._replace(netloc=netloc(a))) for a in addresses]


class ReplicaPool:
    def __init__(
        self,
        service: str,
        urls: list[str],
        client: httpx.AsyncClient,
        retries: int,
        connect_grace_s: float = 0.0,
    ):
        if not urls:
            raise ValueError(f"no URL configured for {service}")
        self.service = service
        self.urls = urls
        self.client = client
        self.retries = retries
        self.connect_grace_s = connect_grace_s  # default for `request`
        self.replicas: dict[str, Replica] = {}
        self._resolved_at = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.replicas and now - self._resolved_at < RESOLVE_EVERY_S:
            return
        self._resolved_at = now
        current = [u for url in self.urls for u in _expand(url)]
        self.replicas = {u: self.replicas.get(u) or Replica(u) for u in current}

    def pick(self, exclude: set[str] = frozenset()) -> Replica:
        self._refresh()
        now = time.monotonic()
        candidates = [r for r in self.replicas.values() if r.url not in exclude] or list(
            self.replicas.values()
        )
        warm = [r for r in candidates if r.cool_until <= now] or candidates
        least = min(r.in_flight for r in warm)
        return random.choice([r for r in warm if r.in_flight == least])

    def pick_sticky(self, key: str) -> Replica:
        """The same replica for the same key while the replica set is unchanged (job -> fuser)."""
        self._refresh()
        urls = sorted(self.replicas)
        return self.replicas[urls[zlib.crc32(key.encode()) % len(urls)]]

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
                if response.status_code < 500:
                    replica.fails = 0
                    return response
                last_error = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as e:
                refused = isinstance(e, httpx.ConnectError)
                last_error = f"{type(e).__name__}: {e}"
            finally:
                replica.in_flight -= 1
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


def expect_ok(response, what: str) -> None:
    """A 4xx from a downstream service is our request's fault: surface its message."""
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise UpstreamError(f"{what} refused the request ({response.status_code}): {message}")
