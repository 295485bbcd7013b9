"""Constant-Q chroma and Krumhansl–Schmuckler key on synthesised chord progressions."""

from __future__ import annotations

import numpy as np
import pytest

from common.constants import SAMPLE_RATE
from transforms import key as K

SR = SAMPLE_RATE
C_MAJOR = [[48, 64, 67, 72], [53, 65, 69, 72], [55, 62, 67, 71], [48, 64, 67, 72]]  # I IV V I
A_MINOR = [[45, 64, 69, 72], [50, 62, 65, 69], [52, 64, 68, 71], [45, 64, 69, 72]]  # i iv V i


def note(midi: float, seconds: float) -> np.ndarray:
    """A plucked tone: 4 decaying harmonics, 10 ms attack."""
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    t = np.arange(int(seconds * SR)) / SR
    envelope = np.exp(-2 * t) * np.minimum(1.0, t * 100)
    return envelope * sum(0.5**h * np.sin(2 * np.pi * freq * (h + 1) * t) for h in range(4))


def progression(chords: list[list[int]], shift: float = 0.0, seconds: float = 2.5) -> np.ndarray:
    """Stereo float32 (2, n): each chord `seconds` long, every note moved by `shift` semitones."""
    mono = np.concatenate([sum(note(m + shift, seconds) for m in chord) for chord in chords])
    return np.stack([mono, 0.8 * mono]).astype(np.float32) * 0.2


def test_c_major_progression_is_c_major():
    result = K.analyse_key(progression(C_MAJOR))
    assert result.key == "C major"
    assert result.confidence > 0.8


def test_a_minor_progression_is_a_minor():
    result = K.analyse_key(progression(A_MINOR))
    assert result.key == "A minor"
    assert result.confidence > 0.7


@pytest.mark.parametrize("shift", range(12))
def test_transposed_progressions_give_transposed_keys(shift):
    assert K.analyse_key(progression(C_MAJOR, shift)).key == f"{K.MAJOR_NAMES[shift]} major"
    tonic = (9 + shift) % 12
    assert K.analyse_key(progression(A_MINOR, shift)).key == f"{K.MINOR_NAMES[tonic]} minor"


def test_a_slightly_out_of_tune_recording_keeps_its_key():
    assert K.analyse_key(progression(C_MAJOR, shift=0.3)).key == "C major"  # +30 cents


def test_silence_has_no_key_and_a_zero_chroma():
    result = K.analyse_key(np.zeros((2, 10 * SR), np.float32))
    assert result.key is None
    assert result.confidence == 0.0
    assert result.chroma.shape == (12,) and not result.chroma.any()


def test_noise_has_no_key():
    noise = 0.1 * np.random.default_rng(0).standard_normal((2, 10 * SR)).astype(np.float32)
    result = K.analyse_key(noise)
    assert result.key is None
    assert result.chroma.sum() == pytest.approx(1.0)


def test_chroma_of_a_tone_peaks_at_its_pitch_class_and_sums_to_one():
    t = np.arange(3 * SR) / SR
    for midi in (40, 57, 69, 90):  # E2, A3, A4, F#6
        tone = np.sin(2 * np.pi * 440 * 2 ** ((midi - 69) / 12) * t)
        chroma = K.chroma(np.stack([tone, tone]).astype(np.float32))
        assert chroma.sum() == pytest.approx(1.0)
        assert int(np.argmax(chroma)) == midi % 12
        assert chroma[midi % 12] > 0.8  # the rest leaks from the abrupt start and end


def test_cqt_bin_responds_at_its_centre_frequency():
    kernel = K.cqt_kernel()
    assert kernel.freqs[1] == pytest.approx(65.406, abs=0.01)  # C2 in tune
    k = 100
    t = np.arange(2 * K.CQT_SAMPLE_RATE) / K.CQT_SAMPLE_RATE
    magnitude = K.cqt_magnitude(np.sin(2 * np.pi * kernel.freqs[k] * t), kernel)
    assert magnitude.shape == (K.N_OCTAVES * K.BINS_PER_OCTAVE, 1 + len(t) // K.HOP)
    middle = magnitude[:, magnitude.shape[1] // 2]
    assert int(np.argmax(middle)) == k
    # A unit sinusoid reads about 1/4: Hann mean 1/2, and only the positive frequency half.
    assert middle[k] == pytest.approx(0.25, rel=0.05)


def test_key_profiles_are_the_24_keys():
    profiles, names = K.key_profiles()
    assert profiles.shape == (24, 12)
    assert len(set(names)) == 24
    assert names[0] == "C major" and names[21] == "A minor"


def test_a_flat_chroma_has_no_key():
    assert K.estimate_key(np.full(12, 1 / 12)) == (None, 0.0)
    assert K.estimate_key(np.zeros(12)) == (None, 0.0)
