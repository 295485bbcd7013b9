"""Song sections on generated GM songs of a known form (test/gmsongs.py), and on audio that
has none (silence, a short clip, noise, a held tone)."""

from __future__ import annotations

from dataclasses import dataclass

import mir_eval
import numpy as np
import pytest

from common.constants import ANALYSIS_RATE
from test import gmsongs
from transforms import sections
from transforms.rhythm import to_analysis_rate

# (form, key, tempo in BPM): 4 bars a section, 8-9.6 s; 39-53 s a song
SONGS = (("ABABCB", "F major", 120.0), ("ABACAB", "A minor", 110.0), ("AABA", "D minor", 100.0))
# Measured with the true downbeats: F = 1.00 at +-3 s and pairwise label F = 1.00 on all three;
# on 9 more songs (forms up to AABBCA, keys, 80-150 BPM, 4- and 8-bar sections) F >= 0.92
# (the B B of AABBCA stays one section) and pairwise F = 1.00. Without downbeats or beats the
# boundaries move to the nearest beat / 0.5 s and pairwise F stays >= 0.94.
MIN_HIT_F = 0.7
MIN_PAIRWISE_F = 0.8


@dataclass(frozen=True)
class Found:
    song: gmsongs.Song
    mono: np.ndarray  # (n,) float32 at 22.05 kHz
    result: sections.Sections  # with the true beats and downbeats


@pytest.fixture(scope="module")
def found() -> dict[str, Found]:
    if reason := gmsongs.fluidsynth_missing():
        pytest.skip(reason)
    out = {}
    for form, key, bpm in SONGS:
        song = gmsongs.render_song(form, key, bpm, bars_per_section=4)
        mono = to_analysis_rate(song.mix)
        out[form] = Found(song, mono, sections.find_sections(mono, song.beats_s, song.downbeats_s))
    return out


def reference(found: Found) -> tuple[np.ndarray, list[str]]:
    """The true sections as mir_eval intervals `(s, 2)` and labels; the last one runs to the
    end of the audio (the notes' release tail belongs to it)."""
    intervals = np.array([[a, b] for a, b, _ in found.song.sections])
    intervals[-1, 1] = found.mono.size / ANALYSIS_RATE
    return intervals, [label for _, _, label in found.song.sections]


def estimate(result: sections.Sections) -> tuple[np.ndarray, list[str]]:
    assert result.sections is not None, result.reason
    return (
        np.array([[s.start_s, s.end_s] for s in result.sections]),
        [s.label for s in result.sections],
    )


@pytest.mark.parametrize("form", [form for form, _, _ in SONGS])
def test_boundaries_are_found_within_3_s(found: dict[str, Found], form: str):
    ref, _ = reference(found[form])
    est, labels = estimate(found[form].result)
    _, _, f = mir_eval.segment.detection(ref, est, window=3)
    print(f"{form}: found {''.join(labels)}, boundary F at +-3 s = {f:.2f}")
    assert f >= MIN_HIT_F


@pytest.mark.parametrize("form", [form for form, _, _ in SONGS])
def test_repeated_sections_share_a_label(found: dict[str, Found], form: str):
    ref, ref_labels = reference(found[form])
    est, labels = estimate(found[form].result)
    _, _, f = mir_eval.segment.pairwise(ref, ref_labels, est, labels)
    print(f"{form}: pairwise label F = {f:.2f}")
    assert f >= MIN_PAIRWISE_F


def test_the_form_is_recovered_with_the_true_downbeats(found: dict[str, Found]):
    # measured: exact on these three and on 9 more songs (AABA's A A from the repeat split)
    for form, item in found.items():
        assert "".join(estimate(item.result)[1]) == form


def test_a_run_twice_as_long_as_its_type_is_two_repeats_but_ten_times_is_one_part():
    edges = np.arange(0.0, 200.5, 0.5)  # a 0.5 s grid: edge i at i / 2 s
    anchors = np.arange(0, edges.size, 4)  # a downbeat every 2 s
    # A 0-16 s, B 16-24, A 24-32 s -> A A B A
    bounds, labels = sections.split_repeats(
        np.array([0, 32, 48, 64]), np.array([0, 1, 0]), edges[:65], anchors[anchors <= 64]
    )
    assert edges[bounds].tolist() == [0.0, 8.0, 16.0, 24.0, 32.0]
    assert labels.tolist() == [0, 0, 1, 0]
    # A 0-8 s, B 8-16, A 16-96 s: ten A's in a row are more likely one long part
    bounds, labels = sections.split_repeats(
        np.array([0, 16, 32, 192]), np.array([0, 1, 0]), edges[:193], anchors[anchors <= 192]
    )
    assert bounds.tolist() == [0, 16, 32, 192]


def test_labels_are_letters_in_order_of_first_appearance(found: dict[str, Found]):
    for item in found.values():
        _, labels = estimate(item.result)
        firsts = list(dict.fromkeys(labels))
        assert firsts == [chr(ord("A") + i) for i in range(len(firsts))]


def test_sections_tile_the_track_and_start_on_downbeats(found: dict[str, Found]):
    for item in found.values():
        est, _ = estimate(item.result)
        assert est[0, 0] == 0.0
        assert est[-1, 1] == pytest.approx(item.mono.size / ANALYSIS_RATE, abs=1e-3)
        np.testing.assert_allclose(est[1:, 0], est[:-1, 1])
        assert np.all(np.diff(est, axis=1) >= sections.MIN_SECTION_S)
        downbeats = np.array(item.song.downbeats_s)
        gaps = np.abs(est[1:, 0, None] - downbeats[None, :]).min(axis=1)
        assert np.all(gaps < 1e-3)


def test_without_downbeats_boundaries_fall_on_beats(found: dict[str, Found]):
    item = found["ABABCB"]
    result = sections.find_sections(item.mono, item.song.beats_s, None)
    est, _ = estimate(result)
    ref, _ = reference(item)
    assert mir_eval.segment.detection(ref, est, window=3)[2] >= MIN_HIT_F
    beats = np.array(item.song.beats_s)
    assert np.all(np.abs(est[1:, 0, None] - beats[None, :]).min(axis=1) < 1e-3)


def test_without_beats_boundaries_fall_on_the_frame_grid(found: dict[str, Found]):
    item = found["ABACAB"]
    est, _ = estimate(sections.find_sections(item.mono, None, None))
    ref, _ = reference(item)
    assert mir_eval.segment.detection(ref, est, window=3)[2] >= MIN_HIT_F
    steps = est[1:, 0] / sections.FRAME_GRID_S
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)


def structureless() -> dict[str, np.ndarray]:
    """(n,) float32 mono at 22.05 kHz of audio with no sections, 25 s unless short."""
    rng = np.random.default_rng(0)
    t = np.arange(25 * ANALYSIS_RATE) / ANALYSIS_RATE
    return {
        "silence": np.zeros(t.size),
        "short": 0.3 * np.sin(2 * np.pi * 220 * t[: 10 * ANALYSIS_RATE]),
        "empty": np.zeros(0),
        "noise": 0.1 * rng.standard_normal(t.size),
        "tone": 0.5 * np.sin(2 * np.pi * 440 * t),
        "chord": sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)),
    }


@pytest.mark.parametrize("name", list(structureless()))
@pytest.mark.parametrize("with_beats", [False, True])
def test_no_sections_without_structure(name: str, with_beats: bool):
    audio = structureless()[name].astype(np.float32)
    beats = list(np.arange(0.5, audio.size / ANALYSIS_RATE, 0.5)) if with_beats else None
    result = sections.find_sections(audio, beats, beats[::4] if beats else None)
    print(f"{name}: {result.reason}")
    assert result.sections is None
    assert result.reason


def test_the_first_ten_seconds_of_a_song_are_too_short(found: dict[str, Found]):
    item = found["ABABCB"]
    result = sections.find_sections(item.mono[: 10 * ANALYSIS_RATE], item.song.beats_s, None)
    assert result.sections is None
    assert "too short" in result.reason


def test_untidy_beats_and_too_few_downbeats(found: dict[str, Found]):
    """Beats out of order or doubled, and two downbeats (too few to snap to): the grid keeps
    one cell a beat and the boundaries fall on beats."""
    item = found["ABACAB"]
    beats = item.song.beats_s[::-1] + item.song.beats_s[:10]
    est, _ = estimate(sections.find_sections(item.mono, beats, item.song.downbeats_s[:2]))
    ref, _ = reference(item)
    assert mir_eval.segment.detection(ref, est, window=3)[2] >= MIN_HIT_F
    on_beats = np.abs(est[1:, 0, None] - np.array(item.song.beats_s)[None, :]).min(axis=1)
    assert np.all(on_beats < 1e-3)


def test_audio_with_nan_has_no_sections():
    audio = np.full(20 * ANALYSIS_RATE, np.nan, dtype=np.float32)
    result = sections.find_sections(audio, None, None)
    assert result.sections is None
    assert "NaN" in result.reason
