"""A chained job's growth: the job's result is extended to the least of its links' final
frames, at most twice a second, `ready_s` stored from what the fuser answers; a failed
extension leaves the job running."""

from __future__ import annotations

import asyncio
import time

from common.constants import SAMPLE_RATE
from common.errors import UpstreamError
from common.interfaces import AssemblyStatus
from gateway.assembly import Growth
from gateway.store import JobRecord, JobStore

N = 10 * SAMPLE_RATE


def store_with_job(tmp_path) -> JobStore:
    store = JobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    store.insert(JobRecord(id="j", status="running", created_at=now, updated_at=now))
    return store


class Fuser:
    """Answers `extend` with the least of the links' frames it is told, or fails once."""

    def __init__(self, growth_ready, fail_first: bool = False):
        self.ready, self.fail, self.calls = growth_ready, fail_first, 0

    async def extend(self) -> AssemblyStatus:
        self.calls += 1
        if self.fail:
            self.fail = False
            raise UpstreamError("the channel fuser answered 503")
        return AssemblyStatus(job_id="j", ready_frames=min(self.ready()), n_frames=N)


def test_the_result_grows_to_the_least_link_at_most_twice_a_second(tmp_path, monkeypatch):
    store = store_with_job(tmp_path)
    growth = Growth(lambda: fuser.extend(), store, "j", 2)
    fuser = Fuser(lambda: growth.ready)

    async def run() -> None:
        await growth.link_ready(0, N)  # the first link done, the second not started
        assert fuser.calls == 0 and store.get("j").ready_s == 0
        await growth.link_ready(1, SAMPLE_RATE)
        assert fuser.calls == 1 and store.get("j").ready_s == 1.0
        await growth.link_ready(1, 2 * SAMPLE_RATE)  # within the interval: held back
        assert fuser.calls == 1 and store.get("j").ready_s == 1.0
        monkeypatch.setattr(Growth, "INTERVAL_S", 0.0)
        await growth.link_ready(1, 3 * SAMPLE_RATE)
        assert fuser.calls == 2 and store.get("j").ready_s == 3.0

    asyncio.run(run())


def test_a_failed_extension_is_left_and_the_next_catches_up(tmp_path, monkeypatch):
    monkeypatch.setattr(Growth, "INTERVAL_S", 0.0)
    store = store_with_job(tmp_path)
    growth = Growth(lambda: fuser.extend(), store, "j", 1)
    fuser = Fuser(lambda: growth.ready, fail_first=True)

    async def run() -> None:
        await growth.link_ready(0, SAMPLE_RATE)  # the fuser fails: no error, nothing stored
        assert fuser.calls == 1 and store.get("j").ready_s == 0
        await growth.link_ready(0, 2 * SAMPLE_RATE)
        assert fuser.calls == 2 and store.get("j").ready_s == 2.0

    asyncio.run(run())
