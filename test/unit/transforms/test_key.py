"""librosa's chroma and the Krumhansl–Schmuckler key on synthesised progressions in all 24 keys."""

from __future__ import annotations

import numpy as np
import pytest

from test import musicgen
from transforms import key as K
from transforms.rhythm import to_analysis_rate

SR = musicgen.SR


def key_of(audio: np.ndarray) -> K.KeyResult:
    return K.estimate_key(K.summed(K.chroma_frames(to_analysis_rate(audio))))


def test_key_is_right_on_at_least_22_of_24_progressions():
    right = []
    for mode in ("major", "minor"):
        for tonic in range(12):
            audio, _ = musicgen.key_progression(tonic, mode, seed=tonic)
            result = key_of(audio)
            right.append((result.tonic, result.mode) == (K.PITCH_CLASSES[tonic], mode))
            assert result.tonic is None or 0.0 < result.confidence <= 1.0
    print(f"key right on {sum(right)} of 24 progressions")
    assert sum(right) >= 22


def test_a_slightly_out_of_tune_recording_keeps_its_key():
    audio, _ = musicgen.key_progression(0, "major")
    t = np.arange(audio.shape[1])
    # +30 cents: resample the whole thing 1.7 % faster
    sharp = np.stack([np.interp(t * 2 ** (0.3 / 12), t, ch) for ch in audio]).astype(np.float32)
    result = key_of(sharp)
    assert (result.tonic, result.mode) == ("C", "major")


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (np.zeros((2, 10 * SR), np.float32), "silent"),
        (musicgen.noise(10.0), "no tonal content"),
        (musicgen.sine(440.0, 10.0), "pitch class"),
    ],
    ids=["silence", "noise", "sustained-tone"],
)
def test_no_key_where_there_is_none(audio, reason):
    result = key_of(audio)
    assert result.tonic is None and result.confidence == 0.0
    assert reason in result.reason


def test_chroma_of_a_tone_peaks_at_its_pitch_class():
    for midi in (40, 57, 69, 90):  # E2, A3, A4, F#6
        tone = musicgen.sine(musicgen.note_hz(midi), 3.0)
        frames = K.chroma_frames(to_analysis_rate(tone))
        assert frames.shape == (12, 1 + tone.shape[1] // 2 // 512)
        vector = K.summed(frames)
        assert vector.sum() == pytest.approx(1.0)
        assert int(np.argmax(vector)) == midi % 12


def test_key_profiles_are_the_24_keys():
    profiles, names = K.key_profiles()
    assert profiles.shape == (24, 12)
    assert len(set(names)) == 24
    assert names[0] == ("C", "major") and names[21] == ("A", "minor")
