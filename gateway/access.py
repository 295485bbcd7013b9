"""API keys and per-client rate limits: both off by default, switched on in settings."""

from __future__ import annotations

import math
import secrets

from fastapi import Request

from common.errors import AudiosplitError
from gateway.store import JobStore

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


def check_api_key(request: Request) -> None:
    """Dependency of every /api route: with API_KEYS set, a known X-API-Key is required."""
    keys = [k.strip() for k in request.app.state.settings.api_keys.split(",") if k.strip()]
    if not keys:
        return
    given = request.headers.get(API_KEY_HEADER, "")
    if not given:
        raise Unauthorized("this service needs an API key: send it in the X-API-Key header")
    if not any(secrets.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Unauthorized(
            "the X-API-Key given is not a valid key for this service: check it for typos, or "
            "ask the server's admin for one"
        )


class RateLimiter:
    """A token bucket per client address: `per_minute` submissions, refilled continuously.
    The buckets live in the job store, so gateways sharing a database share each client's
    limit: the (N+1)-th submission within a minute is refused whichever gateway it reaches."""

    def __init__(self, store: JobStore, per_minute: int):
        self.store = store
        self.per_minute = per_minute

    def check(self, client: str) -> None:
        """RateLimited when `client` has no token left (a store call: run it off the loop)."""
        if self.per_minute <= 0:
            return
        wait = self.store.take_token(client, self.per_minute)
        if wait > 0.0:
            retry_after_s = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many jobs from this client: at most {self.per_minute} a minute; "
                f"try again in {retry_after_s} s",
                retry_after_s=retry_after_s,
            )
