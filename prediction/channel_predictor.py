"""Channel predictor service (port 8005): separates chunks with the requested model.

`POST /plan` gives the chunk plan of a track for a model (the model knows its segment and the
window it needs); `POST /separate` takes a batch of windows and answers their centre-trimmed
stems. The default model is loaded before `/health` turns 200; others load on first use and stay.
A model whose weights are missing but can be fetched (`SeparatorInfo.fetchable`) is downloaded
first, once however many requests ask for it at once (`POST /models/{name}/fetch` does only that).
At start, the default model's missing weights are fetched in the background (`PREFETCH_MODELS`),
so that the first job finds them, or joins the download already under way.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from common.chunks import center_trim, plan_passes
from common.config import Settings, get_settings
from common.constants import AUTO_CHAIN, MODEL_NAMES
from common.errors import BadRequest, ModelUnavailable
from common.interfaces import PlanRequest, PlanResponse, SeparateMeta, SeparateResult, SeparatorInfo
from common.metrics import SEPARATION_SECONDS
from common.service import create_service_app
from common.wire import decode, encode
from prediction.download import Downloads
from prediction.registry import FAMILIES, ModelRegistry
from prediction.separator import Separator
from prediction.weights import models_dir_env

log = logging.getLogger("audiosplit.predictor")

router = APIRouter()


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


Registry = Annotated[ModelRegistry, Depends(get_registry)]


@router.get("/models", response_model=list[SeparatorInfo])
async def list_models(registry: Registry) -> list[SeparatorInfo]:
    return await to_thread.run_sync(registry.infos)


@router.get("/models/{name}", response_model=SeparatorInfo)
async def model_info(name: str, request: Request, registry: Registry) -> SeparatorInfo:
    """The model's info; while its weights download, `download` says how far (bytes, total)."""
    info = await to_thread.run_sync(registry.info, name)
    progress = request.app.state.downloads.progress(name)
    return info if progress is None else info.model_copy(update={"download": progress})


@router.post("/models/{name}/fetch", response_model=SeparatorInfo)
async def fetch_model(name: str, request: Request) -> SeparatorInfo:
    """Download `name`'s weights unless present (idempotent; concurrent calls share one
    download); answers when they are here, or 422 saying why they could not be had."""
    return await to_thread.run_sync(ensure_weights, request.app, name)


def ensure_weights(app: FastAPI, name: str) -> SeparatorInfo:
    """`name`'s info once its weights are here, fetching them first when they can be."""
    registry: ModelRegistry = app.state.registry
    if name in registry.loaded_names():
        return registry.info(name)
    info = registry.info(name)
    if info.available or name not in FAMILIES:
        return info
    if not info.fetchable:
        raise ModelUnavailable(info.reason)
    family = importlib.import_module(FAMILIES[name])
    settings = registry.settings
    plan = getattr(family, "download_plan", None)
    app.state.downloads.fetch(
        name,
        lambda: family.download(name, settings),
        plan=(lambda: plan(name, settings)) if plan else None,
        timeout_s=settings.fetch_timeout_s,
    )
    return registry.info(name)


async def separator_for(request: Request, name: str) -> Separator:
    """The loaded separator, its weights fetched first where they are missing but fetchable."""
    registry: ModelRegistry = request.app.state.registry
    if name not in registry.loaded_names():
        await to_thread.run_sync(ensure_weights, request.app, name)
    return await to_thread.run_sync(registry.get, name)


@router.post("/plan", response_model=PlanResponse)
async def plan(req: PlanRequest, request: Request) -> PlanResponse:
    separator = await separator_for(request, req.model)
    overlap = separator.info.overlap if req.overlap is None else req.overlap
    plans = plan_passes(
        req.n_frames,
        separator.info.segment,
        overlap,
        separator.padded_length,
        shifts=req.shifts,
        seed=req.seed,
        members=separator.member_weights(),
    )
    info = separator.info.model_copy(update={"batch_size": separator.preferred_batch()})
    return PlanResponse(model=info, plans=plans)


@router.post("/separate")
async def separate(request: Request) -> Response:
    body = await request.body()
    windows, meta = decode(body, request.headers, SeparateMeta)
    if windows.ndim != 3 or windows.shape[1] != 2 or windows.shape[0] != len(meta.chunks):
        raise BadRequest(
            f"expected (batch={len(meta.chunks)}, 2, window) float32, got {windows.shape}",
            code="bad_wire_format",
        )
    for chunk in meta.chunks:
        if chunk.window_length != windows.shape[2] or not 0 < chunk.length <= chunk.window_length:
            raise BadRequest(
                f"chunk {chunk.index}: window {chunk.window_length} / length {chunk.length} "
                f"do not fit a body of {windows.shape[2]} frames",
                code="bad_wire_format",
            )
    if len({c.length for c in meta.chunks}) > 1:
        raise BadRequest("all chunks of one request must have the same length")
    if not np.isfinite(windows).all():
        raise BadRequest("the windows contain NaN or infinite samples", code="bad_audio")

    separator = await separator_for(request, meta.model)
    limiter: asyncio.Semaphore = request.app.state.limiters.setdefault(
        separator.info.name, asyncio.Semaphore(separator.concurrency)
    )
    async with limiter:
        start = time.perf_counter()
        stems, warnings = await to_thread.run_sync(
            separator.separate_chunks, np.array(windows), meta.chunks
        )
        seconds = time.perf_counter() - start
    SEPARATION_SECONDS.labels(separator.info.name, separator.device).observe(seconds)
    trimmed = center_trim(stems, meta.chunks[0].length)
    result = SeparateResult(
        model=separator.info.name,
        stems=separator.info.stems,
        device=separator.device,
        seconds=round(seconds, 4),
        warnings=warnings,
    )
    out, headers = encode(trimmed, result)
    return Response(content=out, headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import os

        for key, value in models_dir_env(settings).items():
            os.environ.setdefault(key, value)
        app.state.registry = ModelRegistry(settings)
        app.state.downloads = Downloads()
        app.state.limiters = {}
        # Load what `model=auto` will pick before reporting healthy, so the first job does not
        # pay for loading (and a broken model shows at start, not in a job).
        await to_thread.run_sync(preload, app.state.registry)
        app.state.ready = True
        wanted = prefetch_names(settings)
        if wanted:
            threading.Thread(
                target=prefetch, args=(app, wanted), name="prefetch", daemon=True
            ).start()
        yield

    return create_service_app(
        "predictor",
        settings,
        routers=[router],
        lifespan=lifespan,
        description="Separates chunks of audio into stems (Demucs, Open-Unmix, dsp).",
        readiness=loaded_models,
    )


async def loaded_models(app: FastAPI) -> dict[str, str]:
    loaded = app.state.registry.loaded_names()
    return {"models": "ok" if loaded else "none loaded"} | {f"model {n}": "ok" for n in loaded}


def preload(registry: ModelRegistry) -> None:
    """Load what `model=auto` picks of what is here, and warm it up."""
    for name in AUTO_CHAIN["preview"]:
        if registry.info(name).available:
            warm_up(registry, name)
            return


def warm_up(registry: ModelRegistry, name: str) -> None:
    """Load `name` and run one silent window through it, so that the first chunk of the first
    job does not pay for the first forward's allocations (htdemucs, eager: the first two
    windows of a job took 6.3 s without, 4.3 s with; `bench_predictor`)."""
    separator = registry.get(name)
    start = time.perf_counter()
    window = separator.padded_length(separator.info.segment)
    separator.separate(np.zeros((1, 2, window), dtype=np.float32))
    log.info("%s warmed up in %.1fs", name, time.perf_counter() - start)


def prefetch_names(settings: Settings) -> list[str]:
    """The models `PREFETCH_MODELS` names: `auto` is the first of model=auto's chain, or the
    models `DEFAULT_MODEL` names where it names some; `none` (or empty) is none."""
    value = settings.prefetch_models.strip().lower()
    if value in ("", "none", "off", "false"):
        return []
    if value == "auto":
        value = settings.default_model.strip().lower()
        if value == "auto":
            return [AUTO_CHAIN["preview"][0]]
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = [n for n in names if n in MODEL_NAMES]
    if len(known) < len(names):
        log.warning("PREFETCH_MODELS: ignoring unknown model(s) in %r", value)
    return known


def prefetch(app: FastAPI, names: list[str]) -> None:
    """Fetch each of `names` whose weights are missing but fetchable, then load and warm it
    up; runs in its own thread after the predictor reports healthy. A job asking for one of
    them meanwhile waits for the same download (`Downloads.fetch`). Failures are logged only:
    the job that asks next tries again and says what went wrong."""
    registry: ModelRegistry = app.state.registry
    for name in names:
        try:
            info = registry.info(name)
            if info.available:
                continue
            if not info.fetchable:
                log.info("not fetching %s at start: %s", name, info.reason)
                continue
            log.info("fetching %s in the background (PREFETCH_MODELS)", name)
            if ensure_weights(app, name).available:
                warm_up(registry, name)
        except Exception as e:  # a background nicety: never take the predictor down
            log.warning("fetching %s at start failed: %s", name, e)
