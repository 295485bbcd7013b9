"""The webhook sender: empties the outbox (`gateway.webhooks`) of every gateway on the database.

Each gateway runs one `WebhookSender`. It claims due events with a lease of one attempt
(`timeout_s` plus a margin), so that two gateways never make the same attempt at once and an
attempt whose gateway died (killed -9, lost its machine) is made again by another once the
lease runs out, under the same webhook-id. Up to `parallel` attempts run at once, each cut off
after `timeout_s`: a receiver that hangs holds one slot that long and no more, and never holds
up a job, which only wrote its event. Store calls run in threads: the event loop they share
with the gateway's requests never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from common.errors import AudiosplitError
from common.waiting import woken
from gateway.egress import REFUSED_HEADER
from gateway.store import JobStore, StoreUnavailable
from gateway.webhooks import (
    Claim,
    InvalidSecret,
    claim_due,
    mark_delivered,
    mark_failed,
    release,
    signed_headers,
)

log = logging.getLogger("audiosplit.webhooks")

DELIVERIES = Counter(
    "audiosplit_webhook_attempts_total",
    "Webhook attempts by outcome (delivered, retry, failed)",
    ["outcome"],
)
USER_AGENT = "audiosplit-webhooks/1"


class WebhookSender:
    """Delivers due events until stopped: `start()` in the gateway's lifespan, `poke()` after
    committing an event, `stop()` at shutdown."""

    def __init__(
        self,
        store: JobStore,
        *,
        secret_for: Callable[[str], str],
        client: httpx.AsyncClient,
        owner: str,
        timeout_s: float = 10.0,
        retry_hours: float = 24.0,
        backoff_s: float = 5.0,
        poll_s: float = 1.0,
        parallel: int = 8,
        lease_margin_s: float = 5.0,
    ):
        """`secret_for`: a tenant's id -> its `whsec_` secret (KeyError: no such tenant now; its
        events fail). `client` is used with redirects off whatever it was made with. The lease
        of an attempt is `timeout_s + lease_margin_s`: the margin covers recording the outcome.
        `owner` names this sender (its task) among others."""
        self.store = store
        self.secret_for = secret_for
        self.client = client
        self.owner = owner
        self.timeout_s = timeout_s
        self.retry_s = retry_hours * 3600.0
        self.backoff_s = backoff_s
        self.poll_s = poll_s
        self.parallel = parallel
        self.lease_s = timeout_s + lease_margin_s
        self._attempts: dict[asyncio.Task[None], Claim] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"webhooks {self.owner}")

    async def stop(self) -> None:
        """Stop at once: attempts in progress are cut off and their leases given back, so that
        another gateway (or this one's next life) makes them again without waiting."""
        if self._task is None:
            return
        self._task.cancel()
        cut_off = list(self._attempts.items())
        for task, _ in cut_off:
            task.cancel()
        await asyncio.gather(self._task, *(t for t, _ in cut_off), return_exceptions=True)
        self._task = None
        for _, claim in cut_off:
            with contextlib.suppress(StoreUnavailable):
                await asyncio.to_thread(release, self.store, claim)

    def poke(self) -> None:
        """An event was just committed: look for due events now, not at the next poll. Safe from
        any thread."""
        if self._loop is None or self._wake is None:
            return
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            here = False
        if here:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to wake
                self._loop.call_soon_threadsafe(self._wake.set)

    # --- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            free = self.parallel - len(self._attempts)
            if free > 0:
                for claim in await self._claim(free):
                    task = asyncio.create_task(self._attempt(claim), name=f"webhook {claim.id}")
                    self._attempts[task] = claim
                    task.add_done_callback(self._finished)
            await woken(self._wake.wait(), self.poll_s)

    async def _claim(self, n: int) -> list[Claim]:
        claiming = asyncio.ensure_future(asyncio.to_thread(claim_due, self.store, n, self.lease_s))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # stopped while the claim ran: what it took is given back, not left to its lease
            with contextlib.suppress(Exception):
                for claim in await claiming:
                    await asyncio.to_thread(release, self.store, claim)
            raise
        except StoreUnavailable as e:
            log.warning("webhooks: cannot claim events, the job database is down: %s", e)
        except Exception:  # a bug here must not end deliveries for good
            log.exception("webhooks: claiming events failed")
        return []

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._attempts.pop(task, None)
        if self._wake is not None:
            self._wake.set()  # a slot is free: more may be due

    async def _attempt(self, claim: Claim) -> None:
        try:
            try:
                error, final = await self._send(claim)
            except Exception as e:  # recorded as a failed attempt: not retried every lease
                log.exception("webhook %s of job %s: sending broke", claim.id, claim.job_id)
                error, final = f"the gateway could not send it ({type(e).__name__})", False
            if error is None:
                await asyncio.to_thread(mark_delivered, self.store, claim)
                DELIVERIES.labels("delivered").inc()
                log.info(
                    "webhook %s of job %s delivered to %s (attempt %d)",
                    claim.id, claim.job_id, host_of(claim.url), claim.attempts + 1,
                )  # fmt: skip
                return
            status = await asyncio.to_thread(
                mark_failed,
                self.store,
                claim,
                error,
                backoff_s=self.backoff_s,
                retry_s=self.retry_s,
                final=final,
            )
            DELIVERIES.labels("failed" if status == "failed" else "retry").inc()
            log.warning(
                "webhook %s of job %s to %s: attempt %d failed (%s)%s",
                claim.id, claim.job_id, host_of(claim.url), claim.attempts + 1, error,
                {"failed": "; given up", None: "; its lease had run out"}.get(status, ""),
            )  # fmt: skip
        except StoreUnavailable as e:
            # the attempt's outcome is lost; its lease runs out and the event is sent again
            log.warning("webhook %s of job %s: outcome not recorded: %s", claim.id, claim.job_id, e)
        except Exception:
            log.exception(
                "webhook %s of job %s: attempt failed unexpectedly", claim.id, claim.job_id
            )

    async def _send(self, claim: Claim) -> tuple[str | None, bool]:
        """POST the event once: (None, _) when delivered, else (why not, whether retrying is
        useless). The whole attempt fits in `timeout_s`, the secret's lookup included: the
        lease counts on it."""
        stage = "secret"
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    secret = await asyncio.to_thread(self.secret_for, claim.tenant)
                except KeyError:
                    return f"tenant {claim.tenant!r} no longer exists: no secret to sign with", True
                body = claim.payload.encode()
                # the spec's timestamp is the attempt's (receivers refuse old ones): wall clock
                headers = signed_headers(secret, claim.id, int(time.time()), body)
                headers["user-agent"] = USER_AGENT
                stage = "post"
                return await self._post(claim.url, body, headers), False
        except InvalidSecret as e:
            return e.message, False
        except TimeoutError:
            if stage == "secret":
                return f"the tenant's secret was not read within {self.timeout_s:g} s", False
            return f"no answer within {self.timeout_s:g} s", False
        except httpx.UnsupportedProtocol as e:  # no later attempt can do better
            return describe(e), True
        except httpx.InvalidURL as e:
            return f"not a valid URL: {e}", True
        except httpx.HTTPError as e:
            return describe(e), False
        except AudiosplitError as e:  # one of ours, from a transport the client was made with
            return e.message, False

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        request = self.client.build_request("POST", url, content=body, headers=headers)
        response = await self.client.send(request, stream=True, follow_redirects=False)
        try:
            if response.is_success:
                return None
            refusal = response.headers.get(REFUSED_HEADER)
            if refusal is not None:  # a plain-http URL the egress proxy would not reach
                return f"refused by the egress proxy: {refusal}"
            if response.is_redirect:
                where = response.headers.get("location", "?")
                return f"redirected to {where}: webhooks do not follow redirects"
            answer = f"HTTP {response.status_code} {response.reason_phrase}"
            excerpt = await _excerpt(response)
            return f"{answer}: {excerpt}" if excerpt and excerpt not in answer else answer
        finally:
            await response.aclose()


async def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    """The start of an error answer's text, which often says why (never the rest of a large
    body)."""
    if not response.headers.get("content-type", "").startswith(("text/", "application/json")):
        return ""
    read = b""
    async for chunk in response.aiter_bytes():
        read += chunk
        if len(read) >= limit:
            break
    return " ".join(read[:limit].decode(errors="replace").split())


def host_of(url: str) -> str:
    """What the log says of a receiver: scheme, host and port. A callback URL's path and query
    may hold the receiver's own token."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port out of range, a broken IPv6 literal
        return "an invalid URL"


def describe(error: httpx.HTTPError) -> str:
    """A short reason for an attempt that got no answer (the receiver's address, not ours)."""
    kinds = {
        httpx.ConnectTimeout: "connection timed out",
        httpx.TimeoutException: "timed out",
        httpx.ConnectError: "connection failed",
        httpx.ProxyError: "the egress proxy did not connect",
        httpx.RemoteProtocolError: "the receiver broke the HTTP exchange",
        httpx.UnsupportedProtocol: "not an http(s) URL",
    }
    kind = next((v for k, v in kinds.items() if isinstance(error, k)), type(error).__name__)
    detail = str(error).strip()
    if isinstance(error, httpx.ProxyError) and detail.startswith("403 "):
        # a refused CONNECT (an https URL): httpcore says "403 <the proxy's reason>"
        return f"refused by the egress proxy: {detail[4:]}"
    return f"{kind}: {detail}" if detail else kind
