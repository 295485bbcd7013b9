"""A whole track's key, chords and sections, from the mix or from the separated stems.

The gateway sends mono rows at 22.05 kHz once the stems are final (cqt's `POST /harmony`):
- with stems ("harmonic" = the sum of other / piano / guitar, "bass"), the key and chords come
  from the harmonic stems without drums or vocals (no HPSS needed) and the bass stem names each
  chord's root (transforms/key.py `stems_key`, transforms/chords.py `beat_chords`);
- from the mix alone (dsp, or analysis without stems), the harmonic part of the mix by HPSS, as
  the windows do.
Chords are decided beat by beat (on a 0.5 s grid without beats) and spelled from the key;
sections (transforms/sections.py) come from the mix, their boundaries on downbeats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.constants import ANALYSIS_RATE
from transforms import chords, key, sections
from transforms.rhythm import FRAME_S, length_below

MIN_KEY_S = 4.0  # s of audio: less holds too few chords for a key
MIN_CHORDS_S = 4.0


@dataclass(frozen=True)
class Harmony:
    key: key.KeyResult
    chords: list[tuple[float, float, str]] | None  # (start_s, end_s, label)
    chords_reason: str
    sections: list[tuple[float, float, str]] | None
    sections_reason: str


def track_harmony(
    rows: dict[str, np.ndarray],
    beats_s: list[float] | None,
    downbeats_s: list[float] | None,
) -> Harmony:
    """Key, chords and sections of a track given as mono rows at 22.05 kHz: "mix", and with
    separated stems "harmonic" and "bass" (either may be missing)."""
    mix = rows["mix"]
    duration = len(mix) / ANALYSIS_RATE
    if "harmonic" in rows:
        chroma = key.harmonic_stem_chroma(rows["harmonic"])
        bass = key.bass_stem_chroma(rows["bass"]) if "bass" in rows else None
        found = key.stems_key(chroma, bass)
    else:
        chroma = key.chroma_frames(mix)
        bass = None
        found = key.estimate_key(key.summed(chroma))
    if duration < MIN_KEY_S:
        found = key.KeyResult(None, None, 0.0, short(duration, MIN_KEY_S, "a key"))
    found = key.spelled(found)
    chord_list, chords_reason = track_chords(chroma, bass, beats_s, found, duration)
    parts = sections.find_sections(mix, beats_s, downbeats_s)
    section_list = (
        [(round(s.start_s, 3), round(s.end_s, 3), s.label) for s in parts.sections]
        if parts.sections
        else None
    )
    return Harmony(found, chord_list, chords_reason, section_list, parts.reason)


def track_chords(
    chroma: np.ndarray,
    bass: np.ndarray | None,
    beats_s: list[float] | None,
    found: key.KeyResult,
    duration: float,
) -> tuple[list[tuple[float, float, str]] | None, str]:
    """Beat-synchronous chord segments (s), or None and why."""
    if duration < MIN_CHORDS_S:
        return None, short(duration, MIN_CHORDS_S, "chord recognition")
    beat_frames = None
    if beats_s:
        beat_frames = np.round(np.asarray(beats_s) / FRAME_S).astype(int)
    if bass is not None and bass.shape != chroma.shape:
        n = min(bass.shape[1], chroma.shape[1])
        chroma, bass = chroma[:, :n], bass[:, :n]
    segments = chords.beat_chords(chroma, beat_frames, key.key_tuple(found), bass)
    out = [
        (round(s.start_frame * FRAME_S, 3), round(min(duration, s.end_frame * FRAME_S), 3), s.chord)
        for s in segments
    ]
    out = [c for c in out if c[1] > c[0]]
    if all(c[2] == "N" for c in out):
        return None, "no chord anywhere: no three notes sound together"
    return out, ""


def short(duration: float, minimum_s: float, what: str) -> str:
    return f"{length_below(duration, minimum_s)} of audio; {what} needs at least {minimum_s:g} s"
