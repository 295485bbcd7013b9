"""Generated music with known key, chords and tempo, for the analysis accuracy tests.

- `progression(chords, seconds_per_chord)`: triads played by a harmonic-rich synth (each note a
  few decaying partials), with the root an octave lower in a bass voice;
- `drum_pattern(bpm, seconds)`: a kit (pitch-swept kick, noise snare, high-passed hi-hat) in one
  of a few common grooves, with a little timing and level humanisation;
- key progressions for all 24 keys (major: I-IV-V-I, I-vi-IV-V; minor: i-iv-V-i, i-VI-iv-V).

Everything is float32 stereo `(2, n)` at 44.1 kHz, deterministic for a seed.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

SR = 44100
PITCHES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR_STEPS = (0, 2, 3, 5, 7, 8, 11)


def chord_name(root: int, quality: str) -> str:
    return PITCHES[root % 12] + ("m" if quality == "min" else "")


def note_hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _tone(freq: float, n: int, rng: np.random.Generator, partials: int = 5) -> np.ndarray:
    """(n,) one synth note: partials at 1/k amplitude, a soft attack and a slow decay."""
    t = np.arange(n) / SR
    out = np.zeros(n)
    for k in range(1, partials + 1):
        if k * freq >= SR / 2:
            break
        out += np.sin(2 * np.pi * k * freq * t + rng.random() * 2 * np.pi) / k
    attack = np.minimum(1.0, t / 0.02)
    release = np.minimum(1.0, (n - np.arange(n)) / (0.05 * SR))
    return out * attack * release * np.exp(-t / 3.0)


def progression(
    chords: list[tuple[int, str]], seconds_per_chord: float = 2.0, seed: int = 0
) -> np.ndarray:
    """(2, n) the chords `(root pitch class, "maj" | "min")` in order, in close position from
    the C below middle C, each with its root in the bass."""
    rng = np.random.default_rng(seed)
    n = int(seconds_per_chord * SR)
    parts = []
    for root, quality in chords:
        third = 3 if quality == "min" else 4
        base = 48 + root % 12  # C3..B3
        notes = [base, base + third, base + 7]
        mono = sum(_tone(note_hz(m), n, rng) for m in notes) + 1.2 * _tone(
            note_hz(base - 12), n, rng, partials=3
        )
        parts.append(mono)
    mono = np.concatenate(parts)
    mono = 0.5 * mono / np.max(np.abs(mono))
    return np.stack([mono, 0.95 * mono]).astype(np.float32)


def key_progression(tonic: int, mode: str, seconds_per_chord: float = 2.0, seed: int = 0):
    """(audio, chords) of a cadential progression in the key, twice over."""
    if mode == "major":
        degrees = (
            (0, "maj"),
            (5, "maj"),
            (7, "maj"),
            (0, "maj"),
            (9, "min"),
            (5, "maj"),
            (7, "maj"),
            (0, "maj"),
        )
    else:
        degrees = (
            (0, "min"),
            (5, "min"),
            (7, "maj"),
            (0, "min"),
            (8, "maj"),
            (5, "min"),
            (7, "maj"),
            (0, "min"),
        )
    chords = [((tonic + d) % 12, q) for d, q in degrees]
    return progression(chords, seconds_per_chord, seed), chords


def _hit(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "kick":
        t = np.arange(int(0.3 * SR)) / SR
        freq = 50 + 90 * np.exp(-t / 0.03)
        return np.sin(2 * np.pi * np.cumsum(freq) / SR) * np.exp(-t / 0.1)
    if kind == "snare":
        t = np.arange(int(0.2 * SR)) / SR
        noise = rng.standard_normal(t.size) * np.exp(-t / 0.05)
        return 0.6 * noise + 0.4 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.03)
    t = np.arange(int(0.05 * SR)) / SR
    sos = signal.butter(4, 7000, "highpass", fs=SR, output="sos")
    return 0.25 * signal.sosfilt(sos, rng.standard_normal(t.size)) * np.exp(-t / 0.012)


# Grooves in 8th notes over one bar of 4/4: which instruments hit on each of the 8 steps.
# Every beat (quarter note) carries a kick or a snare, as in most popular music: the beat is
# then the quarter note, and a tempo twice or half of it is an octave error.
GROOVES = (
    ("kh", "h", "sh", "h", "kh", "h", "sh", "h"),  # rock
    ("kh", "h", "sh", "h", "kh", "kh", "sh", "h"),  # pop: a second kick on the "and" of 3
    ("k", "h", "ks", "h", "k", "h", "ks", "h"),  # four on the floor, snare on 2 and 4
    ("kh", "h", "sh", "h", "kh", "h", "sh", "kh"),  # rock with a pickup kick into the bar
)


def drum_pattern(bpm: float, seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    """(2, n) a drum kit playing one groove at `bpm` (a quarter note is the beat)."""
    rng = np.random.default_rng(seed)
    groove = GROOVES[seed % len(GROOVES)]
    n = int(seconds * SR)
    out = np.zeros((2, n + SR))
    eighth = 60.0 / bpm / 2
    names = {"k": "kick", "s": "snare", "h": "hat"}
    pans = {"kick": 0.0, "snare": -0.2, "hat": 0.4}
    step = 0
    while (start_s := step * eighth) < seconds:
        for code in groove[step % 8]:
            kind = names[code]
            jitter = rng.normal(0.0, 0.003)  # 3 ms of human timing
            start = max(0, int((start_s + jitter) * SR))
            hit = _hit(kind, rng) * (0.8 + 0.2 * rng.random())
            pan = pans[kind]
            out[0, start : start + hit.size] += np.sqrt((1 - pan) / 2) * hit
            out[1, start : start + hit.size] += np.sqrt((1 + pan) / 2) * hit
        step += 1
    out = out[:, :n]
    return (0.7 * out / np.max(np.abs(out))).astype(np.float32)


def sine(freq: float = 440.0, seconds: float = 20.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    tone = level * np.sin(2 * np.pi * freq * t)
    return np.stack([tone, tone]).astype(np.float32)


def noise(seconds: float = 20.0, level: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal((2, int(seconds * SR)))).astype(np.float32)
