"""Chord recognition from a track's chroma: templates and a Viterbi path (librosa).

Each frame's chroma is compared (cosine) with 24 triad templates (major and minor on every
root) that include the first partials of each note, as an instrument's notes sound (Gómez
2006); "N" (no chord) wins where no template fits well enough or the frame is silent. librosa's
Viterbi decoder with a sticky self-transition then finds the most likely chord path, so a
passing note does not split a chord.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from scipy.ndimage import uniform_filter1d

from transforms.key import PITCH_CLASSES, SILENCE_CHROMA

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


def recognise(chroma: np.ndarray) -> list[ChordSegment]:
    """The chord segments of a `(12, n_frames)` chroma, covering every frame."""
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
        ChordSegment(lo, hi, labels[path[lo]])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
