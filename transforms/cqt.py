"""CQT service (port 8002): constant-Q chroma and the key of one analysis window.

`POST /analyse`: body float32 `(2, n)` at 44.1 kHz, `AnalysisWindow` in the meta header ->
JSON `KeyEstimate` (`key` None when the window is silent or has no tonal content).

Run: `uvicorn --factory transforms.cqt:create_app`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import APIRouter, FastAPI, Request

from common.config import Settings, get_settings
from common.interfaces import AnalysisWindow, KeyEstimate
from common.service import create_service_app
from common.wire import decode
from transforms.features import check_window
from transforms.key import analyse_key, cqt_kernel

router = APIRouter()


@router.post("/analyse", response_model=KeyEstimate)
async def analyse(request: Request) -> KeyEstimate:
    audio, window = decode(await request.body(), request.headers, AnalysisWindow)
    check_window(audio)
    result = await to_thread.run_sync(analyse_key, audio)
    return KeyEstimate(
        index=window.index,
        key=result.key,
        confidence=round(result.confidence, 4),
        chroma=[round(float(c), 6) for c in result.chroma],
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The kernel bank is built once (~0.1 s) before the first request, not during it.
        await to_thread.run_sync(cqt_kernel)
        app.state.ready = True
        yield

    return create_service_app(
        "cqt",
        settings,
        routers=[router],
        lifespan=lifespan,
        description="Constant-Q chroma and Krumhansl-Schmuckler key of an analysis window.",
    )
