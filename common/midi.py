"""A Standard MIDI File of a song's notes: a track per stem, a tempo map from its beats.

Notes are given in seconds and stay at those seconds: the tempo map only decides where the
beats and bars fall in the file, so the MIDI plays in sync with the audio it came from whatever
the beat tracker found. Each beat is one quarter note (a stretch where the tracker lost the
beat counts the beats missing from it). A tempo change is written only where one tempo would
put the file's beats more than `BEAT_TOLERANCE_S` from the real ones, so a steady song gets one
tempo and a jittery beat track does not get one per beat. The stretch before the first beat
gets the whole number of beats nearest its length, and a short first bar (a pickup) makes the
bar lines fall on the downbeats.

The file is type 1: track 0 holds the tempo map and time signature (pretty_midi reads tempo
only there), then one track per stem, named after it, on its own channel with a General MIDI
program (`GM_PROGRAMS`); drums play on channel 10.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import mido
import numpy as np

from common.errors import InvalidOption

PPQ = 960  # ticks per quarter note: 0.5 ms at 120 BPM, well under the ±5 ms we promise
DEFAULT_BPM = 120.0  # the MIDI default, used when there are no beats and no tempo
DEFAULT_BEATS_PER_BAR = 4
BEAT_TOLERANCE_S = 0.01  # the file's beats stay this close to the given ones
DRUM_CHANNEL = 9  # channel 10 counted from 1
# slowest tempo written: ticks of 10 ms keep notes within 5 ms of their seconds (a set_tempo
# event could hold up to 16.8 s a quarter)
MAX_US_PER_QUARTER = 10_000 * PPQ  # 9.6 s a quarter, 6.25 BPM
# General MIDI programs, counted from 0 as in the file (pretty_midi's numbering)
GM_PROGRAMS = {
    "bass": 33,  # Electric Bass (finger)
    "vocals": 53,  # Voice Oohs
    "other": 0,  # Acoustic Grand Piano
    "piano": 0,
    "guitar": 25,  # Acoustic Guitar (steel)
}
DRUM_STEMS = {"drums"}


class NoteLike(Protocol):
    """What `midi_file` reads of a note (e.g. `Note`, or transforms' own note types)."""

    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...
    @property
    def pitch(self) -> int: ...
    @property
    def velocity(self) -> int: ...


@dataclass(frozen=True)
class Note:
    start_s: float  # seconds from the start of the audio
    end_s: float
    pitch: int  # MIDI note number (60 = middle C; a GM drum sound on the drum track)
    velocity: int  # 1..127


@dataclass(frozen=True)
class TempoSegment:
    """From `tick` (at `start_s` seconds) on, one quarter note lasts `us_per_quarter` µs."""

    tick: int
    start_s: float
    us_per_quarter: int


def midi_file(
    tracks: Mapping[str, Sequence[NoteLike]],
    tempo_bpm: float | None = None,
    beats_s: Sequence[float] | None = None,
    downbeats_s: Sequence[float] | None = None,
    time_signature: int | None = None,
) -> bytes:
    """The bytes of a type-1 Standard MIDI File with a named track per entry of `tracks`.

    `beats_s` (seconds, increasing) gives the tempo map; without two beats the file has one
    tempo, `tempo_bpm` or 120. `time_signature` is the beats per bar (x/4); without it, the
    median number of beats between `downbeats_s`, else 4. Stems named in `DRUM_STEMS` play GM
    drums on channel 10; other names get `GM_PROGRAMS[name]` (piano when unknown).
    """
    if time_signature is not None and not 1 <= time_signature <= 64:
        raise InvalidOption(f"time_signature must be 1..64 beats per bar, got {time_signature}")
    beats = _clean_beats(beats_s)
    per_bar = time_signature or _beats_per_bar(beats, downbeats_s) or DEFAULT_BEATS_PER_BAR
    pickup = 0  # quarter notes before the first full bar
    if len(beats) >= 2:
        quarters = beat_quarters(beats)
        segments = tempo_map(beats, quarters)
        pickup = int(quarters[_first_downbeat(beats, downbeats_s)]) % per_bar
    else:
        bpm = tempo_bpm if tempo_bpm and tempo_bpm > 0 else DEFAULT_BPM
        segments = [TempoSegment(0, 0.0, _us_per_quarter(60.0 / bpm))]

    midi = mido.MidiFile(type=1, ticks_per_beat=PPQ)
    conductor = mido.MidiTrack()
    metre = [(pickup * PPQ, _time_signature(per_bar))]
    if pickup:  # a short first bar, so that bars start on the downbeats
        metre.insert(0, (0, _time_signature(pickup)))
    tempi = [(s.tick, mido.MetaMessage("set_tempo", tempo=s.us_per_quarter)) for s in segments]
    conductor.extend(_delta_times(sorted(metre + tempi, key=lambda e: e[0])))
    midi.tracks.append(conductor)

    # a channel per pitched track; past 15 of them the last channel is shared
    channels = iter(c for c in range(16) if c != DRUM_CHANNEL)
    for name, notes in tracks.items():
        drums = name in DRUM_STEMS
        channel = DRUM_CHANNEL if drums else next(channels, 15)
        track = mido.MidiTrack()
        # MIDI text is Latin-1 (mido's default); other characters become "?"
        latin1 = name.encode("latin-1", "replace").decode("latin-1")
        track.append(mido.MetaMessage("track_name", name=latin1))
        if not drums:
            program = GM_PROGRAMS.get(name, 0)
            track.append(mido.Message("program_change", channel=channel, program=program))
        track.extend(_delta_times(_note_events(notes, segments, channel)))
        midi.tracks.append(track)

    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def beat_quarters(beats_s: np.ndarray) -> np.ndarray:
    """`(n,)` beat times (n >= 2, increasing) -> `(n,)` their positions in quarter notes.

    One quarter per beat, except where the beat tracker lost the beat for a while: a gap of k
    local beat periods (the median of the 16 intervals around it) counts k quarters. Before the
    first beat, the whole number of first periods nearest its time, at least one unless the
    first beat is at 0 s (within 1 ms).
    """
    intervals = np.diff(beats_s)
    local = np.array([np.median(intervals[max(0, i - 8) : i + 9]) for i in range(len(intervals))])
    steps = np.maximum(1, np.round(intervals / local)).astype(int)
    lead = 0 if beats_s[0] <= 1e-3 else max(1, round(beats_s[0] / local[0]))
    return lead + np.concatenate([[0], np.cumsum(steps)])


def tempo_map(beats_s: np.ndarray, quarters: np.ndarray) -> list[TempoSegment]:
    """`(n,)` beat times (n >= 2, increasing) and their positions in quarters (`beat_quarters`)
    -> tempo segments that play beat i at tick `quarters[i] * PPQ` within BEAT_TOLERANCE_S."""
    # anchors (quarters, seconds): the start, then the beats; a first beat within 1 ms of the
    # start is the start
    anchors = [(0, 0.0)] + [(int(q), float(t)) for q, t in zip(quarters, beats_s, strict=True)]
    if quarters[0] == 0:
        anchors = anchors[1:]
        anchors[0] = (0, 0.0)

    segments: list[TempoSegment] = []
    start = 0
    while start < len(anchors) - 1:
        end = _longest_steady_run(anchors, start)
        (q0, t0), (q1, t1) = anchors[start], anchors[end]
        us = _us_per_quarter((t1 - t0) / (q1 - q0))
        if segments and segments[-1].us_per_quarter == us:
            start = end
            continue
        # seconds where this tick really falls with the rounded tempi before it
        at_s = _seconds_at(segments, q0 * PPQ) if segments else 0.0
        segments.append(TempoSegment(q0 * PPQ, at_s, us))
        start = end
    return segments


def _longest_steady_run(anchors: list[tuple[int, float]], start: int) -> int:
    """The last anchor index `end` such that one tempo from anchor `start` to `end` keeps every
    anchor between them within BEAT_TOLERANCE_S of its time."""
    q = np.array([a[0] for a in anchors], dtype=np.float64)
    t = np.array([a[1] for a in anchors])
    end = start + 1
    for candidate in range(start + 2, len(anchors)):
        period = (t[candidate] - t[start]) / (q[candidate] - q[start])
        between = slice(start + 1, candidate)
        drift = t[start] + (q[between] - q[start]) * period - t[between]
        if np.abs(drift).max() > BEAT_TOLERANCE_S:
            break
        end = candidate
    return end


def _us_per_quarter(seconds: float) -> int:
    """A beat period as a set_tempo value: microseconds, within what the event can hold (notes
    stay at their seconds either way; only the beat grid would differ)."""
    return int(np.clip(round(seconds * 1e6), 1, MAX_US_PER_QUARTER))


def _seconds_at(segments: list[TempoSegment], tick: int) -> float:
    seg = next(s for s in reversed(segments) if s.tick <= tick)
    return seg.start_s + (tick - seg.tick) * seg.us_per_quarter / PPQ / 1e6


def seconds_to_tick(segments: list[TempoSegment], seconds: float) -> int:
    """The tick that the tempo map plays at `seconds` (rounded to the nearest tick)."""
    i = bisect.bisect_right(segments, seconds, key=lambda s: s.start_s) - 1
    seg = segments[max(i, 0)]
    return max(0, round(seg.tick + (seconds - seg.start_s) * 1e6 * PPQ / seg.us_per_quarter))


def _note_events(
    notes: Sequence[NoteLike], segments: list[TempoSegment], channel: int
) -> list[tuple[int, mido.Message]]:
    """(tick, message) note on/off pairs. A note lasts at least a tick; a note that is struck
    again before it ends is ended there, since MIDI cannot hold one key twice on a channel."""
    spans: dict[int, list[tuple[int, int, int]]] = {}
    for note in notes:
        if not (np.isfinite(note.start_s) and np.isfinite(note.end_s)):
            continue  # a note without a time cannot be placed
        on = seconds_to_tick(segments, float(note.start_s))
        off = max(on + 1, seconds_to_tick(segments, float(note.end_s)))
        pitch = int(np.clip(note.pitch, 0, 127))
        spans.setdefault(pitch, []).append((on, off, int(np.clip(note.velocity, 1, 127))))
    events = []
    for pitch, struck in spans.items():
        # one note per onset tick: the longest, at the loudest velocity
        by_tick: dict[int, tuple[int, int, int]] = {}
        for on, off, velocity in struck:
            _, off0, velocity0 = by_tick.get(on, (on, off, velocity))
            by_tick[on] = (on, max(off, off0), max(velocity, velocity0))
        held = sorted(by_tick.values())
        for (on, off, velocity), nxt in zip(held, held[1:] + [None], strict=True):
            if nxt is not None and nxt[0] < off:
                off = max(on + 1, nxt[0])
            events.append(
                (on, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity))
            )
            events.append(
                (off, 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0))
            )
    # at one tick, offs before ons: a key released and struck again sounds twice
    events.sort(key=lambda e: (e[0], e[1]))
    return [(tick, msg) for tick, _, msg in events]


def _delta_times(events: list[tuple[int, mido.Message | mido.MetaMessage]]) -> list:
    """(absolute tick, message) in order -> messages with mido's delta times."""
    out, last = [], 0
    for tick, msg in events:
        out.append(msg.copy(time=tick - last))
        last = tick
    return out


def _time_signature(beats_per_bar: int) -> mido.MetaMessage:
    return mido.MetaMessage("time_signature", numerator=beats_per_bar, denominator=4)


def _clean_beats(beats_s: Sequence[float] | None) -> np.ndarray:
    """Finite, non-negative, strictly increasing beat times in seconds."""
    beats = np.asarray(beats_s if beats_s is not None else [], dtype=np.float64).reshape(-1)
    beats = np.unique(beats[np.isfinite(beats) & (beats >= 0)])
    return beats[np.concatenate([[True], np.diff(beats) > 1e-3])] if beats.size else beats


def _first_downbeat(beats: np.ndarray, downbeats_s: Sequence[float] | None) -> int:
    """Index of the beat nearest the first downbeat (0 without downbeats)."""
    if not downbeats_s:
        return 0
    return int(np.argmin(np.abs(beats - float(min(downbeats_s)))))


def _beats_per_bar(beats: np.ndarray, downbeats_s: Sequence[float] | None) -> int | None:
    """The median number of beats from one downbeat to the next, or None when unknown."""
    if downbeats_s is None or len(downbeats_s) < 2 or len(beats) < 2:
        return None
    idx = np.unique([int(np.argmin(np.abs(beats - d))) for d in downbeats_s])
    counts = np.diff(idx)
    return int(np.median(counts)) if counts.size and np.median(counts) >= 1 else None
