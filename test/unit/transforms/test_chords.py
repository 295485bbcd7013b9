"""Chord recognition on synthesised progressions with known chords."""

from __future__ import annotations

import numpy as np

from test import musicgen
from transforms import chords
from transforms.key import chroma_frames
from transforms.rhythm import FRAME_S, to_analysis_rate


def labelled_fraction(segments: list[chords.ChordSegment], truth: list[str], each_s: float):
    """The share of the duration whose recognised chord is the true one."""
    n = segments[-1].end_frame
    right = 0
    for seg in segments:
        for f in range(seg.start_frame, seg.end_frame):
            right += seg.chord == truth[min(len(truth) - 1, int(f * FRAME_S / each_s))]
    return right / n


def test_chords_are_right_on_at_least_85_percent_of_the_duration():
    right = total = 0.0
    rng = np.random.default_rng(7)
    for seed in range(8):
        # 8 random major / minor triads, 1.5-3 s each
        each_s = float(rng.uniform(1.5, 3.0))
        progression = [(int(rng.integers(12)), str(rng.choice(["maj", "min"]))) for _ in range(8)]
        audio = musicgen.progression(progression, each_s, seed=seed)
        truth = [musicgen.chord_name(r, q) for r, q in progression]
        segments = chords.recognise(chroma_frames(to_analysis_rate(audio)))
        share = labelled_fraction(segments, truth, each_s)
        right += share * audio.shape[1]
        total += audio.shape[1]
    print(f"chord symbol right on {100 * right / total:.1f} % of the duration")
    assert right / total >= 0.85


def test_segments_cover_every_frame_in_order():
    audio = musicgen.progression([(0, "maj"), (9, "min"), (5, "maj"), (7, "maj")], 2.0)
    frames = chroma_frames(to_analysis_rate(audio))
    segments = chords.recognise(frames)
    assert segments[0].start_frame == 0 and segments[-1].end_frame == frames.shape[1]
    assert all(a.end_frame == b.start_frame for a, b in zip(segments, segments[1:], strict=False))
    assert [s.chord for s in segments if s.end_frame - s.start_frame > 20] == ["C", "Am", "F", "G"]


def test_silence_noise_and_a_single_tone_are_no_chord():
    for audio in (np.zeros((2, 5 * musicgen.SR), np.float32), musicgen.noise(5.0), musicgen.sine()):
        segments = chords.recognise(chroma_frames(to_analysis_rate(audio)))
        assert {s.chord for s in segments} == {"N"}


def test_templates_are_24_unit_triads():
    t = chords.templates()
    assert t.shape == (24, 12)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0)
    # C major's strongest classes are its notes C, E, G
    assert set(np.argsort(-t[0])[:3]) == {0, 4, 7}
    assert set(np.argsort(-t[12 + 9])[:3]) == {9, 0, 4}  # A minor: A, C, E
    assert chords.chord_labels()[12 + 9] == "Am" and chords.chord_labels()[-1] == "N"
