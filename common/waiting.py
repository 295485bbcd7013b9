"""Waiting for a wake-up with a time limit, in loops that are stopped by cancelling them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def woken(wake: Awaitable[object], timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `wake` (an Event's or a Queue's wait); True when it came.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives just after
    the awaited thing finished (python/cpython#86296), and a loop stopped by cancelling it then
    runs on forever (a webhook sender's stop() hung for 10 minutes in a loaded test run).
    `asyncio.wait` never swallows it. A Queue item taken just as the time ran out is dropped:
    use this only where the item is a wake-up, not work."""
    waiting = asyncio.ensure_future(wake)
    try:
        done, _ = await asyncio.wait({waiting}, timeout=timeout_s)
    finally:
        waiting.cancel()
    return bool(done)
