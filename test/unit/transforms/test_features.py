"""Levels, loudness, spectral shape, and the AST log-mel checked against `ASTFeatureExtractor`."""

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
    assert features.magnitude_spectrogram(np.ones(10, np.float32)).shape == (1, 1025)


def test_mono_16k_has_the_resampled_length():
    audio = music_like(1.0)
    mono = features.to_mono_16k(audio)
    assert mono.dtype == np.float32
    assert mono.shape == (int(np.ceil(SR * AST_SAMPLE_RATE / SAMPLE_RATE)),)


@pytest.fixture(params=["torchaudio", "numpy"])
def ast_extractor(request, monkeypatch):
    """`ASTFeatureExtractor` without normalisation, on each of its two fbank backends: kaldi.fbank
    from torchaudio (float32) when torchaudio imports, else its own numpy code (float64)."""
    from transformers.models.audio_spectrogram_transformer import (
        feature_extraction_audio_spectrogram_transformer as ast_fe,
    )

    if request.param == "torchaudio":
        if not ast_fe.is_speech_available():
            pytest.skip("torchaudio is not importable")
    else:
        monkeypatch.setattr(ast_fe, "is_speech_available", lambda: False)
    # We compute in float64 like the numpy backend; torchaudio computes in float32, whose
    # rounding shows most (~3e-4) in near-empty bands of the log.
    atol = 1e-3 if request.param == "torchaudio" else 1e-5
    return ast_fe.ASTFeatureExtractor(do_normalize=False), atol


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")
@pytest.mark.parametrize(
    "audio",
    [
        music_like(10.0),
        music_like(3.0, seed=1),
        music_like(12.0, seed=2),  # longer than 1024 frames: truncated
        np.zeros((2, SR), np.float32),
        music_like(0.03, seed=3),  # a couple of frames
    ],
    ids=["10s", "3s", "12s", "silence", "30ms"],
)
def test_ast_log_mel_matches_the_ast_feature_extractor(audio, ast_extractor):
    extractor, atol = ast_extractor
    expected = extractor(
        features.to_mono_16k(audio), sampling_rate=AST_SAMPLE_RATE, return_tensors="np"
    )["input_values"][0]
    ours = features.ast_log_mel(audio)
    assert ours.shape == expected.shape == (1024, 128)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=atol)
    assert np.mean(np.abs(ours - expected)) < 1e-5


def test_kaldi_frame_count_matches_the_fbank():
    for n in (0, 1102, 1103, 44100, 441000):
        fbank = features.kaldi_fbank(features.to_mono_16k(np.zeros((2, n), np.float32)))
        assert features.kaldi_frame_count(n) == len(fbank)


def test_pad_frames_pads_with_zeros_and_truncates():
    fbank = np.ones((5, 128), np.float32)
    padded = features.pad_frames(fbank, 8)
    assert padded.shape == (8, 128) and padded[:5].all() and not padded[5:].any()
    assert features.pad_frames(np.ones((9, 128), np.float32), 8).shape == (8, 128)


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
