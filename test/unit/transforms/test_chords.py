"""Chord recognition on synthesised progressions and generated GM songs with known chords."""

from __future__ import annotations

from dataclasses import dataclass

import mir_eval
import numpy as np
import pytest

from test import gmsongs, musicgen
from transforms import chords, spelling
from transforms.key import chroma_frames, stems_chroma, stems_key
from transforms.rhythm import FRAME_S, HOP, to_analysis_rate


def labelled_fraction(segments: list[chords.ChordSegment], truth: list[str], each_s: float):
    """The share of the duration whose recognised chord is the true one ("Bb" == "A#")."""
    n = segments[-1].end_frame
    right = 0
    for seg in segments:
        for f in range(seg.start_frame, seg.end_frame):
            right += same_chord(seg.chord, truth[min(len(truth) - 1, int(f * FRAME_S / each_s))])
    return right / n


def same_chord(a: str, b: str) -> bool:
    """Whether two labels name the same chord, however spelled."""
    a, b = spelling.harte(a), spelling.harte(b)
    if "N" in (a, b):
        return a == b
    (root_a, quality_a), (root_b, quality_b) = a.split(":"), b.split(":")
    return spelling.pitch_class(root_a) == spelling.pitch_class(root_b) and quality_a == quality_b


def test_chords_are_right_on_at_least_85_percent_of_the_duration():
    right = right_on_grid = total = 0.0
    rng = np.random.default_rng(7)
    for seed in range(5):
        # 8 random major / minor triads, 1.5-3 s each
        each_s = float(rng.uniform(1.5, 3.0))
        progression = [(int(rng.integers(12)), str(rng.choice(["maj", "min"]))) for _ in range(8)]
        audio = musicgen.progression(progression, each_s, seed=seed)
        truth = [musicgen.chord_name(r, q) for r, q in progression]
        frames = chroma_frames(to_analysis_rate(audio))
        right += labelled_fraction(chords.recognise(frames), truth, each_s) * audio.shape[1]
        # the same on the 0.5 s grid, whose boundaries miss the changes by up to 0.25 s
        grid = chords.beat_chords(frames)
        right_on_grid += labelled_fraction(grid, truth, each_s) * audio.shape[1]
        total += audio.shape[1]
    print(
        f"chord symbol right on {100 * right / total:.1f} % of the duration per frame, "
        f"{100 * right_on_grid / total:.1f} % on a 0.5 s grid"
    )
    assert right / total >= 0.85
    assert right_on_grid / total >= 0.85


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


# --- beat-synchronous chords, from the stems and from the mix, on generated GM songs ---

SONGS = (("ABAB", "F major", 100.0), ("ABAC", "E minor", 110.0), ("AABC", "Eb major", 120.0))


@dataclass(frozen=True)
class Analysed:
    song: gmsongs.Song
    harmonic: np.ndarray  # (12, n_frames) chroma of the "other" stem
    bass: np.ndarray  # (12, n_frames) chroma of the bass stem
    mix: np.ndarray  # (12, n_frames) chroma of the mix through HPSS (today's path)
    beats: np.ndarray  # true beats as frame indices
    key: tuple[int, str]  # the key estimated from the stems


@pytest.fixture(scope="module")
def songs() -> list[Analysed]:
    if reason := gmsongs.fluidsynth_missing():
        pytest.skip(reason)
    out = []
    for form, key, bpm in SONGS:
        song = gmsongs.render_song(form, key, bpm)
        harmonic, bass = stems_chroma(song.stems)
        result = stems_key(harmonic, bass)
        out.append(
            Analysed(
                song,
                harmonic,
                bass,
                chroma_frames(to_analysis_rate(song.mix)),
                chords.beat_frames_of(song.beats_s),
                (spelling.pitch_class(result.tonic), result.mode),
            )
        )
    return out


def majmin(song: gmsongs.Song, segments: list[chords.ChordSegment]) -> float:
    """mir_eval's duration-weighted majmin accuracy of `segments` against the song's chords."""
    ref_intervals = np.array([c[:2] for c in song.chords])
    ref_labels = [c[2] for c in song.chords]
    est_intervals = np.array([[s.start_frame, s.end_frame] for s in segments]) * FRAME_S
    est_labels = [spelling.harte(s.chord) for s in segments]
    est_intervals, est_labels = mir_eval.util.adjust_intervals(
        est_intervals, est_labels, ref_intervals.min(), ref_intervals.max(), "N", "N"
    )
    intervals, ref, est = mir_eval.util.merge_labeled_intervals(
        ref_intervals, ref_labels, est_intervals, est_labels
    )
    durations = mir_eval.util.intervals_to_durations(intervals)
    return float(mir_eval.chord.weighted_accuracy(mir_eval.chord.majmin(ref, est), durations))


def changes(labels: list[str]) -> int:
    return sum(a != b for a, b in zip(labels, labels[1:], strict=False))


def test_stems_path_is_right_on_80_percent_and_not_worse_than_the_mix(songs):
    for a in songs:
        stems = chords.beat_chords(a.harmonic, a.beats, a.key, a.bass)
        mix_beats = chords.beat_chords(a.mix, a.beats, a.key)
        today = chords.recognise(a.mix)
        figures = [majmin(a.song, s) for s in (stems, mix_beats, today)]
        print(
            f"{a.song.key}: majmin stems+bass on beats {figures[0]:.3f}, mix on beats "
            f"{figures[1]:.3f}, mix per frame (today) {figures[2]:.3f}"
        )
        assert figures[0] >= 0.8
        assert figures[0] >= figures[2] - 1e-9


def test_a_loud_lead_and_drums_spoil_the_mix_path_not_the_stems_path(songs):
    # lead and drums 10 dB up: the melody's passing notes and the hits blur the mix's chroma
    a = songs[0]
    stems = a.song.stems
    loud = stems["other"] + stems["bass"] + 3.0 * (stems["vocals"] + stems["drums"])
    mix = chroma_frames(to_analysis_rate(loud))
    found = {
        "stems+bass on beats": chords.beat_chords(a.harmonic, a.beats, a.key, a.bass),
        "mix on beats": chords.beat_chords(mix, a.beats, a.key),
        "mix per frame (today)": chords.recognise(mix),
    }
    figures = {name: majmin(a.song, segments) for name, segments in found.items()}
    print(
        f"{a.song.key}, lead and drums +10 dB: "
        + ", ".join(f"{n} {f:.3f} ({len(found[n]) - 1} changes)" for n, f in figures.items())
    )
    assert figures["stems+bass on beats"] >= 0.95
    assert figures["stems+bass on beats"] > max(
        figures["mix on beats"], figures["mix per frame (today)"]
    )


def test_stems_with_a_separators_bleed_still_give_the_chords(songs):
    # a separator leaves some of the vocals and drums in "other", and kick in "bass"
    a = songs[0]
    leaky = dict(a.song.stems)
    leaky["other"] = leaky["other"] + 0.3 * (leaky["vocals"] + leaky["drums"])
    leaky["bass"] = leaky["bass"] + 0.15 * leaky["drums"]
    harmonic, bass = stems_chroma(leaky)
    figure = majmin(a.song, chords.beat_chords(harmonic, a.beats, a.key, bass))
    print(f"{a.song.key}, stems with -10 dB bleed: majmin {figure:.3f}")
    assert figure >= 0.8


def test_six_stems_add_piano_and_guitar_to_other(songs):
    other = songs[0].song.stems["other"][:, : 10 * gmsongs.SR]
    alone, _ = stems_chroma({"other": other})
    halves, _ = stems_chroma({"piano": 0.5 * other, "guitar": 0.5 * other, "vocals": other})
    np.testing.assert_allclose(halves, alone, rtol=1e-4, atol=1e-4 * float(alone.max()))


def test_chords_change_about_as_often_as_the_song_and_on_beats(songs):
    for a in songs:
        truth = changes([c[2] for c in a.song.chords])
        segments = chords.beat_chords(a.harmonic, a.beats, a.key, a.bass)
        found = changes(
            [s.chord for s in segments if s.start_frame * FRAME_S < a.song.chords[-1][1]]
        )
        today = changes([s.chord for s in chords.recognise(a.mix)])
        print(f"{a.song.key}: {truth} chord changes, {found} found on beats, {today} per frame")
        assert abs(found - truth) <= 2
        assert {s.start_frame for s in segments[1:]} <= set(a.beats.tolist())


def test_the_stems_key_has_the_songs_signature_and_labels_are_spelled_from_it(songs):
    for a in songs:
        tonic, mode = gmsongs.parse_key(a.song.key)
        # the relative minor / major shares the signature, so it spells the chords alike
        relative = ((tonic + 9) % 12, "minor") if mode == "major" else ((tonic + 3) % 12, "major")
        assert a.key in ((tonic, mode), relative), a.song.key
        labels = {s.chord for s in chords.beat_chords(a.harmonic, a.beats, a.key, a.bass)}
        truth = {c[2].replace(":maj", "").replace(":min", "m") for c in a.song.chords}
        assert labels == truth, a.song.key  # "Bb" in F major, "Ab", "Cm" in Eb major


def test_stems_chroma_needs_a_harmonic_stem_and_matches_the_frame_grid(songs):
    a = songs[0]
    n = a.song.mix.shape[1]
    assert a.harmonic.shape == a.bass.shape == (12, 1 + (n + 1) // 2 // HOP)
    with pytest.raises(ValueError, match="no harmonic stem"):
        stems_chroma({"bass": a.song.stems["bass"], "drums": a.song.stems["drums"]})
    _, bass = stems_chroma({"other": a.song.stems["other"]})
    assert bass is None


def test_the_bass_root_tells_a_chord_from_its_relative():
    # C and E sound above: both C major (C E G) and A minor (A C E); the bass decides
    upper = np.zeros((12, 40))
    upper[[0, 4]] = 1.0
    for root, label in ((0, "C"), (9, "Am")):
        bass = np.zeros((12, 40))
        bass[root] = 1.0
        assert [s.chord for s in chords.beat_chords(upper, None, (0, "major"), bass)] == [label]


def test_without_beats_chords_fall_on_a_half_second_grid():
    audio = musicgen.progression([(0, "maj"), (9, "min"), (5, "maj"), (7, "maj")], 2.0)
    frames = chroma_frames(to_analysis_rate(audio))
    segments = chords.beat_chords(frames, None, (0, "major"))
    step = round(chords.GRID_S / FRAME_S)
    assert segments[0].start_frame == 0 and segments[-1].end_frame == frames.shape[1]
    assert all(a.end_frame == b.start_frame for a, b in zip(segments, segments[1:], strict=False))
    assert all(s.start_frame % step == 0 for s in segments)
    assert [s.chord for s in segments] == ["C", "Am", "F", "G"]


def test_silence_noise_and_a_single_tone_are_no_chord_on_beats():
    for audio in (np.zeros((2, 5 * musicgen.SR), np.float32), musicgen.noise(5.0), musicgen.sine()):
        frames = chroma_frames(to_analysis_rate(audio))
        beats = np.arange(0, frames.shape[1], 26)  # 100 bpm
        assert {s.chord for s in chords.beat_chords(frames, beats, None)} == {"N"}
    assert chords.beat_chords(np.zeros((12, 0)), None) == []


def test_per_frame_labels_are_spelled_in_a_key_when_given():
    audio = musicgen.progression([(10, "maj"), (3, "min")], 2.0)  # Bb, Ebm
    frames = chroma_frames(to_analysis_rate(audio))
    long = [
        s.chord for s in chords.recognise(frames, (3, "minor")) if s.end_frame - s.start_frame > 20
    ]
    assert long == ["Bb", "Ebm"]
    assert [s.chord for s in chords.recognise(frames) if s.end_frame - s.start_frame > 20] == [
        "A#",
        "D#m",
    ]


def test_a_passage_40_db_below_the_loudest_is_no_chord_on_beats():
    # a separated stem keeps the others' bleed far down where its own instrument rests
    audio = musicgen.progression([(0, "maj"), (9, "min"), (5, "maj")], 2.0)
    audio[:, 2 * musicgen.SR : 4 * musicgen.SR] *= 0.003  # -50 dB
    frames = chroma_frames(to_analysis_rate(audio))
    beats = chords.beat_frames_of(np.arange(0.0, 6.0, 0.5))
    assert [s.chord for s in chords.beat_chords(frames, beats, (0, "major"))] == ["C", "N", "F"]
