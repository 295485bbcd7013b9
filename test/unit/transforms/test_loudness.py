"""Integrated loudness measured window by window equals pyloudnorm's on the whole signal."""

from __future__ import annotations

import numpy as np
import pytest

from common.analysis_plan import window_bounds
from common.constants import ANALYSIS_CONTEXT, LOUDNESS_STEP
from test import musicgen
from transforms import features, loudness

SR = musicgen.SR


def windowed(audio: np.ndarray, hop: int) -> float | None:
    """What the gateway gets: each window's step sums, with a second of context, added up."""
    n = audio.shape[1]
    steps = np.zeros(-(-n // LOUDNESS_STEP))
    for start, _ in window_bounds(n, hop):
        lo = max(0, start - ANALYSIS_CONTEXT)
        own = min(hop, n - start)
        piece = loudness.step_sums(audio[:, lo : start + own], start - lo, own, start)
        first = start // LOUDNESS_STEP
        steps[first : first + len(piece)] += piece
    return loudness.integrated_from_steps(steps, n)


def test_windowed_loudness_equals_pyloudnorm_on_the_whole_track():
    song, _ = musicgen.key_progression(2, "minor", 3.0)
    drums = musicgen.drum_pattern(120.0, song.shape[1] / SR)
    audio = 0.5 * song + drums
    audio[:, 5 * SR : 9 * SR] *= 0.01  # a quiet passage the relative gate removes
    expected = features.integrated_loudness(audio)
    for hop in (451584, 5 * 44032):
        assert windowed(audio, hop) == pytest.approx(expected, abs=1e-3)


def test_a_minus_20_dbfs_sine_reads_bs1770s_value():
    # BS.1770-4: a 0 dBFS 1 kHz sine in one front channel reads -3.01 LKFS; in both -> 0.0
    tone = musicgen.sine(1000.0, 20.0, level=0.1)  # -20 dBFS, full-scale referenced
    assert windowed(tone, 451584) == pytest.approx(-20.0, abs=0.5)
    one_channel = tone.copy()
    one_channel[1] = 0.0
    assert windowed(one_channel, 451584) == pytest.approx(-23.01, abs=0.5)
    assert features.integrated_loudness(tone) == pytest.approx(-20.0, abs=0.5)


def test_silence_and_a_blip_have_no_integrated_loudness():
    assert windowed(np.zeros((2, 5 * SR), np.float32), 451584) is None
    assert loudness.integrated_from_steps(np.ones(3), 3 * LOUDNESS_STEP) is None  # < 400 ms
