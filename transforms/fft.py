"""FFT service (port 8001): spectral features of one analysis window, and its AudioSet labels.

`POST /analyse`: body float32 `(2, n)` at 44.1 kHz, `AnalysisWindow` in the meta header ->
JSON `SpectralFeatures`. The window's AST log-mel goes to the tone identifier as a `ToneInput`;
analysis never fails a job, so when the tone identifier cannot answer, `tone` says
`unavailable` and why, and the features still come back.

Run: `uvicorn --factory transforms.fft:create_app`.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Annotated

import httpx
import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import ValidationError

from common.config import Settings, get_settings
from common.errors import UpstreamError
from common.interfaces import AnalysisWindow, SpectralFeatures, ToneInput, ToneResult
from common.replicas import ReplicaPool
from common.service import create_service_app
from common.wire import decode, encode
from transforms import features

TONE_TIMEOUT_S = 60.0  # one AST forward on a slow CPU takes seconds, not minutes
TONE_RETRIES = 2

router = APIRouter()


def get_tone_pool(request: Request) -> ReplicaPool:
    return request.app.state.tone


TonePool = Annotated[ReplicaPool, Depends(get_tone_pool)]


def measure(audio: np.ndarray) -> dict[str, float | None]:
    """Level, loudness and spectral shape of float32 `(2, n)` audio at 44.1 kHz."""
    centroid, rolloff = features.spectral_centroid_rolloff(np.mean(audio, axis=0))
    return {
        "rms_db": features.rms_db(audio),
        "peak_db": features.peak_db(audio),
        "loudness_lufs": features.integrated_loudness(audio),
        "spectral_centroid_hz": centroid,
        "spectral_rolloff_hz": rolloff,
    }


def unavailable(reason: str) -> ToneResult:
    return ToneResult(status="unavailable", reason=reason)


def refusal_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


async def identify_tone(pool: ReplicaPool, fbank: np.ndarray, window: AnalysisWindow) -> ToneResult:
    """Forward a `(n_frames, n_mels)` log-mel to the tone identifier; never raises."""
    meta = ToneInput(
        job_id=window.job_id, index=window.index, n_frames=fbank.shape[0], n_mels=fbank.shape[1]
    )
    body, headers = encode(fbank, meta)
    try:
        response = await pool.request(
            "POST", "/identify", content=body, headers=headers, timeout=TONE_TIMEOUT_S
        )
    except (UpstreamError, httpx.HTTPError) as e:
        return unavailable(f"the tone identifier could not be reached: {e}")
    if response.status_code != 200:
        return unavailable(
            f"the tone identifier refused the window ({response.status_code}): "
            f"{refusal_message(response)}"
        )
    try:
        return ToneResult.model_validate_json(response.content)
    except ValidationError as e:
        return unavailable(f"the tone identifier sent an answer we cannot read: {e}")


@router.post("/analyse", response_model=SpectralFeatures)
async def analyse(request: Request, tone_pool: TonePool) -> SpectralFeatures:
    audio, window = decode(await request.body(), request.headers, AnalysisWindow)
    features.check_window(audio)
    if features.kaldi_frame_count(audio.shape[1]) == 0:
        tone = unavailable("the window is shorter than one 25 ms frame of the tone identifier")
        levels = await to_thread.run_sync(measure, audio)
    else:
        fbank = await to_thread.run_sync(features.ast_log_mel, audio)
        # The AST forward takes longest: the features are measured while it runs.
        tone, levels = await asyncio.gather(
            identify_tone(tone_pool, fbank, window), to_thread.run_sync(measure, audio)
        )
    return SpectralFeatures(index=window.index, tone=tone, **levels)


def create_app(
    settings: Settings | None = None, *, tone_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The fft service. `tone_transport` replaces the network to the tone identifier (tests
    pass an `httpx.ASGITransport`)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(TONE_TIMEOUT_S, connect=5.0), transport=tone_transport
        )
        app.state.tone = ReplicaPool("tone", settings.urls["tone"], client, TONE_RETRIES)
        app.state.ready = True
        try:
            yield
        finally:
            await client.aclose()

    return create_service_app(
        "fft",
        settings,
        routers=[router],
        lifespan=lifespan,
        description="Spectral features of an analysis window; AudioSet labels via the tone "
        "identifier.",
    )
