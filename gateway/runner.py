"""The job runner: `concurrency` workers, each running one job at a time under a lease in the
job store, so that several gateways on one database share the work and each job is run by
exactly one of them at a time.

A worker takes a job the moment this gateway accepts it (`submit`), or claims the oldest
runnable job whose lease is free: never taken, released, or expired because the gateway that
held it died. While the job runs the worker renews the lease every `lease_s / 3`; a worker that
finds the lease taken by another gateway (or cannot renew it for `lease_s`) stops working on
the job. So a dead gateway's job is taken over at most `lease_s + claim_poll_s` after its last
renewal, by any gateway with a free worker; the new runner re-sends only the chunks the fuser
lacks (the pipeline asks it). No job is left `running` with nobody on it for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time

from anyio import to_thread

from common.errors import AudiosplitError, NotFound
from common.metrics import JOBS, JOBS_FINISHED
from common.waiting import woken
from gateway.pipeline import Pipeline
from gateway.store import STATUSES, JobCancelled, JobStore, StoreUnavailable

log = logging.getLogger("audiosplit.runner")


class LeaseLost(Exception):
    """Another gateway holds the job's lease now (or the job was deleted)."""


CANCEL_POLL_S = 0.5  # how often a running job's status is read: a cancel stops it this soon


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        pipeline: Pipeline,
        concurrency: int,
        *,
        gateway_id: str = "gateway",
        lease_s: float = 30.0,
        claim_poll_s: float = 2.0,
        on_end=None,
        clean_up=None,
    ):
        self.store = store
        self.pipeline = pipeline
        self.concurrency = concurrency
        self.gateway_id = gateway_id
        # this life of the gateway: a restarted one frees what its earlier life held
        self.owner = f"{gateway_id}/{secrets.token_hex(4)}"
        self.lease_s = lease_s
        self.claim_poll_s = claim_poll_s
        self.on_end = on_end  # (connection, job) -> None, in the job's last transaction
        self.clean_up = clean_up  # async (job_id) -> None: a cancelled job's files, everywhere
        self.submitted: asyncio.Queue[str] = asyncio.Queue()  # accepted here, not yet claimed
        self.workers: list[asyncio.Task] = []
        self.running: set[str] = set()

    async def start(self) -> None:
        # Interrupted by a stop or a crash of this same gateway: its jobs are claimable again
        # at once; the fuser keeps the chunks it has.
        freed = await to_thread.run_sync(self.store.release_owned_by, f"{self.gateway_id}/")
        if freed:
            log.info("freed %d leases held by an earlier run of gateway %s", freed, self.gateway_id)
        self.workers = [asyncio.create_task(self._work()) for _ in range(self.concurrency)]
        await self.refresh_gauges()

    async def stop(self) -> None:
        for w in self.workers:
            w.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)

    async def submit(self, job_id: str) -> None:
        """A job accepted here: an idle worker claims it at once; if none is idle it stays
        claimable by any gateway (this one's next free worker tries it first)."""
        self.submitted.put_nowait(job_id)
        await self.refresh_gauges()

    async def refresh_gauges(self) -> None:
        # store calls run in worker threads: during a database outage one retries for up to
        # db_retry_s, and the event loop must go on answering meanwhile
        try:
            counts = await to_thread.run_sync(self.store.counts)
        except StoreUnavailable:
            return  # gauges are not worth failing a request for
        for status in STATUSES:
            JOBS.labels(status).set(counts[status])

    async def _work(self) -> None:
        while True:
            job_id, was = await self._next_job()
            self.running.add(job_id)
            try:
                if was == "running":
                    log.info("resuming job %s (its lease was free)", job_id)
                    await to_thread.run_sync(
                        functools.partial(self.store.update, job_id, stage="resuming")
                    )
                await self._run_leased(job_id)
                JOBS_FINISHED.labels("done").inc()
            except asyncio.CancelledError:
                # The gateway is stopping: the job stays `running`; giving the lease back (in
                # `finally`) lets another gateway, or this one started again, resume it at once.
                raise
            except LeaseLost as e:
                log.warning("job %s: %s; stopped working on it", job_id, e)
            except JobCancelled as e:
                log.info("job %s %s: stopped, cleaning up its files", job_id, e)
                if self.clean_up is not None:
                    await self.clean_up(job_id)
            except StoreUnavailable as e:
                # not the job's fault: leave it for whoever claims it once the database is back
                log.warning("job %s interrupted, the job database is unavailable: %s", job_id, e)
            except AudiosplitError as e:
                await to_thread.run_sync(self._fail, job_id, e.code, e.message)
            except Exception as e:
                log.exception("job %s failed with an internal error", job_id)
                message = f"internal error: {type(e).__name__}"
                await to_thread.run_sync(self._fail, job_id, "internal_error", message)
            finally:
                self.running.discard(job_id)
                # in a thread, and waited for even when cancelled (the gateway stops): a lease
                # given back is claimable at once
                with contextlib.suppress(AudiosplitError):
                    await to_thread.run_sync(self.store.release, job_id, self.owner)
                await self.refresh_gauges()

    async def _next_job(self) -> tuple[str, str]:
        """Wait until this worker holds the lease of a job: (id, status before the claim).
        A job accepted here only wakes a worker up: which job is claimed is the store's fair
        order between tenants (taking accepted jobs in arrival order would put one tenant's
        single job behind another's 50)."""
        while True:
            if claimed := await self._claim(None):
                return claimed
            await woken(self.submitted.get(), self.claim_poll_s)

    async def _claim(self, job_id: str | None) -> tuple[str, str] | None:
        try:
            return await to_thread.run_sync(self.store.claim, self.owner, self.lease_s, job_id)
        except StoreUnavailable as e:
            log.warning("cannot claim jobs, the job database is unavailable: %s", e)
            await asyncio.sleep(self.claim_poll_s)
            return None

    async def _run_leased(self, job_id: str) -> None:
        """Run the job while renewing its lease and watching its status; LeaseLost when
        another gateway took it over or the lease could not be renewed for lease_s,
        JobCancelled when it was cancelled or deleted (no further chunk is sent: the
        pipeline's task is cancelled, and with it its requests in flight)."""
        job = asyncio.create_task(self.pipeline.run(job_id))
        renewed_at = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=min(CANCEL_POLL_S, self.lease_s / 3))
                if done:
                    return job.result()
                await self._raise_if_cancelled(job_id)
                if time.monotonic() - renewed_at < self.lease_s / 3:
                    continue
                try:
                    held = await to_thread.run_sync(
                        self.store.renew, job_id, self.owner, self.lease_s
                    )
                except StoreUnavailable:
                    # still ours unless the lease ran out meanwhile: someone may hold it now
                    held = time.monotonic() - renewed_at < self.lease_s
                    if held:
                        continue
                if not held:
                    await self._raise_if_cancelled(job_id)
                    raise LeaseLost("its lease is held by another gateway")
                renewed_at = time.monotonic()
        finally:
            if not job.done():
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)

    async def _raise_if_cancelled(self, job_id: str) -> None:
        try:
            status = (await to_thread.run_sync(self.store.get, job_id)).status
        except NotFound:
            raise JobCancelled("was deleted") from None
        except StoreUnavailable:
            return  # the renewal decides
        if status == "cancelled":
            raise JobCancelled("was cancelled")

    def _fail(self, job_id: str, code: str, message: str) -> None:
        JOBS_FINISHED.labels("failed").inc()
        log.warning("job %s failed: %s", job_id, message)
        try:
            self.store.transition(
                job_id,
                self.on_end,
                status="failed",
                stage="failed",
                error={"code": code, "message": message},
            )
        except AudiosplitError:
            pass  # deleted while it ran, or the database is gone: the next claimer retries
