"""CQT service (port 8002): chroma and key of analysis windows; a track's key and chords.

`POST /analyse`: body float32 `(2, m)` at 44.1 kHz, `AnalysisWindow` in the meta header ->
`WindowTonal` in the meta header (the window's key, None when it has no tonal content, and its
summed chroma), body = float32 `(12, own_frames)`, its piece of the track's chroma.

`POST /track`: the whole track's chroma `(12, n_frames)` (joined from the windows' pieces by
the gateway), `TrackTonalRequest` in the meta header -> JSON `TrackTonal`: the key of the whole
track's chroma and the chord segments.

`POST /harmony`: mono rows at 22.05 kHz ("mix", with stems also "harmonic" and "bass") and the
beats, `MusicRequest` in the meta header -> JSON `TrackHarmony`: key, beat-synchronous chords
spelled from the key, and sections (transforms/harmony.py).

`POST /transcribe`: one stem's mono audio at 22.05 kHz -> JSON `Notes`: Basic Pitch's notes
(its harmonic CQT and network; transforms/transcribe.py), or kick, snare and hi-hat for drums.

Run: `uvicorn --factory transforms.cqt:create_app`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from common.config import Settings, get_settings
from common.constants import ANALYSIS_FRAME_HOP, SAMPLE_RATE
from common.errors import BadRequest
from common.interfaces import (
    AnalysisWindow,
    Chord,
    Key,
    MusicRequest,
    Notes,
    Section,
    TrackHarmony,
    TrackTonal,
    TrackTonalRequest,
    WindowTonal,
)
from common.jit import compile_lock
from common.once import Once
from common.service import create_service_app
from common.wire import decode, encode
from transforms import chords
from transforms import transcribe as transcription
from transforms.drum_notes import drum_notes
from transforms.features import check_window
from transforms.fft import check_music_body, warmed_up
from transforms.harmony import MIN_CHORDS_S, MIN_KEY_S, short, track_harmony
from transforms.key import KeyResult, chroma_frames, estimate_key, summed
from transforms.rhythm import FRAME_S, to_analysis_rate
from transforms.window import resolve

router = APIRouter(dependencies=[Depends(warmed_up)])


def key_of(result: KeyResult) -> Key | None:
    if result.tonic is None:
        return None
    return Key(tonic=result.tonic, mode=result.mode, confidence=round(result.confidence, 4))


def too_short(n_samples: int, minimum_s: float, what: str) -> str:
    return short(n_samples / SAMPLE_RATE, minimum_s, what)


def window_tonal(audio: np.ndarray, window: AnalysisWindow) -> tuple[np.ndarray, WindowTonal]:
    span = resolve(audio.shape[1], window)
    chroma = chroma_frames(to_analysis_rate(audio))
    start = span.window.start // ANALYSIS_FRAME_HOP
    stop = -(-span.window.stop // ANALYSIS_FRAME_HOP)
    vector = summed(chroma[:, start:stop])
    length = span.window.stop - span.window.start
    if length < MIN_KEY_S * SAMPLE_RATE:
        result = KeyResult(None, None, 0.0, too_short(length, MIN_KEY_S, "a key"))
    else:
        result = estimate_key(vector)
    own = chroma[:, span.local_frame : span.local_frame + span.own_frames]
    meta = WindowTonal(
        index=window.index,
        key=key_of(result),
        key_reason=result.reason,
        chroma=[round(float(c), 6) for c in vector],
        first_frame=span.first_frame,
    )
    return np.ascontiguousarray(own, dtype=np.float32), meta


def track_tonal(chroma: np.ndarray, n_samples: int) -> TrackTonal:
    """The key of the whole track's chroma and its chords (None with a reason where none)."""
    if n_samples < MIN_KEY_S * SAMPLE_RATE:
        key = KeyResult(None, None, 0.0, too_short(n_samples, MIN_KEY_S, "a key"))
    else:
        key = estimate_key(summed(chroma))
    if n_samples < MIN_CHORDS_S * SAMPLE_RATE:
        return TrackTonal(
            key=key_of(key),
            key_reason=key.reason,
            chords=None,
            chords_reason=too_short(n_samples, MIN_CHORDS_S, "chord recognition"),
        )
    duration = n_samples / SAMPLE_RATE
    segments = [
        Chord(
            start_s=round(s.start_frame * FRAME_S, 3),
            end_s=round(min(duration, s.end_frame * FRAME_S), 3),
            chord=s.chord,
        )
        for s in chords.recognise(chroma)
    ]
    segments = [s for s in segments if s.end_s > s.start_s]
    if all(s.chord == "N" for s in segments):
        return TrackTonal(
            key=key_of(key),
            key_reason=key.reason,
            chords=None,
            chords_reason="no chord anywhere: no three notes sound together",
        )
    return TrackTonal(key=key_of(key), key_reason=key.reason, chords=segments)


@router.post("/analyse", response_class=Response)
async def analyse(request: Request) -> Response:
    audio, window = decode(await request.body(), request.headers, AnalysisWindow)
    check_window(audio)
    own, meta = await to_thread.run_sync(window_tonal, audio, window)
    content, headers = encode(own, meta)
    return Response(content=content, headers=headers)


@router.post("/track", response_model=TrackTonal)
async def track(request: Request) -> TrackTonal:
    chroma, meta = decode(await request.body(), request.headers, TrackTonalRequest)
    if chroma.ndim != 2 or chroma.shape[0] != 12 or not np.isfinite(chroma).all():
        raise BadRequest(
            f"expected a finite float32 chroma of shape (12, n_frames), got {chroma.shape}",
            code="bad_track_series",
        )
    return await to_thread.run_sync(track_tonal, chroma, meta.n_samples)


HARMONY_ROWS = {"mix", "harmonic", "bass"}


@router.post("/harmony", response_model=TrackHarmony)
async def harmony(request: Request) -> TrackHarmony:
    values, meta = decode(await request.body(), request.headers, MusicRequest)
    check_music_body(values, meta)
    if "mix" not in meta.rows or set(meta.rows) - HARMONY_ROWS:
        raise BadRequest(
            f"rows must hold 'mix' and may hold 'harmonic' and 'bass', got {meta.rows}",
            code="bad_music_body",
        )
    rows = dict(zip(meta.rows, values, strict=True))
    found = await to_thread.run_sync(track_harmony, rows, meta.beats_s, meta.downbeats_s)
    return TrackHarmony(
        key=key_of(found.key),
        key_reason=found.key.reason,
        chords=[Chord(start_s=a, end_s=b, chord=c) for a, b, c in found.chords or []] or None,
        chords_reason=found.chords_reason,
        sections=[Section(start_s=a, end_s=b, label=c) for a, b, c in found.sections or []] or None,
        sections_reason=found.sections_reason,
    )


@router.post("/transcribe", response_model=Notes)
async def transcribe(request: Request) -> Notes:
    values, meta = decode(await request.body(), request.headers, MusicRequest)
    mono = check_music_body(values, meta)[0]
    if meta.stem == "drums":
        notes = await to_thread.run_sync(drum_notes, mono)
    else:
        model: Once[transcription.Transcriber] = request.app.state.transcriber
        transcriber = await to_thread.run_sync(model.get)  # loaded here under WARM_UP=false
        notes = await to_thread.run_sync(transcriber.transcribe, mono, meta.stem)
    return Notes(
        stem=meta.stem,
        notes=[(round(n.start_s, 4), round(n.end_s, 4), n.pitch, n.velocity) for n in notes],
    )


def warm_up() -> None:
    """librosa's numba kernels (CQT, Viterbi) compile on first use: seconds, before serving."""
    with compile_lock():  # one process compiles at a time (common/jit.py)
        _warm_up()


def _warm_up() -> None:
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((2, 5 * SAMPLE_RATE))).astype(np.float32)
    own, _ = window_tonal(audio, AnalysisWindow(index=0, start_s=0.0, duration_s=5.0))
    track_tonal(own, audio.shape[1])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.warm = Once(warm_up)
        app.state.transcriber = Once(transcription.Transcriber)
        if settings.warm_up:
            await to_thread.run_sync(app.state.warm.get)
            await to_thread.run_sync(app.state.transcriber.get)
        app.state.ready = True
        yield

    return create_service_app(
        "cqt",
        settings,
        routers=[router],
        lifespan=lifespan,
        description="Constant-Q chroma and key of analysis windows; a track's key, chords and "
        "sections; the notes of a stem (Basic Pitch).",
    )
