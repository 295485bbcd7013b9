"""The embedded `dsp` separator: classical signal processing, no weights, numpy/scipy only.

One STFT of the stereo mix; per time-frequency bin three cues, none looking further than
about 0.3 s away (so chunks with a little context reproduce the whole-track result):
- tonality: harmonic/percussive split by median filtering the magnitude spectrogram along time
  (steady partials) and along frequency (broadband hits), turned into a soft ratio in [0, 1];
- centre-ness: how alike the two channels are, `2 Re(L R*) / (|L|² + |R|²)` clipped to [0, 1]
  (vocals and bass sit in the centre, pads and room spread wide);
- frequency: a coarse prior per stem over log frequency (kick and bass low, voice mid, hats high).

Each stem's score is its prior times powers of the cues it favours; the scores are normalised so
the four soft masks sum to 1 in every bin. Vocals, drums and bass are the masked mix through a
perfect-reconstruction inverse STFT; `other` is the mixture minus those three, so the stems sum
back to the mixture to float32 rounding. The constants were tuned on one MUSDB excerpt and on
`test.songgen` songs; see `bench/bench_dsp.py` for the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view

from common.constants import DSP_STEMS

N_FFT_44K = 4096  # samples at 44.1 kHz (93 ms): fine enough to resolve bass partials from kicks
HOP_DIVISOR = 4  # hop = n_fft / 4: 75 % overlap, where the sqrt-Hann pair reconstructs exactly
HARMONIC_KERNEL_S = 0.4  # median along time: a partial steadier than this counts as harmonic
PERCUSSIVE_KERNEL_HZ = 60.0  # median along frequency: a hit broader than this counts as percussive
TINY = np.float32(np.finfo(np.float32).tiny)  # a 0/0 gives 0, never NaN

# Log-frequency anchors (Hz) of the per-stem priors; linear in log2(f) between them, flat outside.
PRIOR_ANCHORS_HZ = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 12800.0)


@dataclass(frozen=True)
class StemCue:
    """How one stem's score is formed: `prior(f) * (t0 + t)**t_pow * (c0 + c)**c_pow`.

    `t` is the tonality (harmonic ratio) when `tonal`, else 1 - tonality (percussiveness);
    `c` is the centre-ness when `centred`, else 1 - centre-ness; `c_pow = 0` ignores it.
    """

    prior: tuple[float, ...]  # one value per PRIOR_ANCHORS_HZ
    tonal: bool
    t0: float
    t_pow: float
    centred: bool = True
    c0: float = 0.0
    c_pow: float = 0.0


CUES = {
    "vocals": StemCue((0, 0, 0.05, 0.7, 1, 0.7, 0.3, 0.3, 0.1), True, 0.15, 0.5, True, 0.15, 2.0),
    "drums": StemCue((1.2, 0.4, 0.4, 0.12, 0.08, 0.1, 0.35, 1, 1), False, 0.2, 1.0),
    "bass": StemCue((0.6, 1.2, 0.5, 0.5, 0.4, 0.05, 0, 0, 0), True, 0.1, 6.0, True, 0.2, 0.5),
    "other": StemCue((0.04, 0.07, 0.75, 1, 0.7, 1, 1, 0.3, 0.1), True, 0.45, 2.0, False, 0.3, 1.0),
}


def fft_size(sample_rate: int) -> int:
    """The STFT size for a rate: the power of two nearest to N_FFT_44K's duration."""
    return max(4 * HOP_DIVISOR, int(2 ** round(np.log2(N_FFT_44K * sample_rate / 44100))))


def _window(n_fft: int) -> np.ndarray:
    """(n_fft,) periodic sqrt-Hann: analysis and synthesis window at once."""
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def _lead(n_fft: int, origin: int) -> int:
    """Zeros before the signal: n_fft - hop, plus `origin mod hop` so that frames start at the
    same absolute samples (multiples of hop, minus n_fft - hop) whatever the chunk."""
    hop = n_fft // HOP_DIVISOR
    return n_fft - hop + origin % hop


def stft(x: np.ndarray, n_fft: int, origin: int = 0) -> np.ndarray:
    """(C, n) float32 -> (C, n_fft // 2 + 1, T) complex64, hop n_fft / HOP_DIVISOR.

    The signal is zero-padded by `_lead` in front and to whole frames at the end, so every
    sample, even of a 1-sample input, lies under HOP_DIVISOR frames and `istft` inverts exactly.
    `origin` is the track index of `x[:, 0]`; it only shifts the frame grid.
    """
    hop = n_fft // HOP_DIVISOR
    n = x.shape[-1]
    lead = _lead(n_fft, origin)
    frames = (lead + n - 1) // hop + 1  # the last frame starts at or before sample n - 1
    padded = np.zeros((x.shape[0], (frames - 1) * hop + n_fft), dtype=np.float32)
    padded[:, lead : lead + n] = x
    chunks = sliding_window_view(padded, n_fft, axis=-1)[:, ::hop]
    spec = scipy.fft.rfft(chunks * _window(n_fft), axis=-1)
    return np.ascontiguousarray(spec.transpose(0, 2, 1))


def istft(spec: np.ndarray, n_fft: int, n: int, origin: int = 0) -> np.ndarray:
    """(C, F, T) complex64 -> (C, n) float32; inverts `stft(x, n_fft, origin)` exactly."""
    hop = n_fft // HOP_DIVISOR
    frames = scipy.fft.irfft(spec.transpose(0, 2, 1), n=n_fft, axis=-1) * _window(n_fft)
    n_ch, n_frames, _ = frames.shape
    out = np.zeros((n_ch, (n_frames - 1) * hop + n_fft), dtype=np.float32)
    for k in range(HOP_DIVISOR):  # each hop-long slice of every frame lands on a fixed stride
        part = frames[:, :, k * hop : (k + 1) * hop].reshape(n_ch, -1)
        out[:, k * hop : k * hop + part.shape[-1]] += part
    # sqrt-Hann squared is Hann, whose copies at hop n_fft / D sum to D / 2 everywhere.
    lead = _lead(n_fft, origin)
    return out[:, lead : lead + n] / np.float32(HOP_DIVISOR / 2)


def median_filter(x: np.ndarray, size: int, axis: int, block: int = 256) -> np.ndarray:
    """(F, T) float32 -> (F, T): running median of odd `size` along `axis`, zeros beyond the ends.

    Same result as `scipy.ndimage.median_filter(mode="constant")` with a 1-D kernel, several
    times faster: a partial sort of the window view, `block` rows at a time to stay in cache.
    Zeros, not repeated edges, because a chunk at the track's ends sees zeros there
    (`common.chunks.chunk_window`): so its frames match the whole track's.
    """
    half = size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (half, half)
    padded = np.pad(x, pad)
    out = np.empty_like(x)
    for i in range(0, x.shape[0], block):
        rows = padded[i : i + block] if axis == 1 else padded[i : i + block + 2 * half]
        windows = sliding_window_view(rows, size, axis=axis)
        out[i : i + block] = np.partition(windows, half, axis=-1)[..., half]
    return out


def tonality(mag: np.ndarray, sample_rate: int, n_fft: int) -> np.ndarray:
    """(F, T) magnitude -> (F, T) in [0, 1]: harmonic share h² / (h² + p²) of each bin, with h and
    p the magnitude median-filtered along time and along frequency (Fitzgerald's HPSS)."""
    hop = n_fft // HOP_DIVISOR
    t_size = int(round(HARMONIC_KERNEL_S * sample_rate / hop)) | 1
    f_size = int(round(PERCUSSIVE_KERNEL_HZ * n_fft / sample_rate)) | 1
    harmonic = np.square(median_filter(mag, t_size, axis=1))
    percussive = np.square(median_filter(mag, f_size, axis=0))
    return harmonic / np.maximum(harmonic + percussive, TINY)


def centre_ness(spec: np.ndarray) -> np.ndarray:
    """(2, F, T) stereo STFT -> (F, T) in [0, 1]: 1 where L == R (dual mono is all centre),
    about 0 where they are unrelated, 0 where opposed in phase or one channel is silent."""
    left, right = spec[0], spec[1]
    cross = left.real * right.real + left.imag * right.imag
    energy = np.square(np.abs(left)) + np.square(np.abs(right))
    return np.clip(2 * cross / np.maximum(energy, TINY), 0.0, 1.0)


def band_prior(freqs_hz: np.ndarray, values: tuple[float, ...]) -> np.ndarray:
    """(F,) bin frequencies in Hz -> (F, 1) float32 prior, linear in log2 f between anchors."""
    log_f = np.log2(np.maximum(freqs_hz, 1.0))
    return np.interp(log_f, np.log2(PRIOR_ANCHORS_HZ), values).astype(np.float32)[:, None]


def stem_masks(spec: np.ndarray, sample_rate: int, n_fft: int) -> np.ndarray:
    """(2, F, T) stereo STFT -> (4, F, T) float32 soft masks in DSP_STEMS order, summing to 1."""
    tonal = tonality(np.abs(spec).mean(axis=0), sample_rate, n_fft)
    centre = centre_ness(spec)
    freqs = np.arange(spec.shape[1]) * (sample_rate / n_fft)
    scores = []
    for stem in DSP_STEMS:
        cue = CUES[stem]
        t = tonal if cue.tonal else 1 - tonal
        score = band_prior(freqs, cue.prior) * np.power(cue.t0 + t, np.float32(cue.t_pow))
        if cue.c_pow:
            c = centre if cue.centred else 1 - centre
            score *= np.power(cue.c0 + c, np.float32(cue.c_pow))
        scores.append(score)
    scores = np.stack(scores)
    # Some priors are 0 at some frequencies, but the drums' is ≥ 0.08 everywhere and their
    # t0 > 0, so the sum never vanishes, even on digital silence: no 0/0.
    return scores / scores.sum(axis=0)


def separate_dsp(mix: np.ndarray, sample_rate: int = 44100, origin: int = 0) -> np.ndarray:
    """Split a stereo mix into four stems: (2, n) float32 -> (4, 2, n) float32.

    Stems in `DSP_STEMS` order (vocals, drums, bass, other); they sum to `mix` to float32
    rounding. Every step looks at most HARMONIC_KERNEL_S / 2 plus one FFT frame (≈ 0.3 s) away,
    so a chunk separated with ≥ 0.5 s of real context on each side (zeros beyond the track)
    matches the whole-track result to float rounding, provided `origin`, the track index of
    `mix[:, 0]` (a chunk's window start, may be negative), is given: it puts every chunk's STFT
    frames on the whole track's grid. Without it, grids differ by a fraction of a hop and
    chunked results agree with the whole track to about 25-35 dB only.
    """
    mix = np.asarray(mix, dtype=np.float32)
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if mix.ndim != 2 or mix.shape[0] != 2:
        raise ValueError(f"expected stereo audio of shape (2, n), got {mix.shape}")
    n = mix.shape[-1]
    out = np.empty((len(DSP_STEMS), 2, n), dtype=np.float32)
    if n == 0:
        return out
    n_fft = fft_size(sample_rate)
    spec = stft(mix, n_fft, origin)
    masks = stem_masks(spec, sample_rate, n_fft)
    other = DSP_STEMS.index("other")
    masked = [i for i in range(len(DSP_STEMS)) if i != other]
    stems_spec = (masks[masked, None] * spec[None]).reshape(-1, *spec.shape[1:])
    out[masked] = istft(stems_spec, n_fft, n, origin).reshape(len(masked), 2, n)
    # `other` takes the remainder, so the sum is exact whatever the masks' rounding.
    out[other] = mix - out[masked].sum(axis=0)
    return out
