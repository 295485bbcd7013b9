"""Songs given as a link (`url=`): checked when the job is submitted, fetched in its stage
`fetching`, decoded into its input like an upload.

Every connection goes through the gateway's egress proxy (gateway/egress_proxy.py), which resolves
each host and refuses private addresses at connection time; `check` only gives the early,
clear 422 for a link that is refused on its face.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from anyio import to_thread

from common.audio import decode_audio_to_file
from common.constants import SAMPLE_RATE
from common.errors import InvalidOption
from gateway.access import check_quota
from gateway.egress import EgressRefused, check_url
from gateway.egress_proxy import EgressProxy
from gateway.jobfiles import JobFiles
from gateway.store import JobCancelled, JobRecord, JobStore
from gateway.tenants import OPEN, Tenant, record_usage, tenant_by_id

if TYPE_CHECKING:
    from gateway.urlimport import Probe

log = logging.getLogger("audiosplit.fetching")

MAX_URL_CHARS = 2000
STAGE_EVERY_S = 0.5  # how often the job's stage shows the bytes fetched


def fetch_stage(done: int, total: int | None) -> str:
    if total:
        return f"fetching ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"
    return f"fetching ({done / 1e6:.1f} MB so far)"


def link_filename(probed: Probe) -> str:
    """A name for the downloads: the page's title, else the link's last path segment."""
    if probed.title:
        return probed.title
    return unquote(Path(urlsplit(probed.url).path).name) or "imported"


class Importer:
    def __init__(self, settings, proxy: EgressProxy):
        self.settings = settings
        self.proxy = proxy

    async def check(self, url: str, field: str) -> str:
        """A link the gateway may fetch or call, on its face: http(s), a host that resolves to
        public addresses only (unless ALLOW_PRIVATE_URLS). 422s name the field and the rule."""
        if len(url) > MAX_URL_CHARS:
            raise InvalidOption(f"{field} is longer than {MAX_URL_CHARS} characters")
        try:
            await check_url(url, self.settings.allow_private_urls)
        except EgressRefused as e:
            raise EgressRefused(f"{field}: {e.message}") from e
        return url

    async def probe(self, url: str) -> Probe:
        from gateway.urlimport import probe  # yt-dlp: imported on the first link, not at start

        probed = await probe(
            url,
            proxy_url=self.proxy.url,
            max_duration_s=self.settings.max_duration_s,
            max_bytes=self.settings.max_upload_bytes,
            timeout_s=self.settings.url_timeout_s,
            allow_private=self.settings.allow_private_urls,
        )
        return probed

    async def fetch_into(self, store: JobStore, job: JobRecord, files: JobFiles) -> JobRecord:
        """Fetch the job's link, decode it into the job's input (published for any gateway),
        count its minutes against its tenant's quota. The job with its length filled."""
        from gateway.urlimport import fetch

        settings = self.settings
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            """In yt-dlp's thread: the stage, and a stop when the job was cancelled (the
            download thread would otherwise run on after the job's task is gone)."""
            if time.monotonic() - last[0] >= STAGE_EVERY_S:
                last[0] = time.monotonic()
                stage = fetch_stage(done, total)
                if store.transition(job.id, only_from=("running",), stage=stage) is None:
                    raise JobCancelled("was cancelled while its link was fetched")

        files.dir.mkdir(parents=True, exist_ok=True)
        try:
            fetched = await to_thread.run_sync(
                lambda: fetch(
                    job.source_url,
                    files.upload_path,
                    proxy_url=self.proxy.url,
                    max_bytes=settings.max_upload_bytes,
                    max_duration_s=settings.max_duration_s,
                    timeout_s=settings.url_timeout_s,
                    deadline_s=settings.url_deadline_s,
                    on_progress=progress,
                )
            )
            decoded = await to_thread.run_sync(
                lambda: decode_audio_to_file(
                    fetched.path,
                    files.input_path,
                    min_duration_s=settings.min_duration_s,
                    max_duration_s=settings.max_duration_s,
                )
            )
        finally:
            files.upload_path.unlink(missing_ok=True)
        duration_s = round(decoded.n_frames / SAMPLE_RATE, 3)
        tenant = await to_thread.run_sync(self._tenant, store, job.tenant)
        await to_thread.run_sync(check_quota, store, tenant, duration_s)
        await to_thread.run_sync(files.publish, files.input_path)
        await to_thread.run_sync(record_usage, store, job.tenant, job.id, duration_s)
        log.info("fetched %s: %.1f s of audio", job.source_url, duration_s)
        return store.update(
            job.id,
            stage="queued",
            n_frames=decoded.n_frames,
            duration_s=duration_s,
            warnings=job.warnings + list(decoded.warnings),
            title=fetched.title or job.title,
        )

    @staticmethod
    def _tenant(store: JobStore, tenant_id: str) -> Tenant:
        """The job's tenant for its quota (an API_KEYS key or open mode: no quota)."""
        if not tenant_id:
            return OPEN
        return tenant_by_id(store, tenant_id) or Tenant(id=tenant_id, name=tenant_id)
