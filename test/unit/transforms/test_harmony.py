"""A track's key, chords and sections from mono rows, as cqt's `/harmony` gets them."""

import mir_eval
import numpy as np
import pytest
import soxr

from common.constants import ANALYSIS_RATE, SAMPLE_RATE
from test import gmsongs
from transforms.harmony import track_harmony
from transforms.spelling import harte


def mono_22k(stereo: np.ndarray) -> np.ndarray:
    return soxr.resample(stereo.mean(axis=0), SAMPLE_RATE, ANALYSIS_RATE).astype(np.float32)


@pytest.fixture(scope="module")
def song():
    if reason := gmsongs.fluidsynth_missing():
        pytest.skip(reason)
    return gmsongs.render_song("ABABCB", key="Bb major", tempo_bpm=120.0, bars_per_section=4)


def majmin(song, chords) -> float:
    ref_int = np.array([(a, b) for a, b, _ in song.chords])
    est_int = np.array([(a, b) for a, b, _ in chords])
    est_int, est = mir_eval.util.adjust_intervals(
        est_int, [harte(c) for _, _, c in chords], ref_int.min(), ref_int.max(), "N", "N"
    )
    merged = mir_eval.util.merge_labeled_intervals(
        ref_int, [c for _, _, c in song.chords], est_int, est
    )
    intervals, ref_l, est_l = merged
    return mir_eval.chord.weighted_accuracy(
        mir_eval.chord.majmin(ref_l, est_l), mir_eval.util.intervals_to_durations(intervals)
    )


@pytest.mark.parametrize("path", ["stems", "mix"])
def test_key_chords_and_sections_of_a_song(song, path):
    rows = {"mix": mono_22k(song.mix)}
    if path == "stems":
        rows["harmonic"] = mono_22k(song.stems["other"])
        rows["bass"] = mono_22k(song.stems["bass"])
    found = track_harmony(rows, song.beats_s, song.downbeats_s)
    if path == "stems":  # the key, or its relative minor (the same signature)
        assert (found.key.tonic, found.key.mode) in (("Bb", "major"), ("G", "minor"))
    else:  # the mix may be a fifth off (F major here): mir_eval's score 0.5
        score = mir_eval.key.weighted_score(song.key, f"{found.key.tonic} {found.key.mode}")
        assert score >= 0.5, found.key
    assert majmin(song, found.chords) >= 0.8
    labels = {c for _, _, c in found.chords}
    assert not labels & {"A#", "D#", "A#m", "D#m"}  # flats in B♭ major
    changes = len(found.chords)
    assert changes <= 1.3 * len(song.chords)  # no flicker: about one segment a true chord
    assert [label for _, _, label in found.sections] == ["A", "B", "A", "B", "C", "B"]
    downbeats = np.array(song.downbeats_s)
    for start, _, _ in found.sections[1:]:
        assert np.abs(downbeats - start).min() < 0.05  # boundaries on downbeats


def test_too_short_for_anything(song):
    rows = {"mix": mono_22k(song.mix[:, : 3 * SAMPLE_RATE])}
    found = track_harmony(rows, None, None)
    assert found.key.tonic is None and "needs at least 4 s" in found.key.reason
    assert found.chords is None and "needs at least 4 s" in found.chords_reason
    assert found.sections is None and found.sections_reason
