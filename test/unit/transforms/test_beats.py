"""BeatNet's beats, downbeats and tempo (transforms/beats.py), with its real weights.

On General MIDI songs rendered by FluidSynth with known beats: from the mix and from the drums
and bass stems (what the gateway sends when a neural separator ran). Inputs without a beat get
no tempo and a reason.
"""

import mir_eval
import numpy as np
import pytest
import soxr

from common.constants import ANALYSIS_RATE, SAMPLE_RATE
from test import gmsongs, musicgen
from transforms.beats import BeatTracker, bar_length, fitted_bpm

SONGS = [("ABAB", "F major", 100.0), ("ABAC", "E minor", 132.0)]


def mono_22k(stereo: np.ndarray) -> np.ndarray:
    return soxr.resample(stereo.mean(axis=0), SAMPLE_RATE, ANALYSIS_RATE).astype(np.float32)


@pytest.fixture(scope="module")
def tracker() -> BeatTracker:
    return BeatTracker("beatnet")


@pytest.fixture(scope="module", params=SONGS, ids=lambda s: f"{s[0]}-{s[2]:g}")
def song(request):
    if reason := gmsongs.fluidsynth_missing():
        pytest.skip(reason)
    form, key, bpm = request.param
    return gmsongs.render_song(form, key=key, tempo_bpm=bpm, bars_per_section=4)


@pytest.mark.parametrize("source", ["mix", "drums+bass"])
def test_tempo_beats_and_downbeats_of_a_song(tracker, song, source):
    audio = song.mix if source == "mix" else song.stems["drums"] + song.stems["bass"]
    found = tracker.track(mono_22k(audio))
    assert found.model == "beatnet" and found.reason == ""
    assert abs(found.tempo_bpm - song.tempo_bpm) <= 0.04 * song.tempo_bpm, found.tempo_bpm
    ref = mir_eval.beat.trim_beats(np.array(song.beats_s))
    beat_f = mir_eval.beat.f_measure(ref, mir_eval.beat.trim_beats(np.array(found.beats_s)))
    assert beat_f >= 0.9, beat_f
    assert found.time_signature in (2, 4) and found.downbeats_s
    assert 0.0 <= found.confidence <= 1.0


def test_a_click_track_has_its_tempo(tracker):
    clicks = musicgen.drum_pattern(90.0, 16.0)
    found = tracker.track(mono_22k(clicks))
    assert found.tempo_bpm is not None and abs(found.tempo_bpm - 90.0) <= 3.6


@pytest.mark.parametrize(
    "name, audio, words",
    [
        ("silence", np.zeros(10 * ANALYSIS_RATE, np.float32), "silent"),
        ("2 s", 0.1 * np.random.default_rng(0).standard_normal(2 * ANALYSIS_RATE), "2.0 s"),
        ("noise", 0.1 * np.random.default_rng(1).standard_normal(10 * ANALYSIS_RATE), "no"),
        (
            "one sustained tone",
            0.3 * np.sin(2 * np.pi * 440 * np.arange(10 * ANALYSIS_RATE) / ANALYSIS_RATE),
            "no",
        ),
    ],
)
def test_no_beat_no_tempo_and_why(tracker, name, audio, words):
    found = tracker.track(audio.astype(np.float32))
    assert found.tempo_bpm is None and found.beats_s is None and found.downbeats_s is None
    assert words in found.reason


def test_tempo_of_beat_times_is_finer_than_the_frame_grid():
    beats = np.round(np.arange(40) * (60 / 139) * 50) / 50  # 139 BPM on a 20 ms grid
    assert abs(fitted_bpm(beats) - 139) < 1.0
    assert bar_length(np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 1])) == 3
    assert bar_length(np.array([2, 3, 4])) is None
