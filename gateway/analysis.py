"""A job's analysis: windows fanned out to fft and cqt beside the separation, then the track.

Each 10.24 s window goes to fft (features, AST labels via the tone identifier, its pieces of
the onset, accent and loudness series) and cqt (key, its piece of the chroma), with 1.1 s of
real audio on each side so that its pieces equal the whole track's. The pieces are joined here
(kilobytes a minute) and sent back as whole-track series: fft's `/track` gives tempo, beats and
integrated loudness, cqt's `/track` the key and chords. When the stems are fused, their levels
per window (measured by the fuser as it writes them) are added, and `analysis.json` is written.
Analysis never fails a job: a failed call is recorded where it happened, with its error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from common.analysis_plan import hop_samples, track_frames, window_bounds
from common.constants import (
    ANALYSIS_CONTEXT,
    ANALYSIS_FRAME_HOP,
    AST_MODEL_ID,
    LOUDNESS_STEP,
    SAMPLE_RATE,
)
from common.instruments import stems_from_activity
from common.interfaces import (
    AnalysisWindow,
    TrackRhythm,
    TrackRhythmRequest,
    TrackTonal,
    TrackTonalRequest,
    WindowFeatures,
    WindowTonal,
)
from common.rawfile import RawArrayFile
from common.replicas import ReplicaPool, expect_ok
from common.wire import decode, encode

log = logging.getLogger("audiosplit.analysis")

WINDOW_CONCURRENCY = 2  # windows in flight per job: the AST forward is the long pole
FEATURE_KEYS = ("rms_db", "peak_db", "loudness_lufs", "spectral_centroid_hz", "spectral_rolloff_hz")


@dataclass
class TrackSeries:
    """The whole track's frame-level series, filled window by window."""

    n_samples: int
    onset: np.ndarray = field(init=False)
    accent: np.ndarray = field(init=False)
    chroma: np.ndarray = field(init=False)
    steps: np.ndarray = field(init=False)

    def __post_init__(self):
        frames = track_frames(self.n_samples)
        self.onset = np.zeros(frames, dtype=np.float32)
        self.accent = np.zeros(frames, dtype=np.float32)
        self.chroma = np.zeros((12, frames), dtype=np.float32)
        self.steps = np.zeros(-(-self.n_samples // LOUDNESS_STEP), dtype=np.float64)


@dataclass
class Analysis:
    """What the windows found, before the stems' levels are known."""

    windows: list[dict]
    track: dict
    tone_model: dict
    warnings: list[str]


def window_requests(job_id: str, n: int, hop: int) -> list[tuple[AnalysisWindow, int, int]]:
    """(header, body start, body stop) of every window of a track of n samples."""
    frames = track_frames(n)
    out = []
    bounds = window_bounds(n, hop)
    for i, (start, stop) in enumerate(bounds):
        lo, hi = max(0, start - ANALYSIS_CONTEXT), min(n, stop + ANALYSIS_CONTEXT)
        last = i == len(bounds) - 1
        first_frame = start // ANALYSIS_FRAME_HOP
        own_frames = frames - first_frame if last else hop // ANALYSIS_FRAME_HOP
        header = AnalysisWindow(
            job_id=job_id,
            index=i,
            start_s=round(start / SAMPLE_RATE, 3),
            duration_s=round((stop - start) / SAMPLE_RATE, 3),
            start=start,
            context_before=start - lo,
            window_length=stop - start,
            own_length=min(hop, n - start),
            own_frames=own_frames,
        )
        out.append((header, lo, hi))
    return out


class Analyser:
    def __init__(self, fft: ReplicaPool, cqt: ReplicaPool, hop_s: float):
        self.fft = fft
        self.cqt = cqt
        self.hop = hop_samples(hop_s)

    async def run(self, job_id: str, track: RawArrayFile) -> Analysis:
        n = track.shape[1]
        series = TrackSeries(n)
        limiter = asyncio.Semaphore(WINDOW_CONCURRENCY)

        async def one(header: AnalysisWindow, lo: int, hi: int) -> dict:
            # every window's task starts at once: read its samples only once it may send
            # them, or the whole track waits in memory (10 min: +225 MB)
            async with limiter:
                body, headers = encode(np.ascontiguousarray(track[:, lo:hi]), header)
                features, tonal = await asyncio.gather(
                    self._call(self.fft, "/analyse", body, headers),
                    self._call(self.cqt, "/analyse", body, headers),
                    return_exceptions=True,
                )
            return self._window_entry(header, features, tonal, series)

        requests = window_requests(job_id, n, self.hop)
        windows = await asyncio.gather(*(one(*r) for r in requests))
        track_info = await self._track(job_id, series, windows)
        tone = tone_model(windows)
        warnings = []
        failed = sum(1 for w in windows if w.get("errors"))
        if failed:
            warnings.append(f"analysis failed on {failed} of {len(windows)} windows")
        if track_info.get("errors"):
            warnings.append("track analysis failed: " + "; ".join(track_info["errors"]))
        # AST missing is a fact of the server, not of this job: the analysis' tone_model says
        # it (and the tone identifier's log, once); the job's warnings do not repeat it
        return Analysis(list(windows), track_info, tone, warnings)

    async def _call(self, pool: ReplicaPool, path: str, body: bytes, headers: dict):
        response = await pool.request("POST", path, content=body, headers=headers)
        expect_ok(response, f"the {pool.service} service")
        return response

    def _window_entry(self, header: AnalysisWindow, features, tonal, series: TrackSeries) -> dict:
        entry = header.model_dump(include={"index", "start_s", "duration_s"})
        entry.update(labels=[], stems_present=None, stems_present_source=None, key=None)
        errors = []
        if isinstance(features, BaseException):
            errors.append(f"features: {features}")
            entry.update(dict.fromkeys(FEATURE_KEYS))
            entry["tone"] = None
        else:
            values, meta = decode(features.content, features.headers, WindowFeatures)
            add_features(series, values, meta)
            entry.update({k: getattr(meta, k) for k in FEATURE_KEYS})
            entry["tone"] = {"status": meta.tone.status, "reason": meta.tone.reason}
            if meta.tone.status == "ok":
                entry["labels"] = [
                    label.model_dump(exclude={"version"}) for label in meta.tone.labels
                ]
                entry["stems_present"] = meta.tone.stems_present
                entry["stems_present_source"] = "ast"
        if isinstance(tonal, BaseException):
            errors.append(f"key: {tonal}")
            entry.update(key_reason=None, chroma=None)
        else:
            chroma, meta = decode(tonal.content, tonal.headers, WindowTonal)
            f0 = meta.first_frame
            series.chroma[:, f0 : f0 + chroma.shape[1]] = chroma
            entry["key"] = meta.key.model_dump(exclude={"version"}) if meta.key else None
            entry.update(key_reason=meta.key_reason or None, chroma=meta.chroma)
        if errors:
            entry["errors"] = errors
        return entry

    async def _track(self, job_id: str, series: TrackSeries, windows: list[dict]) -> dict:
        """Key, chords, tempo, beats and loudness of the whole track, from the joined series."""
        n = series.n_samples
        rhythm_body = np.concatenate([series.onset, series.accent, series.steps])
        rhythm_meta = TrackRhythmRequest(
            job_id=job_id, n_samples=n, n_frames=len(series.onset), n_blocks=len(series.steps)
        )
        rhythm, tonal = await asyncio.gather(
            self._call(self.fft, "/track", *encode(rhythm_body, rhythm_meta)),
            self._call(
                self.cqt,
                "/track",
                *encode(series.chroma, TrackTonalRequest(job_id=job_id, n_samples=n)),
            ),
            return_exceptions=True,
        )
        peaks = [w["peak_db"] for w in windows if w.get("peak_db") is not None]
        track = {
            "duration_s": round(n / SAMPLE_RATE, 3),
            "key": None,
            "tempo_bpm": None,
            "tempo_confidence": None,
            "beats_s": None,
            "downbeats_s": None,
            "chords": None,
            "loudness_lufs": None,
            "peak_dbfs": round(max(peaks), 2) if peaks else None,
            "reasons": {},
        }
        errors = []
        if isinstance(rhythm, BaseException):
            errors.append(f"tempo and loudness: {rhythm}")
        else:
            r = TrackRhythm.model_validate_json(rhythm.content)
            track.update(
                tempo_bpm=r.tempo_bpm,
                tempo_confidence=r.tempo_confidence,
                beats_s=r.beats_s,
                downbeats_s=r.downbeats_s,
                loudness_lufs=None if r.loudness_lufs is None else round(r.loudness_lufs, 2),
            )
            track["reasons"].update(tempo=r.rhythm_reason, downbeats=r.downbeats_reason)
            if r.loudness_lufs is None:
                track["reasons"]["loudness"] = "silent, or shorter than one 400 ms block"
        if isinstance(tonal, BaseException):
            errors.append(f"key and chords: {tonal}")
        else:
            t = TrackTonal.model_validate_json(tonal.content)
            track["key"] = t.key.model_dump(exclude={"version"}) if t.key else None
            track["chords"] = [c.model_dump(exclude={"version"}) for c in t.chords or []] or None
            track["reasons"].update(key=t.key_reason, chords=t.chords_reason)
        track["reasons"] = {k: v for k, v in track["reasons"].items() if v}
        if errors:
            track["errors"] = errors
        return track


def add_features(series: TrackSeries, values: np.ndarray, meta: WindowFeatures) -> None:
    """Put one window's pieces of the onset, accent and loudness series in place."""
    k, f0, b0 = meta.n_onset, meta.first_frame, meta.first_block
    series.onset[f0 : f0 + k] = values[:k]
    series.accent[f0 : f0 + k] = values[k : 2 * k]
    steps = values[2 * k : 2 * k + meta.n_blocks]
    stop = min(len(series.steps), b0 + len(steps))
    series.steps[b0:stop] += steps[: stop - b0]  # steps cut by a window boundary add up


def tone_model(windows: list[dict]) -> dict:
    """Whether AST labelled the windows: ok when any window got labels, else why not."""
    tones = [w["tone"] for w in windows if w.get("tone")]
    if any(t["status"] == "ok" for t in tones):
        return {"name": AST_MODEL_ID, "status": "ok", "available": True, "reason": ""}
    reason = next((t["reason"] for t in tones if t["reason"]), "no window reached the model")
    return {"name": AST_MODEL_ID, "status": "unavailable", "available": False, "reason": reason}


def with_stem_activity(
    analysis: Analysis, stems: list[str], activity_db: list[list[float]]
) -> dict:
    """The analysis JSON, with each window's stem levels, and stems present from those levels
    where AST gave none."""
    windows = []
    for i, window in enumerate(analysis.windows):
        window = dict(window)
        levels = activity_db[i] if i < len(activity_db) else None
        window["stem_activity"] = dict(zip(stems, levels, strict=True)) if levels else None
        if window["stems_present"] is None and levels and window.get("rms_db") is not None:
            window["stems_present"] = stems_from_activity(window["stem_activity"], window["rms_db"])
            window["stems_present_source"] = "stem_activity"
        windows.append(window)
    return {"track": analysis.track, "windows": windows, "tone_model": analysis.tone_model}


def failed_analysis(error: BaseException) -> Analysis:
    """What is written when the analysis itself broke (a bug): the job still succeeds."""
    log.exception("analysis failed", exc_info=error)
    # our bug: its text (which may name server paths) is for the log, not the client
    message = f"internal error ({type(error).__name__}; the gateway's log says why)"
    return Analysis(
        windows=[],
        track={"errors": [message]},
        tone_model={
            "name": AST_MODEL_ID,
            "status": "unavailable",
            "available": False,
            "reason": "the analysis failed (the gateway's log says why)",
        },
        warnings=[f"analysis failed: {message}"],
    )
