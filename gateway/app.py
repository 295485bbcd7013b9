"""The gateway (port 8000): upload page, REST API, job store and orchestration.

Run: `uvicorn --factory gateway.app:create_app`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from contextlib import asynccontextmanager

import httpx
from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from common.config import Settings, get_settings, split_urls
from common.errors import UpstreamError
from common.interfaces import SeparatorInfo
from common.replicas import ReplicaPool, expect_ok
from common.service import create_service_app
from gateway.access import RateLimiter
from gateway.api import job_json
from gateway.api import router as api_router
from gateway.cancel import clean_cancelled, clean_up
from gateway.downloads import router as downloads_router
from gateway.egress import client_options
from gateway.egress_proxy import EgressProxy
from gateway.fetching import Importer
from gateway.idempotency import forget_old as forget_old_keys
from gateway.jobfiles import drop_stale_caches, job_files
from gateway.outbox import WebhookSender
from gateway.page import router as page_router
from gateway.pipeline import Pipeline, Pools
from gateway.runner import JobRunner
from gateway.store import JobRecord, JobStore
from gateway.submit import router as submit_router
from gateway.tenants import forget_old_usage, tenant_by_id
from gateway.webhooks import enqueue, new_secret

log = logging.getLogger("audiosplit.gateway")

DECODES_AT_ONCE = 2  # decoding is CPU and memory heavy: bound it whatever the upload rate


class Gateway:
    """What the routes share: settings, the store, the runner, the downstream pools."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # opening the store runs its migrations (an older SQLite file is adopted in place)
        self.store = JobStore(settings.store_url, retry_s=settings.db_retry_s)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        # every outbound connection made for a client (a `url=` import, a webhook) goes
        # through this proxy, which refuses private addresses at connection time
        self.egress = EgressProxy(allow_private=settings.allow_private_urls)
        self.importer = Importer(settings, self.egress)
        self.webhook_client: httpx.AsyncClient | None = None
        self.sender: WebhookSender | None = None
        self._open_secret = settings.webhook_secret or new_secret()
        urls = settings.urls
        retries, grace = settings.chunk_retries, settings.downstream_grace_s
        self.pools = Pools(
            predictor=ReplicaPool("predictor", urls["predictor"], self.client, retries, grace),
            fuser=ReplicaPool("fuser", urls["fuser"], self.client, retries, grace),
            fft=ReplicaPool("fft", urls["fft"], self.client, 1),
            cqt=ReplicaPool("cqt", urls["cqt"], self.client, 1),
        )
        self.runner = JobRunner(
            self.store,
            Pipeline(settings, self.store, self.pools, self.on_job_end, self.importer),
            settings.job_concurrency,
            gateway_id=settings.gateway_id or f"{socket.gethostname()}:{settings.gateway_port}",
            lease_s=settings.lease_s,
            claim_poll_s=settings.claim_poll_s,
            on_end=self.on_job_end,
            clean_up=lambda job_id: clean_up(self, job_id),
        )
        self.decode_limiter = asyncio.Semaphore(DECODES_AT_ONCE)
        self.rate_limiter = RateLimiter(self.store, settings.rate_limit_per_minute)
        self.sweeper: asyncio.Task | None = None
        self.cleaner: asyncio.Task | None = None
        self._infos: dict[str, SeparatorInfo] = {}
        self._infos_at = 0.0

    async def start(self) -> None:
        await self.egress.start()
        self.webhook_client = httpx.AsyncClient(**client_options(self.egress.url))
        self.sender = WebhookSender(
            self.store,
            secret_for=self.webhook_secret,
            client=self.webhook_client,
            owner=self.runner.owner,
            timeout_s=self.settings.webhook_timeout_s,
            retry_hours=self.settings.webhook_retry_hours,
            backoff_s=self.settings.webhook_backoff_s,
        )
        await self.sender.start()
        await self.runner.start()

    def on_job_end(self, connection, job: JobRecord):
        """In the transaction that ends a job: its webhook event into the outbox. Returns
        what to do once that commits: wake the sender (before, it could look too early)."""
        if not job.callback_url:
            return None
        enqueue(
            connection,
            job_id=job.id,
            tenant=job.tenant,
            url=job.callback_url,
            status=job.status,
            job_json=job_json(job),
        )
        return self.sender.poke if self.sender is not None else None

    def webhook_secret(self, tenant_id: str) -> str:
        """The secret that signs a tenant's webhooks: its own; WEBHOOK_SECRET for the open
        mode and API_KEYS keys. KeyError for a tenant that is gone."""
        if not tenant_id or tenant_id.startswith("key-"):
            return self._open_secret
        tenant = tenant_by_id(self.store, tenant_id)
        if tenant is None or not tenant.webhook_secret:
            raise KeyError(tenant_id)
        return tenant.webhook_secret

    async def model_infos(self) -> dict[str, SeparatorInfo]:
        """The predictor's models and whether their weights are present (cached briefly)."""
        if self._infos and time.monotonic() - self._infos_at < self.settings.model_info_ttl_s:
            return self._infos
        # an upload waits for no restart: it fails fast and says why
        response = await self.pools.predictor.request("GET", "/models", connect_grace_s=0)
        expect_ok(response, "the channel predictor")
        try:
            infos = [SeparatorInfo.model_validate(i) for i in response.json()]
        except ValueError as e:
            raise UpstreamError(f"the channel predictor sent a bad model list: {e}") from e
        self._infos = {i.name: i for i in infos}
        self._infos_at = time.monotonic()
        return self._infos

    def sweep(self) -> list[str]:
        """Delete jobs (and their files) that ended longer than `retention_hours` ago."""
        cutoff = time.time() - self.settings.retention_hours * 3600
        expired = self.store.older_than(cutoff)
        for job_id in expired:
            # files first: a sweep killed between the two leaves the row, and the next sweep
            # finishes the job; the other order would leave files no row points to. Every
            # gateway sweeps: two meeting on one job delete it twice, which is harmless.
            job_files(self.settings, job_id).delete()
            self.store.delete(job_id)
        drop_stale_caches(self.settings, self.store)  # object storage: other gateways' deletes
        if expired:
            log.info(
                "retention: deleted %d jobs older than %.1f h",
                len(expired),
                self.settings.retention_hours,
            )
        self.store.forget_full_buckets()  # rate limit rows of clients that went quiet
        forget_old_usage(self.store)
        forget_old_keys(self.store, self.settings.idempotency_hours * 3600)
        return expired

    async def clean_cancelled_forever(self) -> None:
        """Every lease_s: the files of cancelled jobs whose gateway died before it could clean
        up (their lease has run out now). Cheap: one indexed query when there are none."""
        while True:
            await asyncio.sleep(self.settings.lease_s)
            try:
                await clean_cancelled(self)
            except Exception:
                log.exception("cleaning up cancelled jobs failed; trying again later")

    async def sweep_forever(self) -> None:
        """Sweep every `sweep_every_s`; the first sweep ran at start-up, before serving."""
        while True:
            await asyncio.sleep(self.settings.sweep_every_s)
            try:
                await to_thread.run_sync(self.sweep)
                await clean_cancelled(self)
            except Exception:
                log.exception("retention sweep failed; trying again later")

    async def downstream_checks(self) -> dict[str, str]:
        """Every replica this gateway sends work to now (its pools' current replicas, after
        DNS) answers /health as the service it should be, and the tone identifier the fft
        service forwards to (the same TONE_URLS / TONE_PORT settings). For `/ready`."""

        async def check(service: str, url: str) -> str:
            try:
                r = await self.client.get(url + "/health", timeout=2.0)
            except httpx.HTTPError as e:
                return f"unreachable: {type(e).__name__}"
            if r.status_code != 200:
                return f"/health answered {r.status_code}"
            try:
                answered = r.json().get("service")
            except (ValueError, AttributeError):
                answered = None
            if answered != service:
                return f"answers as {answered!r}, not as the {service} service: another program?"
            return "ok"

        targets = {
            f"{name} {url}": (name, url)
            for name, pool in vars(self.pools).items()
            for url in (pool.replicas or pool.urls)
        }
        targets.update({f"tone {url}": ("tone", url) for url in self.settings.urls["tone"]})
        results = await asyncio.gather(*(check(*t) for t in targets.values()))
        return dict(zip(targets, results, strict=True))

    async def close(self) -> None:
        for task in (self.sweeper, self.cleaner):
            if task is not None:
                task.cancel()
        await self.runner.stop()
        if self.sender is not None:
            await self.sender.stop()
        if self.webhook_client is not None:
            await self.webhook_client.aclose()
        await self.egress.stop()
        await self.client.aclose()
        self.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        gateway = Gateway(settings)
        app.state.gateway = gateway
        try:
            await to_thread.run_sync(gateway.sweep)
            await clean_cancelled(gateway)
        except Exception:
            log.exception("retention sweep at start-up failed; the sweeper tries again later")
        await gateway.start()
        gateway.sweeper = asyncio.create_task(gateway.sweep_forever())
        gateway.cleaner = asyncio.create_task(gateway.clean_cancelled_forever())
        app.state.ready = True
        try:
            yield
        finally:
            await gateway.close()

    app = create_service_app(
        "gateway",
        settings,
        routers=[page_router, submit_router, api_router, downloads_router],
        lifespan=lifespan,
        description="Upload a song (`POST /api/jobs`), poll its job until it is `done`, then "
        "download its stems, the multi-channel result or a ZIP, and its analysis. Every error "
        'is JSON `{"error": {"code", "message"}}`. An API key (header `X-API-Key`) is needed '
        "only where the gateway has keys on (AUTH=keys or API_KEYS); each key is a tenant that "
        "sees only its own jobs.",
        readiness=lambda app: app.state.gateway.downstream_checks(),
    )
    origins = split_urls(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type", "Idempotency-Key"],
        )
    return app
