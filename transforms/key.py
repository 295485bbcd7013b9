"""Chroma (librosa's constant-Q chroma) and the Krumhansl–Schmuckler key estimate.

librosa has no key estimate; Krumhansl–Schmuckler is a dozen lines: correlate the chroma with
the 24 rotated Krumhansl–Kessler probe-tone profiles and take the best.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import librosa
import numpy as np

from common.constants import ANALYSIS_RATE
from transforms.rhythm import HOP, to_analysis_rate
from transforms.spelling import pitch_class, spell_key

HARMONIC_MARGIN = 1.0  # librosa's HPSS margin: plain soft masks
# HPSS median filters of 11 frames (0.26 s) instead of librosa's 31: 2.8x faster, and on the
# spleeter example as few "N" frames (18 % against 22 %)
HARMONIC_KERNEL = 11
BINS_PER_OCTAVE = 36  # three bins a semitone: a note a little out of tune stays in its class
SILENCE_CHROMA = 1e-3  # summed chroma per frame below this: silence (a -60 dBFS sine ~ 0.03)
# A chroma whose std / mean is below this is near flat (noise, dense clusters): no key. Noise
# measures ~0.1; a chord progression ~1.
MIN_CHROMA_CONTRAST = 0.2
# A key needs this many pitch classes with at least KEY_CLASS_SHARE of the strongest one: a
# single tone or an interval carries no key.
MIN_KEY_CLASSES = 3
KEY_CLASS_SHARE = 0.25

# The stems that carry the chords: "other" (4 stems), plus piano and guitar (6 stems); never
# drums, whose hits spread over every class, nor vocals, whose melody passes through the chords.
HARMONIC_STEMS = ("other", "piano", "guitar")
# The bass stem's chroma spans C1..B4: its strongest class is the root, and octaves higher
# up hold only the bass's own partials. 12 bins an octave: C1's filter at 36 bins would be
# 1.6 s long and smear a chord change over two beats; at 12, 0.5 s.
BASS_FMIN_HZ = 32.70  # C1
BASS_OCTAVES = 4
BASS_BINS_PER_OCTAVE = 12
BASS_KEY_WEIGHT = 0.5  # share of the bass in the key's chroma: roots confirm the tonic

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class KeyResult:
    tonic: str | None  # "C", "C#", ... "B"; None when there is no key
    mode: str | None  # "major" | "minor"
    confidence: float  # Pearson r of the chroma with the key's profile, clipped to [0, 1]
    reason: str = ""  # why there is no key


def chroma_frames(mono_22k: np.ndarray) -> np.ndarray:
    """Constant-Q chroma `(12, 1 + n // HOP)` of the harmonic part of mono audio at 22.05 kHz,
    C..B, not normalised (librosa's HPSS, then `chroma_cqt`, C1..B7): frame t is centred on
    sample t * HOP. Without the drums' broadband hits, half as many frames of a pop song lose
    their chord to "N" (measured on the spleeter example: 50 % -> 18 %)."""
    harmonic = librosa.effects.harmonic(
        mono_22k, margin=HARMONIC_MARGIN, kernel_size=HARMONIC_KERNEL
    )
    return librosa.feature.chroma_cqt(
        y=harmonic,
        sr=ANALYSIS_RATE,
        hop_length=HOP,
        bins_per_octave=BINS_PER_OCTAVE,
        norm=None,
        tuning=0.0,  # A = 440 Hz in every window: the frames of all windows must agree
    )


def summed(chroma: np.ndarray) -> np.ndarray:
    """`(12, n_frames)` -> `(12,)` summing to 1 (all 0 for silence)."""
    total = chroma.sum(axis=1, dtype=np.float64)
    s = float(total.sum())
    return total / s if s > SILENCE_CHROMA else np.zeros(12)


def key_profiles() -> tuple[np.ndarray, list[tuple[str, str]]]:
    """The 24 Krumhansl–Kessler profiles `(24, 12)` (major keys C..B, then minor), and their
    (tonic, mode)."""
    profiles = [np.roll(MAJOR_PROFILE, tonic) for tonic in range(12)]
    profiles += [np.roll(MINOR_PROFILE, tonic) for tonic in range(12)]
    names = [(p, "major") for p in PITCH_CLASSES] + [(p, "minor") for p in PITCH_CLASSES]
    return np.array(profiles), names


def estimate_key(chroma_vector: np.ndarray) -> KeyResult:
    """Krumhansl–Schmuckler: the key whose profile correlates best with a `(12,)` chroma.

    No key (with the reason) when the chroma is all zero, too flat to carry a key (see
    `MIN_CHROMA_CONTRAST`) or holds fewer than `MIN_KEY_CLASSES` pitch classes.
    """
    mean = float(np.mean(chroma_vector))
    if mean <= 0.0:
        return KeyResult(None, None, 0.0, "silent: no pitched content")
    if float(np.std(chroma_vector)) / mean < MIN_CHROMA_CONTRAST:
        return KeyResult(None, None, 0.0, "no tonal content: every pitch class is about as loud")
    classes = int(np.sum(chroma_vector >= KEY_CLASS_SHARE * chroma_vector.max()))
    if classes < MIN_KEY_CLASSES:
        return KeyResult(
            None, None, 0.0, f"only {classes} pitch class(es) sound: a tone or interval, no key"
        )
    profiles, names = key_profiles()
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    x = chroma_vector - mean
    r = centred @ x / (np.linalg.norm(centred, axis=1) * np.linalg.norm(x))
    best = int(np.argmax(r))
    tonic, mode = names[best]
    return KeyResult(tonic, mode, float(np.clip(r[best], 0.0, 1.0)))


def harmonic_stem_chroma(mono_22k: np.ndarray) -> np.ndarray:
    """Constant-Q chroma `(12, 1 + n // HOP)` of harmonic stems (their sum, mono at 22.05 kHz),
    C1..B7 as `chroma_frames` but without HPSS: there are no drums to remove."""
    return librosa.feature.chroma_cqt(
        y=mono_22k,
        sr=ANALYSIS_RATE,
        hop_length=HOP,
        bins_per_octave=BINS_PER_OCTAVE,
        norm=None,
        tuning=0.0,
    )


def bass_stem_chroma(mono_22k: np.ndarray) -> np.ndarray:
    """Constant-Q chroma `(12, 1 + n // HOP)` of the bass stem (mono at 22.05 kHz) over C1..B4,
    where its roots sound."""
    return librosa.feature.chroma_cqt(
        y=mono_22k,
        sr=ANALYSIS_RATE,
        hop_length=HOP,
        fmin=BASS_FMIN_HZ,
        n_octaves=BASS_OCTAVES,
        bins_per_octave=BASS_BINS_PER_OCTAVE,
        norm=None,
        tuning=0.0,
    )


def stems_chroma(stems: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The harmonic chroma and the bass chroma of separated stems.

    `stems`: name -> float32 `(2, n)` at 44.1 kHz ("other", "piano", "guitar", "bass"; others
    are ignored). Returns `(harmonic, bass)`, each `(12, 1 + ceil(n / 2) // HOP)` on the
    analysis frame grid, C..B, not normalised: `harmonic_stem_chroma` of the sum of the harmonic
    stems, `bass_stem_chroma` of the bass stem or None without one. Raises ValueError without
    any harmonic stem.
    """
    present = [stems[name] for name in HARMONIC_STEMS if name in stems]
    if not present:
        raise ValueError(f"no harmonic stem: expected one of {HARMONIC_STEMS}, got {sorted(stems)}")
    harmonic = harmonic_stem_chroma(to_analysis_rate(np.sum(present, axis=0, dtype=np.float32)))
    if "bass" not in stems:
        return harmonic, None
    return harmonic, bass_stem_chroma(to_analysis_rate(stems["bass"]))


def stems_key(harmonic: np.ndarray, bass: np.ndarray | None) -> KeyResult:
    """Krumhansl–Schmuckler on the harmonic stems' chroma `(12, n_frames)` with the bass
    stem's `(12, n_frames)` (or None) added at `BASS_KEY_WEIGHT` of the whole."""
    vector = summed(harmonic)
    if bass is not None:
        vector = (1.0 - BASS_KEY_WEIGHT) * vector + BASS_KEY_WEIGHT * summed(bass)
    return estimate_key(vector)


def key_tuple(result: KeyResult) -> tuple[int, str] | None:
    """(tonic pitch class, mode) of a key, as `transforms.spelling` and `chords.beat_chords`
    take it, or None when there is no key."""
    if result.tonic is None or result.mode is None:
        return None
    return pitch_class(result.tonic), result.mode


def spelled(result: KeyResult) -> KeyResult:
    """The same key with its tonic named as musicians write it ("A#" major -> "Bb" major)."""
    key = key_tuple(result)
    if key is None:
        return result
    return KeyResult(spell_key(*key)[0], result.mode, result.confidence, result.reason)
