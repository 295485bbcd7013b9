"""API keys and per-client rate limits: both off by default, switched on in settings."""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict

from fastapi import Request

from common.errors import AudiosplitError

API_KEY_HEADER = "x-api-key"
MAX_CLIENTS_TRACKED = 10_000


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
    if not any(secrets.compare_digest(given.encode(), k.encode()) for k in keys):
        raise Unauthorized("this service needs an API key: send it in the X-API-Key header")


class RateLimiter:
    """A token bucket per client address: `per_minute` submissions, refilled continuously."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        tokens, at = self.buckets.pop(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * rate)
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / rate)
            raise RateLimited(
                f"too many jobs from this client: at most {self.per_minute} a minute; "
                f"try again in {wait} s",
                retry_after_s=wait,
            )
        self.buckets[client] = (tokens - 1.0, now)
        while len(self.buckets) > MAX_CLIENTS_TRACKED:
            self.buckets.popitem(last=False)
