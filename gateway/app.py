"""The gateway (port 8000): upload page, REST API, job store and orchestration.

Run: `uvicorn --factory gateway.app:create_app`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from common.config import Settings, get_settings
from common.errors import UpstreamError
from common.interfaces import SeparatorInfo
from common.replicas import ReplicaPool
from common.service import create_service_app
from gateway.api import router
from gateway.page import router as page_router
from gateway.pipeline import Pipeline, Pools, expect_ok
from gateway.runner import JobRunner
from gateway.store import JobStore

MODEL_INFO_TTL_S = 10.0
DECODES_AT_ONCE = 2  # decoding is CPU and memory heavy: bound it whatever the upload rate


class Gateway:
    """What the routes share: settings, the store, the runner, the downstream pools."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = JobStore(settings.data_dir / "jobs.sqlite3")
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )
        urls = settings.urls
        retries = settings.chunk_retries
        self.pools = Pools(
            predictor=ReplicaPool("predictor", urls["predictor"], self.client, retries),
            fuser=ReplicaPool("fuser", urls["fuser"], self.client, retries),
            fft=ReplicaPool("fft", urls["fft"], self.client, 1),
            cqt=ReplicaPool("cqt", urls["cqt"], self.client, 1),
        )
        self.runner = JobRunner(
            self.store, Pipeline(settings, self.store, self.pools), settings.job_concurrency
        )
        self.decode_limiter = asyncio.Semaphore(DECODES_AT_ONCE)
        self._infos: dict[str, SeparatorInfo] = {}
        self._infos_at = 0.0

    async def model_infos(self) -> dict[str, SeparatorInfo]:
        """The predictor's models and whether their weights are present (cached briefly)."""
        if self._infos and time.monotonic() - self._infos_at < MODEL_INFO_TTL_S:
            return self._infos
        response = await self.pools.predictor.request("GET", "/models")
        expect_ok(response, "the channel predictor")
        try:
            infos = [SeparatorInfo.model_validate(i) for i in response.json()]
        except ValueError as e:
            raise UpstreamError(f"the channel predictor sent a bad model list: {e}") from e
        self._infos = {i.name: i for i in infos}
        self._infos_at = time.monotonic()
        return self._infos

    async def close(self) -> None:
        await self.runner.stop()
        await self.client.aclose()
        self.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        gateway = Gateway(settings)
        app.state.gateway = gateway
        await gateway.runner.start()
        app.state.ready = True
        try:
            yield
        finally:
            await gateway.close()

    return create_service_app(
        "gateway",
        settings,
        routers=[page_router, router],
        lifespan=lifespan,
        description="Upload a song, get its stems back. See the README for the API.",
    )
