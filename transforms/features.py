"""Levels and spectral shape of one analysis window, and the AST input of that window.

Pure functions, arrays in and numbers or arrays out. Audio is float32 stereo `(2, n)` at
`SAMPLE_RATE` (44.1 kHz) unless a docstring says otherwise. The spectral features are librosa's,
the loudness pyloudnorm's (BS.1770-4) and the AST input `ASTFeatureExtractor`'s.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import librosa
import numpy as np
import pyloudnorm

from common.constants import AST_SAMPLE_RATE, CHANNELS, SAMPLE_RATE
from common.errors import BadRequest

DB_FLOOR = -120.0  # dB: what digital silence reports instead of -inf (JSON has no -inf)

STFT_SIZE = 2048  # samples at 44.1 kHz (46 ms): frame of the centroid / rolloff STFT
STFT_HOP = 512  # samples (11.6 ms)
ROLLOFF_FRACTION = 0.85
GATE_BLOCK_S = 0.4  # s: BS.1770 gating block
AST_MIN_SAMPLES = 400  # samples at 16 kHz: one 25 ms frame of the extractor's fbank


def check_window(audio: np.ndarray) -> np.ndarray:
    """The body of an analysis request, checked: float32 `(2, n)` with n > 0, all finite.

    Raises `BadRequest` (400) saying what was found otherwise.
    """
    if audio.ndim != 2 or audio.shape[0] != CHANNELS or audio.shape[1] == 0:
        raise BadRequest(
            f"expected float32 audio of shape (2, n) with n > 0, got {audio.shape}",
            code="bad_audio_shape",
        )
    if not np.isfinite(audio).all():
        raise BadRequest("the audio contains NaN or infinite samples", code="bad_audio")
    return audio


def to_db(value: float) -> float:
    """Amplitude (1.0 = full scale) -> dBFS, floored at `DB_FLOOR`."""
    if value <= 0.0:
        return DB_FLOOR
    return max(DB_FLOOR, 20.0 * math.log10(value))


def rms_db(audio: np.ndarray) -> float:
    """RMS over all channels and samples of `(channels, n)` audio, in dBFS."""
    if audio.size == 0:
        return DB_FLOOR
    return to_db(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))))


def peak_db(audio: np.ndarray) -> float:
    """Absolute sample peak of `(channels, n)` audio, in dBFS (not true peak)."""
    if audio.size == 0:
        return DB_FLOOR
    return to_db(float(np.max(np.abs(audio))))


def integrated_loudness(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """ITU-R BS.1770-4 integrated loudness of `(channels, n)` audio in LUFS (pyloudnorm).

    None when the audio is shorter than one 400 ms gating block or every block is gated out
    (silence, or quieter than -70 LUFS): the standard defines no value there.
    """
    if audio.shape[-1] < GATE_BLOCK_S * sample_rate:
        return None
    meter = pyloudnorm.Meter(sample_rate, block_size=GATE_BLOCK_S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lufs = meter.integrated_loudness(np.asarray(audio, dtype=np.float64).T)
    return float(lufs) if math.isfinite(lufs) else None


def spectral_centroid_rolloff(
    mono: np.ndarray, sample_rate: int = SAMPLE_RATE, fraction: float = ROLLOFF_FRACTION
) -> tuple[float, float]:
    """Spectral centroid and rolloff frequency (Hz) of mono audio `(n,)`.

    librosa's, applied to the STFT magnitude summed over frames, so loud frames weigh more than
    quiet ones and silent frames (whose per-frame centroid is undefined) weigh nothing.
    Silence -> (0.0, 0.0).
    """
    n_fft = min(STFT_SIZE, 1 << max(4, int(math.log2(max(16, len(mono))))))
    spectrum = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=STFT_HOP)).sum(axis=1)
    if float(spectrum.sum()) <= 0.0:
        return 0.0, 0.0
    summed = spectrum[:, None]
    centroid = librosa.feature.spectral_centroid(S=summed, sr=sample_rate, n_fft=n_fft)
    rolloff = librosa.feature.spectral_rolloff(
        S=summed, sr=sample_rate, n_fft=n_fft, roll_percent=fraction
    )
    return float(centroid[0, 0]), float(rolloff[0, 0])


def to_mono_16k(stereo_44k: np.ndarray) -> np.ndarray:
    """Float32 `(2, n)` at 44.1 kHz -> float32 mono at 16 kHz (librosa / soxr)."""
    mono = np.mean(stereo_44k, axis=0, dtype=np.float32)
    return librosa.resample(mono, orig_sr=SAMPLE_RATE, target_sr=AST_SAMPLE_RATE)


@lru_cache(maxsize=1)
def ast_extractor():
    """transformers' `ASTFeatureExtractor` with the defaults of AudioSet-finetuned AST: 128
    Kaldi mel bins, 1024 frames, AudioSet mean / std."""
    from transformers import ASTFeatureExtractor

    return ASTFeatureExtractor()


def ast_input(stereo_44k: np.ndarray) -> np.ndarray | None:
    """AST input of one window: float32 `(2, n)` at 44.1 kHz -> float32 `(1024, 128)`, made by
    `ASTFeatureExtractor` (mono at 16 kHz, Kaldi log-mel, padded / cut, normalised). None when
    the window is shorter than one 25 ms frame of the fbank."""
    mono = to_mono_16k(stereo_44k)
    if len(mono) < AST_MIN_SAMPLES:
        return None
    values = ast_extractor()(mono, sampling_rate=AST_SAMPLE_RATE, return_tensors="np")
    return np.ascontiguousarray(values["input_values"][0], dtype=np.float32)
