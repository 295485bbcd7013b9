"""The job queue: a fixed number of jobs run at once; queued and interrupted jobs resume when
the gateway starts, and no job is left `running` when its task ends."""

from __future__ import annotations

import asyncio
import logging

from common.errors import AudiosplitError
from common.metrics import JOBS, JOBS_FINISHED
from gateway.pipeline import Pipeline
from gateway.store import STATUSES, JobStore

log = logging.getLogger("audiosplit.runner")


class JobRunner:
    def __init__(self, store: JobStore, pipeline: Pipeline, concurrency: int):
        self.store = store
        self.pipeline = pipeline
        self.concurrency = concurrency
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.workers: list[asyncio.Task] = []

    async def start(self) -> None:
        for job_id in self.store.ids_with_status("running", "queued"):
            # Interrupted by a stop or a crash: run it again; the fuser keeps the chunks it has.
            self.store.update(job_id, status="queued", stage="resuming")
            log.info("resuming job %s", job_id)
            self.queue.put_nowait(job_id)
        self.workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]
        self.refresh_gauges()

    async def stop(self) -> None:
        for w in self.workers:
            w.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)

    def submit(self, job_id: str) -> None:
        self.queue.put_nowait(job_id)
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        counts = self.store.counts()
        for status in STATUSES:
            JOBS.labels(status).set(counts[status])

    async def _work(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                await self.pipeline.run(job_id)
                JOBS_FINISHED.labels("done").inc()
            except asyncio.CancelledError:
                # The gateway is stopping: the job stays `running` and resumes on next start.
                raise
            except AudiosplitError as e:
                self._fail(job_id, e.code, e.message)
            except Exception as e:
                log.exception("job %s failed with an internal error", job_id)
                self._fail(job_id, "internal_error", f"internal error: {type(e).__name__}")
            finally:
                self.queue.task_done()
                self.refresh_gauges()

    def _fail(self, job_id: str, code: str, message: str) -> None:
        JOBS_FINISHED.labels("failed").inc()
        log.warning("job %s failed: %s", job_id, message)
        try:
            self.store.update(
                job_id, status="failed", stage="failed", error={"code": code, "message": message}
            )
        except AudiosplitError:
            pass  # deleted while it ran
