"""The generated GM songs (test/gmsongs.py): stems sum to the mix, truth lists agree."""

from __future__ import annotations

import numpy as np
import pytest

from test import gmsongs

pytestmark = pytest.mark.skipif(
    gmsongs.fluidsynth_missing() is not None, reason=str(gmsongs.fluidsynth_missing())
)


@pytest.fixture(scope="module")
def song() -> gmsongs.Song:
    return gmsongs.render_song("ABAC", key="Bb major", tempo_bpm=120.0, bars_per_section=2)


def test_stems_sum_to_the_mix_and_have_its_shape(song):
    assert set(song.stems) == {"drums", "bass", "other", "vocals"}
    for stem in song.stems.values():
        assert stem.shape == song.mix.shape and stem.dtype == np.float32
        assert np.sqrt(np.mean(stem**2)) > 1e-3  # every instrument sounds
    np.testing.assert_allclose(sum(song.stems.values()), song.mix, atol=1e-6)
    assert song.mix.shape[0] == 2 and np.abs(song.mix).max() <= gmsongs.MIX_PEAK + 1e-6


def test_duration_beats_sections_and_chords_agree(song):
    bar_s = 4 * 60.0 / 120.0
    duration = 4 * 2 * bar_s  # 4 sections of 2 bars
    assert song.mix.shape[1] == int(np.ceil((duration + gmsongs.TAIL_S) * gmsongs.SR))
    np.testing.assert_allclose(np.diff(song.beats_s), 0.5)
    assert song.downbeats_s == song.beats_s[::4] and len(song.beats_s) == 32
    assert [s[2] for s in song.sections] == list("ABAC")
    assert song.sections[0][0] == 0.0 and song.sections[-1][1] == pytest.approx(duration)
    # chords tile the song without gaps, in the key's spelling
    assert song.chords[0][0] == 0.0 and song.chords[-1][1] == pytest.approx(duration)
    assert all(
        a[1] == pytest.approx(b[0]) for a, b in zip(song.chords, song.chords[1:], strict=False)
    )
    assert song.chords[0][2] == "Bb:maj" and song.key == "Bb major"
    # C's ii-V bars change chord on beat 3
    assert len(song.chords) == 2 + 2 + 2 + 3


def test_notes_lie_in_their_registers_and_repeats_repeat(song):
    for stem, (low, high) in {"bass": (36, 55), "other": (50, 90), "vocals": (60, 90)}.items():
        pitches = [p for _, _, p in song.notes[stem]]
        assert pitches and low <= min(pitches) and max(pitches) <= high, stem
        assert all(0 <= on < off <= song.sections[-1][1] for on, off, _ in song.notes[stem])
    # the lead is monophonic, and the second A repeats the first
    lead = song.notes["vocals"]
    assert all(a[1] <= b[0] for a, b in zip(lead, lead[1:], strict=False))
    a1, _, a2, _ = song.sections
    first = [(on - a1[0], p) for on, _, p in lead if a1[0] <= on < a1[1]]
    second = [(round(on - a2[0], 4), p) for on, _, p in lead if a2[0] <= on < a2[1]]
    assert [(round(t, 4), p) for t, p in first] == second


def test_a_second_call_decodes_the_cache(song):
    again = gmsongs.render_song("ABAC", key="Bb major", tempo_bpm=120.0, bars_per_section=2)
    np.testing.assert_array_equal(again.mix, song.mix)
    assert again.chords == song.chords
