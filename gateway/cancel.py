"""Cancel a job, and leave nothing of it behind: its fuser state and every file, here and in
the bucket.

Whoever stops the job cleans up: the gateway running it (its runner sees the status within
CANCEL_POLL_S, cancels the pipeline's task so no further chunk is sent, then cleans up); the
cancel or delete request itself when no gateway holds the job's lease; and, for a job whose
gateway died holding the lease, the sweep of any gateway once the lease has run out (a
cancelled job stays in stage `cancelling` until its cleanup is done).
"""

from __future__ import annotations

import asyncio
import logging
import time

from anyio import to_thread

from common.errors import AudiosplitError, NotFound
from gateway.jobfiles import job_files
from gateway.schedule import fuser_job_ids
from gateway.store import RUNNABLE, JobRecord

log = logging.getLogger("audiosplit.cancel")

LEASE_WAIT_S = 5.0  # a delete of a running job waits this long for its runner to stop


async def clean_up(gw, job_id: str) -> bool:
    """Delete a stopped job's fuser state and files (idempotent). True when all went; a
    cancelled job is then marked `cancelled` (stage), else it stays for the next sweep."""
    try:
        job = await to_thread.run_sync(gw.store.get, job_id)
    except NotFound:
        job = None
    complete = True
    resolved = job.options.get("resolved", {}) if job else {}
    for fuse_id in fuser_job_ids(job_id, resolved):
        try:
            response = await gw.pools.fuser.request(
                "DELETE", f"/jobs/{fuse_id}", sticky_key=fuse_id, connect_grace_s=0
            )
            complete &= response.status_code in (204, 404)
        except (AudiosplitError, OSError) as e:
            log.warning("job %s: cannot drop the fuser's state yet: %s", job_id, e)
            complete = False
    try:
        await to_thread.run_sync(job_files(gw.settings, job_id).delete)
    except (AudiosplitError, OSError) as e:
        log.warning("job %s: cannot delete its files yet: %s", job_id, e)
        complete = False
    if complete and job is not None and job.status == "cancelled":
        await to_thread.run_sync(
            lambda: gw.store.transition(job_id, only_from=("cancelled",), stage="cancelled")
        )
    return complete


async def cancel(gw, job_id: str) -> JobRecord | None:
    """Turn a queued or running job `cancelled` (with its webhook event); the files go now if
    no gateway runs it, else its runner cleans up. None when it had ended already."""
    job = await to_thread.run_sync(
        lambda: gw.store.transition(
            job_id, gw.on_job_end, only_from=RUNNABLE, status="cancelled", stage="cancelling"
        )
    )
    if job is None:
        return None
    log.info("job %s cancelled", job_id)
    owner, left = await to_thread.run_sync(gw.store.lease, job_id)
    if owner is None or left is None or left < 0:
        await clean_up(gw, job_id)
    return job


async def wait_until_stopped(gw, job_id: str) -> None:
    """A cancelled job's runner gives its lease back once it has stopped and cleaned up: wait
    for that (at most LEASE_WAIT_S: a dead gateway's lease is not waited out)."""
    deadline = time.monotonic() + LEASE_WAIT_S
    while time.monotonic() < deadline:
        try:
            owner, left = await to_thread.run_sync(gw.store.lease, job_id)
        except NotFound:
            return
        if owner is None or left is None or left < 0:
            return
        await asyncio.sleep(0.1)


async def clean_cancelled(gw) -> int:
    """The sweep's part: cancelled jobs nobody cleaned up (their gateway died). How many."""
    cleaned = 0
    for job in await to_thread.run_sync(gw.store.cancelled_to_clean):
        cleaned += await clean_up(gw, job.id)
    return cleaned
