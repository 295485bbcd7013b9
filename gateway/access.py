"""Who a request acts for (tenants, by API key) and the submission rate limit: keys are off
by default (AUTH=open), switched on by AUTH=keys or API_KEYS."""

from __future__ import annotations

import math
import secrets
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request

from common.errors import AudiosplitError, InvalidOption
from gateway.store import JobRecord, JobStore
from gateway.tenants import (
    DAY_S,
    OPEN,
    Tenant,
    settings_tenant,
    tenant_for_key,
    usage_window,
)

API_KEY_HEADER = "x-api-key"


class Unauthorized(AudiosplitError):
    code = "unauthorized"
    status = 401


class RateLimited(AudiosplitError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


def keys_on(settings) -> bool:
    return settings.auth == "keys" or bool(settings_keys(settings))


def settings_keys(settings) -> list[str]:
    return [k.strip() for k in settings.api_keys.split(",") if k.strip()]


def find_tenant(store: JobStore, settings, given: str) -> Tenant | None:
    """The tenant a key stands for: an API_KEYS key, or one in the job store (None: none)."""
    for key in settings_keys(settings):
        if secrets.compare_digest(given.encode(), key.encode()):
            return settings_tenant(key)
    return tenant_for_key(store, given)


async def authenticate(request: Request) -> Tenant:
    """Dependency of every /api route: who the request acts for (request.state.tenant).
    Open mode: the one owner. Keys on: the key's tenant, or 401 naming the header."""
    settings = request.app.state.settings
    if not keys_on(settings):
        request.state.tenant = OPEN
        return OPEN
    given = request.headers.get(API_KEY_HEADER, "")
    if not given:
        raise Unauthorized("this service needs an API key: send it in the X-API-Key header")
    store = request.app.state.gateway.store
    tenant = await to_thread.run_sync(find_tenant, store, settings, given)
    if tenant is None:
        raise Unauthorized(
            "the X-API-Key given is not a valid key for this service (unknown or revoked): "
            "check it for typos, or ask the server's admin for one"
        )
    request.state.tenant = tenant
    return tenant


Caller = Annotated[Tenant, Depends(authenticate)]


def may_see(tenant: Tenant, job: JobRecord) -> bool:
    """A job is its tenant's; an admin key sees every job."""
    return tenant.admin or job.tenant == tenant.id


class RateLimiter:
    """A token bucket per client address: `per_minute` submissions, refilled continuously.
    The buckets live in the job store, so gateways sharing a database share each client's
    limit: the (N+1)-th submission within a minute is refused whichever gateway it reaches."""

    def __init__(self, store: JobStore, per_minute: int):
        self.store = store
        self.per_minute = per_minute

    def check(self, client: str, who: str = "this client") -> None:
        """RateLimited when `client` has no token left (a store call: run it off the loop).
        With keys on, `client` is the tenant ("tenant:<id>", who="this key"), not the address:
        a customer's app behind one NAT is one client, two customers on one address are two."""
        if self.per_minute <= 0:
            return
        wait = self.store.take_token(client, self.per_minute)
        if wait > 0.0:
            retry_after_s = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many jobs from {who}: at most {self.per_minute} a minute; "
                f"try again in {retry_after_s} s",
                retry_after_s=retry_after_s,
            )


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def wait_words(seconds: float) -> str:
    hours, rest = divmod(int(math.ceil(seconds)), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{max(1, math.ceil(rest / 60))} min"


def check_quota(store: JobStore, tenant: Tenant, seconds: float) -> None:
    """QuotaExceeded when `seconds` more audio would take the tenant past its minutes a day
    (rolling 24 h), saying what is used, the limit and when room for this song frees up.
    A song longer than the whole quota can never fit: a 422, not a wait."""
    if tenant.minutes_per_day is None:
        return
    limit = tenant.minutes_per_day * 60.0
    if seconds > limit:
        raise InvalidOption(
            f"this song is {minutes(seconds)}, more than the {minutes(limit)} a day this key "
            "may separate",
            code="quota_exceeded",
        )
    used, accepted = usage_window(store, tenant.id)
    if used + seconds <= limit:
        return
    left = used
    wait = DAY_S
    for age_s, accepted_s in accepted:  # oldest first: when each leaves the 24 h window
        left -= accepted_s
        if left + seconds <= limit:
            wait = DAY_S - age_s
            break
    retry_after_s = max(1, math.ceil(wait))
    raise QuotaExceeded(
        f"this key's quota is {minutes(limit)} of audio a day (rolling 24 h): "
        f"{minutes(used)} used, and this song is {minutes(seconds)}; room for it frees up in "
        f"{wait_words(retry_after_s)}",
        retry_after_s=retry_after_s,
    )
