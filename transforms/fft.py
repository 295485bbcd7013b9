"""FFT service (port 8001): spectral features, labels and rhythm of analysis windows.

`POST /analyse`: body float32 `(2, m)` at 44.1 kHz, `AnalysisWindow` in the meta header ->
`WindowFeatures` in the meta header, body = the window's pieces of the track's onset strength,
accent and 100 ms loudness sums. The window's AST input (`ASTFeatureExtractor`) goes to the
tone identifier as a `ToneInput`; analysis never fails a job, so when the tone identifier cannot
answer, `tone` says `unavailable` and why, and the features still come back.

`POST /track`: the whole track's onset strength, accent and loudness sums (joined from the
windows' pieces by the gateway), `TrackRhythmRequest` in the meta header -> JSON `TrackRhythm`:
tempo, beats and integrated loudness. Beat tracking needs the whole track (a beat is a period
the onsets keep), but only its envelopes, a few kilobytes a minute.

`POST /beats`: mono audio at 22.05 kHz (the drums and bass stems summed, or the mix),
`MusicRequest` in the meta header -> JSON `TrackBeats`: tempo, beats, downbeats and metre by
BeatNet (or madmom's networks with `BEAT_MODEL=madmom`; transforms/beats.py).

Run: `uvicorn --factory transforms.fft:create_app`.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated

import httpx
import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import ValidationError

from common.config import Settings, get_settings
from common.constants import ANALYSIS_FRAME_HOP, LOUDNESS_STEP, SAMPLE_RATE
from common.errors import BadRequest, UpstreamError
from common.interfaces import (
    AnalysisWindow,
    MusicRequest,
    ToneInput,
    ToneResult,
    TrackBeats,
    TrackRhythm,
    TrackRhythmRequest,
    WindowFeatures,
)
from common.jit import compile_lock
from common.once import Once
from common.replicas import ReplicaPool
from common.service import create_service_app
from common.wire import decode, encode
from transforms import features, loudness, rhythm
from transforms.beats import BeatTracker
from transforms.window import WindowSpan, resolve

DOWNBEATS_REASON = "librosa's beat tracker follows beats, not bars: no downbeats"

TONE_TIMEOUT_S = 60.0  # one AST forward on a slow CPU takes seconds, not minutes
TONE_RETRIES = 2


async def warmed_up(request: Request) -> None:
    """Every route's first step (here and in the cqt service): warm up, once, where the
    lifespan did not (`WARM_UP=false`); callers meanwhile wait for the same warm-up."""
    once: Once[None] = request.app.state.warm
    if not once.done:
        await to_thread.run_sync(once.get)


router = APIRouter(dependencies=[Depends(warmed_up)])


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


def series(audio: np.ndarray, span: WindowSpan) -> tuple[np.ndarray, int]:
    """The window's own pieces of the track series, joined: onset strength and accent
    `(own_frames,)` each, then the 100 ms loudness sums; and how many loudness sums."""
    mono = rhythm.to_analysis_rate(audio)
    own = slice(span.local_frame, span.local_frame + span.own_frames)
    onset = rhythm.onset_envelope(mono)[own]
    accent = rhythm.accent_envelope(mono)[own]
    track_start = span.first_frame * ANALYSIS_FRAME_HOP
    steps = loudness.step_sums(audio, span.own_start, span.own_length, track_start)
    return np.concatenate([onset, accent, steps]).astype(np.float32), len(steps)


async def identify_tone(pool: ReplicaPool, fbank: np.ndarray, window: AnalysisWindow) -> ToneResult:
    """Forward AST's `(n_frames, n_mels)` input to the tone identifier; never raises."""
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


@router.post("/analyse", response_class=Response)
async def analyse(request: Request, tone_pool: TonePool) -> Response:
    audio, window = decode(await request.body(), request.headers, AnalysisWindow)
    features.check_window(audio)
    span = resolve(audio.shape[1], window)
    proper = np.ascontiguousarray(audio[:, span.window])
    ast_input = await to_thread.run_sync(features.ast_input, proper)
    measured = to_thread.run_sync(measure, proper)
    pieces = to_thread.run_sync(series, audio, span)
    if ast_input is None:
        tone = unavailable("the window is shorter than one 25 ms frame of the tone identifier")
        levels, (body, n_blocks) = await asyncio.gather(measured, pieces)
    else:
        # The AST forward takes longest: the rest is measured while it runs.
        tone, levels, (body, n_blocks) = await asyncio.gather(
            identify_tone(tone_pool, ast_input, window), measured, pieces
        )
    meta = WindowFeatures(
        index=window.index,
        tone=tone,
        first_frame=span.first_frame,
        n_onset=span.own_frames,
        first_block=window.start // LOUDNESS_STEP,
        n_blocks=n_blocks,
        **levels,
    )
    content, headers = encode(body, meta)
    return Response(content=content, headers=headers)


@router.post("/track", response_model=TrackRhythm)
async def track(request: Request) -> TrackRhythm:
    values, meta = decode(await request.body(), request.headers, TrackRhythmRequest)
    expected = 2 * meta.n_frames + meta.n_blocks
    if values.ndim != 1 or values.size != expected or not np.isfinite(values).all():
        raise BadRequest(
            f"expected {expected} finite values (onset and accent of {meta.n_frames} frames, "
            f"{meta.n_blocks} loudness sums), got shape {values.shape}",
            code="bad_track_series",
        )
    return await to_thread.run_sync(track_rhythm, values, meta)


def check_music_body(values: np.ndarray, meta: MusicRequest) -> np.ndarray:
    """The `(len(rows), n)` body of a whole-track music call, or a 400 naming what is wrong."""
    if values.ndim != 2 or values.shape[0] != len(meta.rows) or values.shape[1] == 0:
        raise BadRequest(
            f"expected float32 ({len(meta.rows)}, n): one row of mono 22.05 kHz audio for each of "
            f"{meta.rows}, got shape {values.shape}",
            code="bad_music_body",
        )
    if not np.isfinite(values).all():
        raise BadRequest("the audio holds NaN or infinite samples", code="bad_music_body")
    return values


@router.post("/beats", response_model=TrackBeats)
async def beats(request: Request) -> TrackBeats:
    values, meta = decode(await request.body(), request.headers, MusicRequest)
    mono = check_music_body(values, meta)[0]
    beats: Once[BeatTracker] = request.app.state.beats
    tracker = await to_thread.run_sync(beats.get)  # loaded here under WARM_UP=false
    found = await to_thread.run_sync(tracker.track, mono)
    return TrackBeats(
        tempo_bpm=found.tempo_bpm,
        tempo_confidence=found.confidence,
        beats_s=found.beats_s,
        downbeats_s=found.downbeats_s,
        time_signature=found.time_signature,
        model=found.model,
        licence=tracker.licence,
        reason=found.reason,
    )


def track_rhythm(values: np.ndarray, meta: TrackRhythmRequest) -> TrackRhythm:
    n = meta.n_frames
    onset, accent, steps = values[:n], values[n : 2 * n], values[2 * n :]
    tempo = rhythm.track_tempo(onset, accent, meta.n_samples / SAMPLE_RATE)
    return TrackRhythm(
        tempo_bpm=tempo.bpm,
        tempo_confidence=tempo.confidence,
        beats_s=tempo.beats_s,
        downbeats_s=None,
        rhythm_reason=tempo.reason,
        downbeats_reason=DOWNBEATS_REASON,
        loudness_lufs=loudness.integrated_from_steps(steps.astype(np.float64), meta.n_samples),
    )


def warm_up() -> None:
    """Run each library path once: librosa's numba kernels compile on first use (seconds)."""
    with compile_lock():  # one process compiles at a time (common/jit.py)
        _warm_up()


def _warm_up() -> None:
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((2, 8 * SAMPLE_RATE))).astype(np.float32)
    features.ast_input(audio)
    measure(audio)
    span = resolve(audio.shape[1], AnalysisWindow(index=0, start_s=0.0, duration_s=8.0))
    body, n_blocks = series(audio, span)
    n = span.own_frames
    track_rhythm(body, TrackRhythmRequest(n_samples=audio.shape[1], n_frames=n, n_blocks=n_blocks))


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
        app.state.warm = Once(warm_up)
        app.state.beats = Once(partial(BeatTracker, settings.beat_model))
        if settings.warm_up:
            await to_thread.run_sync(app.state.warm.get)
            await to_thread.run_sync(app.state.beats.get)
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
        description="Spectral features, onsets and loudness of analysis windows; AudioSet labels "
        "via the tone identifier; a track's tempo, beats, downbeats, metre and loudness.",
    )
