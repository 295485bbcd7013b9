"""Spectral features of one analysis window, and the log-mel input of the AST tone identifier.

Pure functions, arrays in and numbers or arrays out. Audio is float32 stereo `(2, n)` at
`SAMPLE_RATE` (44.1 kHz) unless a docstring says otherwise. Nothing here imports `transformers`
or `torch`: the fft service that uses it must start fast and stay light.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import pyloudnorm
from scipy import fft as sp_fft
from scipy.signal import resample_poly

from common.constants import AST_SAMPLE_RATE, CHANNELS, SAMPLE_RATE
from common.errors import BadRequest

DB_FLOOR = -120.0  # dB: what digital silence reports instead of -inf (JSON has no -inf)

STFT_SIZE = 2048  # samples at 44.1 kHz (46 ms): frame of the centroid / rolloff STFT
STFT_HOP = 512  # samples (11.6 ms)
ROLLOFF_FRACTION = 0.85
GATE_BLOCK_S = 0.4  # s: BS.1770 gating block

# Kaldi fbank as `ASTFeatureExtractor` runs it through `torchaudio.compliance.kaldi.fbank`.
AST_N_MELS = 128
AST_MAX_FRAMES = 1024  # frames of 10 ms: the extractor pads / truncates to this
KALDI_FRAME = 400  # samples at 16 kHz: 25 ms window
KALDI_SHIFT = 160  # samples at 16 kHz: 10 ms shift
KALDI_FFT = 512  # the frame rounded up to a power of two
KALDI_PREEMPHASIS = 0.97
KALDI_LOW_HZ = 20.0
KALDI_EPSILON = float(np.finfo(np.float32).eps)  # floor of every mel energy before the log
# 44.1 kHz -> 16 kHz: 16000 / 44100 = 160 / 441
RESAMPLE_UP, RESAMPLE_DOWN = 160, 441
assert SAMPLE_RATE * RESAMPLE_UP == AST_SAMPLE_RATE * RESAMPLE_DOWN


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
    """ITU-R BS.1770-4 integrated loudness of `(channels, n)` audio in LUFS.

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


def magnitude_spectrogram(
    mono: np.ndarray, size: int = STFT_SIZE, hop: int = STFT_HOP
) -> np.ndarray:
    """|STFT| of mono audio `(n,)` with a periodic Hann window -> `(n_frames, size // 2 + 1)`.

    Frames start at 0 and the tail is zero-padded, so a short window still has one frame.
    """
    n_frames = 1 + max(0, math.ceil((len(mono) - size) / hop))
    padded = np.zeros((n_frames - 1) * hop + size, dtype=np.float32)
    padded[: len(mono)] = mono
    frames = np.lib.stride_tricks.sliding_window_view(padded, size)[::hop]
    window = np.hanning(size + 1)[:-1].astype(np.float32)
    return np.abs(sp_fft.rfft(frames * window, axis=-1))


def spectral_centroid_rolloff(
    mono: np.ndarray, sample_rate: int = SAMPLE_RATE, fraction: float = ROLLOFF_FRACTION
) -> tuple[float, float]:
    """Spectral centroid and rolloff frequency (Hz) of mono audio `(n,)`.

    Both are taken from the STFT magnitude summed over frames, so loud frames weigh more than
    quiet ones and silent frames (whose per-frame centroid is undefined) weigh nothing. The
    rolloff is the lowest frequency below which `fraction` of that magnitude lies (as librosa
    defines it per frame). Silence -> (0.0, 0.0).
    """
    spectrum = magnitude_spectrogram(mono).sum(axis=0, dtype=np.float64)
    total = float(spectrum.sum())
    if total <= 0.0:
        return 0.0, 0.0
    freqs = np.fft.rfftfreq(STFT_SIZE, 1.0 / sample_rate)
    centroid = float(np.dot(freqs, spectrum) / total)
    rolloff_bin = int(np.searchsorted(np.cumsum(spectrum), fraction * total))
    return centroid, float(freqs[min(rolloff_bin, len(freqs) - 1)])


def to_mono_16k(stereo_44k: np.ndarray) -> np.ndarray:
    """Float32 `(2, n)` at 44.1 kHz -> float32 mono `(ceil(n * 160 / 441),)` at 16 kHz."""
    mono = np.mean(stereo_44k, axis=0, dtype=np.float64)
    return resample_poly(mono, RESAMPLE_UP, RESAMPLE_DOWN).astype(np.float32)


def kaldi_frame_count(n_samples_44k: int) -> int:
    """How many fbank frames (before padding) `ast_log_mel` gets from n samples at 44.1 kHz."""
    n_16k = -(-n_samples_44k * RESAMPLE_UP // RESAMPLE_DOWN)  # resample_poly's ceil
    return 0 if n_16k < KALDI_FRAME else 1 + (n_16k - KALDI_FRAME) // KALDI_SHIFT


def _mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)


@lru_cache(maxsize=4)
def kaldi_mel_banks(
    n_mels: int = AST_N_MELS, n_fft: int = KALDI_FFT, sample_rate: int = AST_SAMPLE_RATE
) -> np.ndarray:
    """Kaldi's triangular mel filters `(n_fft // 2 + 1, n_mels)`, triangular in mel space.

    As `torchaudio.compliance.kaldi.get_mel_banks`: `n_mels` triangles between 20 Hz and
    Nyquist, evaluated on the FFT bins below Nyquist (the Nyquist bin gets weight 0).
    """
    mel_low, mel_high = _mel(KALDI_LOW_HZ), _mel(sample_rate / 2)
    delta = (mel_high - mel_low) / (n_mels + 1)
    left = mel_low + np.arange(n_mels) * delta
    centre, right = left + delta, left + 2 * delta
    mel = _mel(np.arange(n_fft // 2) * sample_rate / n_fft)[:, None]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([banks, np.zeros((1, n_mels))])


def kaldi_fbank(mono_16k: np.ndarray, n_mels: int = AST_N_MELS) -> np.ndarray:
    """Kaldi-compatible log-mel filterbank of mono 16 kHz audio `(n,)` -> `(n_frames, n_mels)`.

    The options `ASTFeatureExtractor` uses: 25 ms Hann ("hanning", symmetric) window, 10 ms
    shift, `snip_edges` (frames lie wholly inside the signal: `1 + (n - 400) // 160` of them),
    per-frame DC removal, pre-emphasis 0.97, power spectrum on 512 points, dither 0, and
    log(max(energy, float32 eps)). Float64 inside; float32 out.
    """
    n = len(mono_16k)
    if n < KALDI_FRAME:
        return np.zeros((0, n_mels), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(mono_16k.astype(np.float64), KALDI_FRAME)
    frames = frames[::KALDI_SHIFT]
    frames = frames - frames.mean(axis=1, keepdims=True)
    # Kaldi's pre-emphasis repeats each frame's first sample as its predecessor.
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - KALDI_PREEMPHASIS * previous) * np.hanning(KALDI_FRAME)
    power = np.square(np.abs(sp_fft.rfft(frames, n=KALDI_FFT, axis=1)))
    energies = power @ kaldi_mel_banks(n_mels)
    return np.log(np.maximum(energies, KALDI_EPSILON)).astype(np.float32)


def pad_frames(fbank: np.ndarray, n_frames: int = AST_MAX_FRAMES) -> np.ndarray:
    """`(k, n_mels)` -> `(n_frames, n_mels)`: zero rows appended, or the tail cut, as AST does."""
    if len(fbank) >= n_frames:
        return np.ascontiguousarray(fbank[:n_frames])
    out = np.zeros((n_frames, fbank.shape[1]), dtype=np.float32)
    out[: len(fbank)] = fbank
    return out


def ast_log_mel(stereo_44k: np.ndarray) -> np.ndarray:
    """AST input of one window: float32 `(2, n)` at 44.1 kHz -> float32 `(1024, 128)`.

    Mono, resampled to 16 kHz, Kaldi log-mel fbank, padded / truncated to 1024 frames. Not
    normalised: the tone identifier applies the AudioSet mean / std of its model.
    """
    return pad_frames(kaldi_fbank(to_mono_16k(stereo_44k)))
