"""Drum hits of a drum stem as General MIDI notes: kick, snare and closed hi-hat.

Drums have no pitch for Basic Pitch to hear. Each of four bands of the stem's spectrum (a kick's
lows, a snare's body, its crack, a hi-hat's hiss) gets librosa's onset peak picking on its level
in dB, and an onset becomes a drum when the spectrum of its attack has that drum's shape.
"""

from __future__ import annotations

import librosa
import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from common.midi import Note
from transforms.transcribe import FFT_HOP, SAMPLE_RATE

KICK, SNARE, CLOSED_HAT = 36, 38, 42  # General MIDI drum keys (channel 10)
# Bands in Hz of a drum stem: a kick's body, a snare's body, a snare's crack and a hi-hat's hiss
DRUM_BANDS = {"low": (30, 120), "body": (120, 300), "mid": (300, 2000), "high": (6000, 11025)}
# an onset in a band rises this far above the band's mean level over the 5 frames before it
# (a hi-hat's highs rise less above the cymbal-and-snare wash than a kick's lows over silence)
DRUM_RISE_DB = {"low": 10.0, "mid": 10.0, "high": 8.0}
DRUM_RANGE_DB = 40.0  # hits quieter than the loudest level of their band by more are ignored
N_FFT = 1024  # samples per spectrum frame (46 ms; 21.5 Hz bins)
DRUM_FLOOR_DB = -80.0  # band levels under this (dB re a full-scale sine in one bin) are silence


def drum_notes(mono_22k: np.ndarray) -> list[Note]:
    """`(n,)` float32 mono drum stem at 22.05 kHz -> GM kick, snare and closed hi-hat notes
    (50 ms long), sorted by start.

    A kick's low band is above its body band; a snare's body is well above its low band and its
    mids above its highs; a hat's highs are above its mids. A hat struck with the kick or the
    snare is mostly not told apart from them (the snare's wires hiss like a hat).
    """
    audio = np.asarray(mono_22k, dtype=np.float32).reshape(-1)
    audio = np.where(np.isfinite(audio), audio, np.float32(0.0))  # broken samples are silence
    if audio.shape[0] < 2048:
        return []
    level = band_levels(audio)
    # the level of frames k..k+2: the attack peaks a frame or two after the onset frame
    peak = {b: maximum_filter1d(v, 3, origin=-1) for b, v in level.items()}

    def onsets(band: str) -> np.ndarray:
        v = level[band]
        # against the mean power of the 5 frames ending 2 frames earlier: one frame of a noisy
        # band (a few bins) swings by several dB, their mean much less; silence before the
        # first frame, so that a hit at 0 s is an onset
        power_db = np.concatenate([np.full(6, DRUM_FLOOR_DB), np.maximum(v, DRUM_FLOOR_DB)])
        before = 10 * np.log10(uniform_filter1d(10 ** (power_db / 10), 5, origin=2))[4:-2]
        rise = np.clip(v - before, 0, None)
        frames = librosa.onset.onset_detect(
            onset_envelope=rise, sr=SAMPLE_RATE, hop_length=FFT_HOP, normalize=False,
            delta=DRUM_RISE_DB[band], wait=4, units="frames",
        )  # fmt: skip
        loud = peak[band][frames] >= max(DRUM_FLOOR_DB, peak[band].max() - DRUM_RANGE_DB)
        return frames[loud]

    # band levels (dB) at the attacks of FluidR3's kit, alone: kick low 30, body 25, mid 11,
    # high 2; snare low 9, body 31, mid 23, high 9; hat low -20, body 1, mid 3, high 9
    p = peak
    found = []
    for k in onsets("low"):
        if p["low"][k] >= p["body"][k]:
            found.append((k, KICK, p["low"][k]))
    for k in onsets("mid"):
        if p["body"][k] >= p["low"][k] + 10 and p["mid"][k] >= p["high"][k] + 5:
            found.append((k, SNARE, p["mid"][k]))
    for k in onsets("high"):
        if p["high"][k] >= p["mid"][k] - 5:
            found.append((k, CLOSED_HAT, p["high"][k]))
    return _drum_hits(found)


def band_levels(audio: np.ndarray) -> dict[str, np.ndarray]:
    """`(n,)` audio at 22.05 kHz -> each of DRUM_BANDS' `(frames,)` power in dB re a full-scale
    sine, frame k centred on sample k * FFT_HOP. The spectrogram is taken a minute at a time: a
    whole track's would hold 0.2 GB for 10 minutes."""
    padded = np.pad(audio, N_FFT // 2)
    n_frames = 1 + audio.shape[0] // FFT_HOP
    freqs = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=N_FFT)
    rows = {band: (freqs >= lo) & (freqs < hi) for band, (lo, hi) in DRUM_BANDS.items()}
    full_scale = (N_FFT / 4) ** 2  # a full-scale sine's power in its bin (Hann window)
    block = 60 * SAMPLE_RATE // FFT_HOP  # frames a minute
    parts: dict[str, list[np.ndarray]] = {band: [] for band in DRUM_BANDS}
    for first in range(0, n_frames, block):
        last = min(first + block, n_frames)
        piece = padded[first * FFT_HOP : (last - 1) * FFT_HOP + N_FFT]
        power = np.abs(librosa.stft(piece, n_fft=N_FFT, hop_length=FFT_HOP, center=False)) ** 2
        for band, r in rows.items():
            parts[band].append(power[r].sum(axis=0) / full_scale)
    return {b: 10 * np.log10(np.concatenate(p) + 1e-12) for b, p in parts.items()}


def _drum_hits(found: list[tuple[int, int, float]]) -> list[Note]:
    """(frame, key, level dB) -> notes; velocity from the level against the loudest hit of that
    drum (-30 dB -> 1, 0 dB -> 127)."""
    notes = []
    for key in (KICK, SNARE, CLOSED_HAT):
        hits = [(k, lv) for k, d, lv in found if d == key]
        if not hits:
            continue
        top = max(lv for _, lv in hits)
        for k, lv in hits:
            start = float(k * FFT_HOP / SAMPLE_RATE)
            velocity = int(np.clip(round(127 * (1 + (lv - top) / 30)), 1, 127))
            notes.append(Note(start, start + 0.05, key, velocity))
    return sorted(notes, key=lambda x: (x.start_s, x.pitch))
