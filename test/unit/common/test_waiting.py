"""A loop that waits for wake-ups with a time limit stops when it is cancelled, whenever the
cancel comes (asyncio.wait_for on Python 3.11 swallows one that comes just after a wake-up)."""

import asyncio

import pytest

from common.waiting import woken


async def _wake_then_cancel(ticks: int) -> bool:
    """A loop like the webhook sender's: woken, then cancelled `ticks` loop turns later.
    Whether it stopped within 2 s (its wait is 1 s, so a lost cancel shows)."""
    wake = asyncio.Event()

    async def loop() -> None:
        while True:
            await woken(wake.wait(), 1.0)
            wake.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    wake.set()
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2.0)
    return bool(done) and task.cancelled()


@pytest.mark.parametrize("ticks", [0, 1, 2, 3])
def test_a_cancel_right_after_a_wake_up_stops_the_loop(ticks):
    assert asyncio.run(_wake_then_cancel(ticks))


def test_woken_says_whether_the_wake_up_came():
    async def run() -> tuple[bool, bool, int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        timed_out = await woken(queue.get(), 0.05)
        queue.put_nowait(1)
        came = await woken(queue.get(), 1.0)
        return timed_out, came, queue.qsize()

    assert asyncio.run(run()) == (False, True, 0)
