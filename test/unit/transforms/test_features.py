"""Levels, loudness, spectral shape, and the AST input that `ASTFeatureExtractor` makes."""

from __future__ import annotations

import numpy as np
import pytest

from common.constants import AST_SAMPLE_RATE, SAMPLE_RATE
from common.errors import BadRequest
from transforms import features

SR = SAMPLE_RATE


def sine(freq: float, seconds: float, amplitude: float = 1.0) -> np.ndarray:
    """Stereo float32 (2, n) sine at 44.1 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    mono = amplitude * np.sin(2 * np.pi * freq * t)
    return np.stack([mono, mono]).astype(np.float32)


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Notes with harmonics, a little noise and different channels: exercises every mel band."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    left = sum(0.2 / (h + 1) * np.sin(2 * np.pi * 220 * (h + 1) * t) for h in range(8))
    right = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2
    audio = np.stack([left, right]) + 0.02 * rng.standard_normal((2, n))
    return audio.astype(np.float32)


def test_rms_and_peak_of_a_full_scale_sine():
    audio = sine(1000, 1.0)
    assert features.rms_db(audio) == pytest.approx(-3.0103, abs=0.01)
    assert features.peak_db(audio) == pytest.approx(0.0, abs=0.01)
    assert features.peak_db(0.5 * audio) == pytest.approx(-6.0206, abs=0.01)


def test_silence_reports_the_floor_not_minus_infinity():
    silence = np.zeros((2, SR), dtype=np.float32)
    assert features.rms_db(silence) == features.DB_FLOOR
    assert features.peak_db(silence) == features.DB_FLOOR
    assert features.rms_db(np.zeros((2, 0), dtype=np.float32)) == features.DB_FLOOR


def test_loudness_of_the_ebu_tech_3341_reference_tone():
    # EBU Tech 3341 case 1: stereo 1 kHz sine at -23 dBFS reads -23.0 +- 0.1 LUFS.
    audio = sine(1000, 20.0, amplitude=10 ** (-23 / 20))
    assert features.integrated_loudness(audio) == pytest.approx(-23.0, abs=0.1)


@pytest.mark.parametrize(
    "audio",
    [np.zeros((2, 5 * SR), np.float32), sine(1000, 0.3), sine(1000, 5.0, amplitude=1e-5)],
    ids=["silence", "shorter-than-a-block", "below-absolute-gate"],
)
def test_loudness_is_none_where_bs1770_defines_none(audio):
    assert features.integrated_loudness(audio) is None


def test_centroid_and_rolloff_of_a_sine_sit_at_its_frequency():
    bin_hz = SR / features.STFT_SIZE
    centroid, rolloff = features.spectral_centroid_rolloff(sine(1000, 2.0)[0])
    assert centroid == pytest.approx(1000, abs=2 * bin_hz)
    assert rolloff == pytest.approx(1000, abs=2 * bin_hz)


def test_centroid_and_rolloff_of_white_noise():
    noise = np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    centroid, rolloff = features.spectral_centroid_rolloff(noise)
    assert centroid == pytest.approx(SR / 4, rel=0.02)
    assert rolloff == pytest.approx(0.85 * SR / 2, rel=0.02)


def test_centroid_and_rolloff_of_silence_and_of_a_tiny_window():
    assert features.spectral_centroid_rolloff(np.zeros(SR, np.float32)) == (0.0, 0.0)
    centroid, rolloff = features.spectral_centroid_rolloff(sine(1000.0, 0.001)[0])
    assert 0.0 < centroid < SR / 2 and 0.0 < rolloff <= SR / 2


def test_mono_16k_has_the_resampled_length():
    audio = music_like(1.0)
    mono = features.to_mono_16k(audio)
    assert mono.dtype == np.float32
    assert mono.shape == (int(np.ceil(SR * AST_SAMPLE_RATE / SAMPLE_RATE)),)


@pytest.mark.parametrize(
    "audio",
    [music_like(10.24), music_like(3.0, seed=1), music_like(12.0, seed=2), np.zeros((2, SR))],
    ids=["10.24s", "3s", "12s-truncated", "silence"],
)
def test_ast_input_is_the_feature_extractors(audio):
    from transformers import ASTFeatureExtractor

    expected = ASTFeatureExtractor()(
        features.to_mono_16k(audio.astype(np.float32)),
        sampling_rate=AST_SAMPLE_RATE,
        return_tensors="np",
    )["input_values"][0]
    ours = features.ast_input(audio.astype(np.float32))
    assert ours.shape == (1024, 128) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    # normalised with AudioSet's statistics: music sits near 0, not at a raw log energy
    assert -3.0 < float(ours[:100].mean()) < 3.0


def test_a_window_shorter_than_one_fbank_frame_has_no_ast_input():
    assert features.ast_input(music_like(0.02)) is None  # 20 ms < one 25 ms frame
    assert features.ast_input(music_like(0.03)).shape == (1024, 128)


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros((1, 100), np.float32),
        np.zeros((2, 0), np.float32),
        np.zeros((200,), np.float32),
        np.full((2, 100), np.nan, np.float32),
    ],
    ids=["mono", "empty", "1-d", "nan"],
)
def test_check_window_rejects_what_is_not_stereo_finite_audio(audio):
    with pytest.raises(BadRequest):
        features.check_window(audio)
