"""Chord recognition from a track's chroma: templates and a Viterbi path (librosa).

Each frame's chroma is compared (cosine) with 24 triad templates (major and minor on every
root) that include the first partials of each note, as an instrument's notes sound (Gómez
2006); "N" (no chord) wins where no template fits well enough or the frame is silent. librosa's
Viterbi decoder with a sticky self-transition then finds the most likely chord path, so a
passing note does not split a chord.

Two paths share the templates:
- `recognise`: one chord a 23 ms frame (the mix's chroma; changes land anywhere, and a real
  song flickers: 23 changes in 20 s);
- `beat_chords`: one chord a beat (or a 0.5 s grid without beats), from the mean chroma over
  the beat, with the bass stem's strongest pitch class favouring the chord on that root, and a
  Viterbi over beats: boundaries fall on beats and a chord lasts at least one. Labels are
  spelled from the key (`transforms/spelling.py`): "Bb" in F major, "A#" in B major.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from scipy.ndimage import uniform_filter1d

from transforms.key import PITCH_CLASSES, SILENCE_CHROMA
from transforms.rhythm import FRAME_S
from transforms.spelling import chord_label

PARTIALS = 4  # partials of a note in a template: 1, 2, 3, 4 (octave, twelfth, 2 octaves)
PARTIAL_DECAY = 0.6  # amplitude of partial k: 0.6 ** (k - 1)
QUALITIES = {"maj": (0, 4, 7), "min": (0, 3, 7)}
# Below this cosine with the best template a frame is "N": a single tone scores <= 0.64, flat
# noise 0.55, a played triad 0.85 and more.
MIN_CHORD_COSINE = 0.7
SMOOTH_FRAMES = 9  # moving average of the chroma over 0.2 s before matching
SHARPNESS = 25.0  # emission probability ~ exp(SHARPNESS * cosine)
SELF_TRANSITION = 0.98  # per 23 ms frame: a chord lasts a second or so, not a frame
RELATIVE_SILENCE = 1e-3  # frames quieter than this share of the loudest frame are silent
GRID_S = 0.5  # s: without beats, chords are decided on this grid
BEAT_SELF_TRANSITION = 0.8  # per beat: a chord lasts a bar or two
BASS_WEIGHT = 0.3  # added to a chord's cosine, times the bass's share of the chord's root
# Over a beat, real chords fit less well than over 0.2 s (more passing notes): the best triad of
# the "other" stem of a MUSDB rock excerpt (falcon69) scores 0.63-0.75 on a 0.5 s grid, noise
# 0.56-0.60, a sine 0.64. So a beat is a chord above this cosine, and only where at least
# CHORD_CLASSES pitch classes reach CHORD_CLASS_SHARE of the strongest: one tone is no chord.
BEAT_MIN_CHORD_COSINE = 0.62
# A beat quieter than this share of the loudest beat's chroma (-40 dB) is silent: a separated
# stem holds the other instruments' bleed 20-30 dB down where its own instrument rests.
BEAT_RELATIVE_SILENCE = 0.01
CHORD_CLASSES = 2
CHORD_CLASS_SHARE = 0.25


@dataclass(frozen=True)
class ChordSegment:
    start_frame: int
    end_frame: int  # exclusive
    chord: str  # "C", "C#m", ... or "N"


def chord_labels() -> list[str]:
    """The state names: 12 major chords (C..B), 12 minor (Cm..Bm), then "N"."""
    return [p for p in PITCH_CLASSES] + [f"{p}m" for p in PITCH_CLASSES] + ["N"]


def templates() -> np.ndarray:
    """`(24, 12)` unit-norm chord templates: the chord's notes with their partials folded."""
    rows = []
    for quality in ("maj", "min"):
        for root in range(12):
            t = np.zeros(12)
            for interval in QUALITIES[quality]:
                for k in range(1, PARTIALS + 1):
                    semitones = int(round(12 * np.log2(k)))
                    t[(root + interval + semitones) % 12] += PARTIAL_DECAY ** (k - 1)
            rows.append(t / np.linalg.norm(t))
    return np.array(rows)


def frame_scores(chroma: np.ndarray) -> np.ndarray:
    """`(12, n)` chroma -> `(25, n)` cosine of each frame with each chord, and N's score."""
    smooth = uniform_filter1d(chroma.astype(np.float64), SMOOTH_FRAMES, axis=1, mode="nearest")
    energy = smooth.sum(axis=0)
    active = energy > max(SILENCE_CHROMA, RELATIVE_SILENCE * float(energy.max(initial=0.0)))
    norms = np.linalg.norm(smooth, axis=0)
    unit = np.divide(smooth, norms, out=np.zeros_like(smooth), where=norms > 0)
    scores = np.zeros((25, chroma.shape[1]))
    scores[:24] = templates() @ unit
    scores[24] = np.where(active, MIN_CHORD_COSINE, 1.0)
    scores[:24, ~active] = 0.0
    return scores


def recognise(chroma: np.ndarray, key: tuple[int, str] | None = None) -> list[ChordSegment]:
    """The chord segments of a `(12, n_frames)` chroma, per frame, covering every frame; labels
    spelled in `key` = (tonic pitch class, mode) when given, else sharps ("C#m")."""
    if chroma.shape[1] == 0:
        return []
    scores = frame_scores(chroma)
    prob = np.exp(SHARPNESS * (scores - scores.max(axis=0, keepdims=True)))
    transition = librosa.sequence.transition_loop(25, SELF_TRANSITION)
    path = librosa.sequence.viterbi(prob, transition)
    labels = chord_labels()
    changes = np.flatnonzero(np.diff(path)) + 1
    bounds = [0, *changes.tolist(), len(path)]
    return [
        ChordSegment(lo, hi, labels[path[lo]] if key is None else _label(int(path[lo]), key))
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def beat_frames_of(beats_s: np.ndarray | list[float]) -> np.ndarray:
    """Beat times in s `(n_beats,)` -> the nearest analysis frames `(n_beats,)` (int64)."""
    return np.round(np.asarray(beats_s, dtype=np.float64) / FRAME_S).astype(np.int64)


def beat_bounds(n_frames: int, beat_frames: np.ndarray | None) -> np.ndarray:
    """Segment boundaries `(n_segments + 1,)` in frames from 0 to `n_frames`: the beats (frame
    indices; those outside (0, n_frames) dropped), or a `GRID_S` grid without beats."""
    if beat_frames is None or len(beat_frames) == 0:
        step = max(1, round(GRID_S / FRAME_S))
        inner = np.arange(step, n_frames, step)
    else:
        inner = np.unique(np.asarray(beat_frames, dtype=np.int64))
        inner = inner[(inner > 0) & (inner < n_frames)]
    return np.concatenate([[0], inner, [n_frames]]).astype(np.int64)


def segment_scores(
    chroma: np.ndarray, bounds: np.ndarray, bass_chroma: np.ndarray | None = None
) -> np.ndarray:
    """`(25, n_segments)` score of each chord (as `chord_labels`) and of "N" per segment.

    `chroma`, `bass_chroma`: `(12, n_frames)`; `bounds`: `(n_segments + 1,)` frame indices from
    `beat_bounds`. A chord's score is the cosine of the segment's mean chroma with its template,
    plus `BASS_WEIGHT` times the bass chroma's share on its root: the bass plays the root, so it
    tells C (C E G over C) from Am (A C E over A) where the upper voices share two notes.
    """
    mean = np.add.reduceat(chroma.astype(np.float64), bounds[:-1], axis=1) / np.diff(bounds)
    energy = mean.sum(axis=0)
    active = energy > max(SILENCE_CHROMA, BEAT_RELATIVE_SILENCE * float(energy.max(initial=0.0)))
    classes = np.sum(mean >= CHORD_CLASS_SHARE * mean.max(axis=0, keepdims=True), axis=0)
    active &= classes >= CHORD_CLASSES
    norms = np.linalg.norm(mean, axis=0)
    unit = np.divide(mean, norms, out=np.zeros_like(mean), where=norms > 0)
    scores = np.zeros((25, mean.shape[1]))
    scores[:24] = templates() @ unit
    if bass_chroma is not None:
        bass = np.add.reduceat(bass_chroma.astype(np.float64), bounds[:-1], axis=1)
        total = bass.sum(axis=0)
        share = np.divide(bass, total, out=np.zeros_like(bass), where=total > SILENCE_CHROMA)
        scores[:24] += BASS_WEIGHT * np.tile(share, (2, 1))  # majors C..B, then minors C..B
    scores[24] = np.where(active, BEAT_MIN_CHORD_COSINE, 1.0 + BASS_WEIGHT)
    scores[:24, ~active] = 0.0
    return scores


def beat_chords(
    chroma: np.ndarray,
    beat_frames: np.ndarray | None = None,
    key: tuple[int, str] | None = None,
    bass_chroma: np.ndarray | None = None,
) -> list[ChordSegment]:
    """Chord segments whose boundaries fall on beats, spelled in `key`.

    `chroma`: `(12, n_frames)` on the analysis frame grid (frame t centred on t * FRAME_S);
    `beat_frames`: beat times as frame indices (`beat_frames_of(beats_s)`), or None for a
    `GRID_S` grid; `key`: (tonic pitch class, "major" | "minor") or None (plain names);
    `bass_chroma`: `(12, n_frames)` of the bass stem or None. Each beat gets one chord (a
    Viterbi path over beats with a sticky self-transition), so a chord lasts at least a beat
    and changes only where the harmony does; equal neighbours are merged. Segments cover every
    frame, in order.
    """
    n_frames = chroma.shape[1]
    if n_frames == 0:
        return []
    if bass_chroma is not None and bass_chroma.shape != chroma.shape:
        raise ValueError(f"bass chroma {bass_chroma.shape} does not match chroma {chroma.shape}")
    bounds = beat_bounds(n_frames, beat_frames)
    scores = segment_scores(chroma, bounds, bass_chroma)
    prob = np.exp(SHARPNESS * (scores - scores.max(axis=0, keepdims=True)))
    transition = librosa.sequence.transition_loop(25, BEAT_SELF_TRANSITION)
    path = librosa.sequence.viterbi(prob, transition)
    changes = np.flatnonzero(np.diff(path)) + 1
    starts = [0, *changes.tolist()]
    ends = [*changes.tolist(), len(path)]
    return [
        ChordSegment(int(bounds[lo]), int(bounds[hi]), _label(int(path[lo]), key))
        for lo, hi in zip(starts, ends, strict=True)
    ]


def _label(state: int, key: tuple[int, str] | None) -> str:
    """A Viterbi state (0-11 major C..B, 12-23 minor, 24 N) as a label spelled in `key`."""
    if state == 24:
        return "N"
    return chord_label(state % 12, "maj" if state < 12 else "min", key)
