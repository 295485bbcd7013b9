"""Constant-Q chroma and the Krumhansl–Schmuckler key of one analysis window.

Pure functions. The CQT is Brown & Puckette's (1992) "efficient constant-Q transform": each
constant-Q bin is a windowed complex exponential whose spectrum, taken once, is sparse; a frame's
CQT is then its FFT times that sparse kernel bank. It runs on the mono signal downsampled to
11.025 kHz, which holds the six octaves C2..B7 that carry pitch in music.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sp_fft
from scipy import sparse
from scipy.signal import resample_poly

from common.constants import SAMPLE_RATE

CQT_DOWNSAMPLE = 4  # 44.1 kHz / 4 = 11.025 kHz: Nyquist 5.5 kHz, above the top bin
CQT_SAMPLE_RATE = SAMPLE_RATE // CQT_DOWNSAMPLE  # Hz
BINS_PER_SEMITONE = 3  # a note a little out of tune still lands in its own pitch class
BINS_PER_OCTAVE = 12 * BINS_PER_SEMITONE
# C2 (65.4 Hz) lowered by one bin: bins 3s, 3s + 1, 3s + 2 are semitone s flat, in tune, sharp.
FMIN_HZ = 440.0 * 2.0 ** (-33 / 12 - 1 / BINS_PER_OCTAVE)
N_OCTAVES = 6  # C2..B7 (3.95 kHz)
HOP = 1024  # samples at 11.025 kHz (93 ms)
# Kernel spectrum values below this fraction of a kernel's peak are dropped (Brown & Puckette).
SPARSITY_THRESHOLD = 0.0054

SILENCE_AMPLITUDE = 1e-4  # peak below -80 dBFS: nothing to hear, no key
# A chroma whose std / mean is below this is near flat (noise, dense clusters): no key. Noise
# measures ~0.1; a chord progression ~1.
MIN_CHROMA_CONTRAST = 0.2

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Key names as musicians spell them (Eb major, not D# major; G# minor, not Ab minor).
MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass(frozen=True)
class KeyResult:
    key: str | None  # "A minor"; None when there is no tonal content
    confidence: float  # Pearson r of the chroma with the key's profile, clipped to [0, 1]
    chroma: np.ndarray  # (12,) C..B, sums to 1 (all 0 for silence)


@dataclass(frozen=True)
class CQTKernel:
    matrix: sparse.csr_matrix  # (n_bins, fft_size // 2 + 1) complex, conjugated, / fft_size
    fft_size: int
    freqs: np.ndarray  # (n_bins,) centre frequencies, Hz


@lru_cache(maxsize=4)
def cqt_kernel(
    sample_rate: int = CQT_SAMPLE_RATE,
    fmin: float = FMIN_HZ,
    n_bins: int = N_OCTAVES * BINS_PER_OCTAVE,
    bins_per_octave: int = BINS_PER_OCTAVE,
) -> CQTKernel:
    """The sparse spectral kernel bank of a constant-Q transform.

    Bin k is a Hann-windowed complex exponential at `fmin * 2 ** (k / bins_per_octave)` Hz, of
    length `Q * sample_rate / f_k` (Q chosen so neighbouring bins just touch), scaled by 1 / length
    so a sinusoid of amplitude a gives about a / 4 in every bin it falls in, whatever its pitch.
    Only the non-negative FFT bins are kept: a real frame's spectrum is symmetric.
    """
    q = 1.0 / (2.0 ** (1.0 / bins_per_octave) - 1.0)
    freqs = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
    lengths = np.ceil(q * sample_rate / freqs).astype(int)
    fft_size = 1 << int(math.ceil(math.log2(lengths[0])))
    rows = []
    for freq, length in zip(freqs, lengths, strict=True):
        n = np.arange(length)
        atom = np.hanning(length) / length * np.exp(2j * np.pi * freq * n / sample_rate)
        # Centred in the frame, so every bin looks at the same instant.
        frame = np.zeros(fft_size, dtype=complex)
        start = (fft_size - length) // 2
        frame[start : start + length] = atom
        spectrum = np.fft.fft(frame)[: fft_size // 2 + 1]
        spectrum[np.abs(spectrum) < SPARSITY_THRESHOLD * np.abs(spectrum).max()] = 0.0
        rows.append(np.conj(spectrum) / fft_size)
    return CQTKernel(sparse.csr_matrix(np.array(rows)), fft_size, freqs)


def cqt_magnitude(mono: np.ndarray, kernel: CQTKernel, hop: int = HOP) -> np.ndarray:
    """|CQT| of mono audio `(n,)` at the kernel's rate -> `(n_bins, n_frames)`.

    Frame t is centred on sample `t * hop` (the signal is zero-padded by half a frame each side).
    """
    half = kernel.fft_size // 2
    padded = np.pad(mono.astype(np.float64), (half, half + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.fft_size)[::hop]
    frames = frames[: 1 + len(mono) // hop]
    spectra = sp_fft.rfft(frames, axis=1)  # (n_frames, fft_size // 2 + 1)
    return np.abs(kernel.matrix @ spectra.T)


def chroma(stereo_44k: np.ndarray) -> np.ndarray:
    """Time-summed constant-Q chroma of float32 `(2, n)` audio at 44.1 kHz -> `(12,)`, C..B.

    Sums to 1; all zeros for silence.
    """
    mono = np.mean(stereo_44k, axis=0, dtype=np.float64)
    if mono.size == 0 or np.max(np.abs(mono)) < SILENCE_AMPLITUDE:
        return np.zeros(12)
    low = resample_poly(mono, 1, CQT_DOWNSAMPLE)
    magnitude = cqt_magnitude(low, cqt_kernel()).sum(axis=1)
    folded = magnitude.reshape(N_OCTAVES, 12, BINS_PER_SEMITONE).sum(axis=(0, 2))
    total = folded.sum()
    return folded / total if total > 0 else np.zeros(12)


def key_profiles() -> tuple[np.ndarray, list[str]]:
    """The 24 Krumhansl–Kessler profiles `(24, 12)` (major keys C..B, then minor) and names."""
    profiles = [np.roll(MAJOR_PROFILE, tonic) for tonic in range(12)]
    profiles += [np.roll(MINOR_PROFILE, tonic) for tonic in range(12)]
    names = [f"{n} major" for n in MAJOR_NAMES] + [f"{n} minor" for n in MINOR_NAMES]
    return np.array(profiles), names


def estimate_key(chroma_vector: np.ndarray) -> tuple[str | None, float]:
    """Krumhansl–Schmuckler: the key whose profile correlates best with a `(12,)` chroma.

    Returns (name, Pearson r clipped to [0, 1]); (None, 0.0) when the chroma is all zero or too
    flat to carry a key (see `MIN_CHROMA_CONTRAST`).
    """
    mean = float(np.mean(chroma_vector))
    if mean <= 0.0 or float(np.std(chroma_vector)) / mean < MIN_CHROMA_CONTRAST:
        return None, 0.0
    profiles, names = key_profiles()
    centred = profiles - profiles.mean(axis=1, keepdims=True)
    x = chroma_vector - mean
    r = centred @ x / (np.linalg.norm(centred, axis=1) * np.linalg.norm(x))
    best = int(np.argmax(r))
    return names[best], float(np.clip(r[best], 0.0, 1.0))


def analyse_key(stereo_44k: np.ndarray) -> KeyResult:
    """Chroma and key of float32 `(2, n)` audio at 44.1 kHz."""
    vector = chroma(stereo_44k)
    key, confidence = estimate_key(vector)
    return KeyResult(key=key, confidence=confidence, chroma=vector)
