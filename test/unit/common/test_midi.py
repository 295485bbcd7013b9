"""The MIDI file writer: notes back at their seconds, named tracks, a tempo map from the beats."""

from __future__ import annotations

import io
from collections import namedtuple

import mido
import numpy as np
import pretty_midi
import pytest

from common.errors import InvalidOption
from common.midi import DRUM_CHANNEL, GM_PROGRAMS, Note, midi_file

TOLERANCE_S = 0.005


def read(data: bytes) -> tuple[pretty_midi.PrettyMIDI, mido.MidiFile]:
    return pretty_midi.PrettyMIDI(io.BytesIO(data)), mido.MidiFile(file=io.BytesIO(data))


def instrument(pm: pretty_midi.PrettyMIDI, name: str) -> pretty_midi.Instrument:
    return next(i for i in pm.instruments if i.name == name)


def jittery_beats(n: int = 64, period: float = 0.5, jitter: float = 0.008, first: float = 0.37):
    """(n,) beat times of a slowly speeding-up song with a beat tracker's jitter."""
    rng = np.random.default_rng(0)
    periods = np.linspace(period, 0.9 * period, n) + rng.normal(0, jitter, n)
    return first + np.concatenate([[0.0], np.cumsum(periods[:-1])])


def song_notes(beats: np.ndarray) -> dict[str, list[Note]]:
    """Notes on and between the beats, some long, for three stems."""
    rng = np.random.default_rng(1)
    times = np.sort(rng.uniform(0.0, beats[-1] + 1.0, 60))
    return {
        "bass": [Note(t, t + 0.3, 40 + i % 12, 100) for i, t in enumerate(times[::2])],
        "vocals": [Note(t, t + 1.7, 60 + i % 12, 64) for i, t in enumerate(times[1::2])],
        "drums": [
            Note(float(b), float(b) + 0.05, 36 + 2 * (i % 2), 110) for i, b in enumerate(beats)
        ],
    }


@pytest.mark.parametrize("with_beats", [True, False])
def test_notes_come_back_at_their_seconds(with_beats: bool):
    beats = jittery_beats()
    tracks = song_notes(beats)
    beat_args = dict(beats_s=list(beats), downbeats_s=list(beats[2::4])) if with_beats else {}
    pm, _ = read(midi_file(tracks, tempo_bpm=97.0, **beat_args))
    for name, notes in tracks.items():
        got = sorted(instrument(pm, name).notes, key=lambda n: (n.start, n.pitch))
        want = sorted(notes, key=lambda n: (n.start_s, n.pitch))
        assert [n.pitch for n in got] == [n.pitch for n in want]
        np.testing.assert_allclose(
            [n.start for n in got], [n.start_s for n in want], atol=TOLERANCE_S
        )
        np.testing.assert_allclose([n.end for n in got], [n.end_s for n in want], atol=TOLERANCE_S)
        assert [n.velocity for n in got] == [n.velocity for n in want]


def test_tracks_are_named_with_a_gm_program_and_drums_on_channel_10():
    pm, mf = read(midi_file(song_notes(jittery_beats()), None, None, None, None))
    assert [t.name for t in mf.tracks[1:]] == ["bass", "vocals", "drums"]
    assert instrument(pm, "bass").program == GM_PROGRAMS["bass"] == 33
    assert pretty_midi.program_to_instrument_name(33) == "Electric Bass (finger)"
    assert pretty_midi.program_to_instrument_name(GM_PROGRAMS["vocals"]) == "Voice Oohs"
    assert instrument(pm, "drums").is_drum and not instrument(pm, "bass").is_drum
    drum_channels = {m.channel for m in mf.tracks[3] if m.type == "note_on"}
    assert drum_channels == {DRUM_CHANNEL}
    pitched = {m.channel for t in mf.tracks[1:3] for m in t if m.type == "note_on"}
    assert len(pitched) == 2 and DRUM_CHANNEL not in pitched


def test_the_file_beats_follow_jittery_beats_with_few_tempo_changes():
    beats = jittery_beats()
    last = Note(beats[-1] + 1, beats[-1] + 2, 40, 90)  # pretty_midi's beats end with the notes
    pm, _ = read(midi_file({"bass": [last]}, None, list(beats), list(beats[2::4]), None))
    file_beats = pm.get_beats()
    # the file's beats after the lead-in are the given ones, within the tempo map's tolerance
    lead = int(np.argmin(np.abs(file_beats - beats[0])))
    np.testing.assert_allclose(file_beats[lead : lead + len(beats)], beats, atol=0.011)
    changes, _ = pm.get_tempo_changes()
    assert 1 < len(changes) < len(beats) / 2  # the drift is followed, the jitter is not
    # bars start on the downbeats: a pickup bar (one lead-in beat and two beats), then 4/4
    np.testing.assert_allclose(pm.get_downbeats()[1:9], beats[2::4][:8], atol=0.011)
    signatures = [(ts.numerator, ts.denominator) for ts in pm.time_signature_changes]
    assert signatures == [(3, 4), (4, 4)]


def test_steady_beats_give_one_tempo_and_the_metre_of_the_downbeats():
    beats = np.arange(48) * 0.6 + 0.6  # 100 BPM, the first beat after one beat of lead-in
    last = Note(beats[-1] + 1, beats[-1] + 2, 40, 90)
    pm, _ = read(midi_file({"other": [last]}, None, list(beats), list(beats[::3]), None))
    _, tempi = pm.get_tempo_changes()
    np.testing.assert_allclose(tempi, [100.0], atol=0.01)
    assert [(ts.numerator, ts.denominator) for ts in pm.time_signature_changes] == [(1, 4), (3, 4)]
    np.testing.assert_allclose(pm.get_downbeats()[1:5], beats[::3][:4], atol=0.001)


@pytest.mark.parametrize(
    ("tempo_bpm", "beats", "expected"),
    [(None, None, 120.0), (87.5, None, 87.5), (87.5, [3.0], 87.5), (0.0, [], 120.0)],
)
def test_one_tempo_without_two_beats(tempo_bpm, beats, expected):
    pm, _ = read(midi_file({"bass": [Note(1.0, 2.0, 40, 90)]}, tempo_bpm, beats, None, 3))
    np.testing.assert_allclose(pm.get_tempo_changes()[1], [expected], atol=0.01)
    assert [(ts.numerator, ts.denominator) for ts in pm.time_signature_changes] == [(3, 4)]
    np.testing.assert_allclose(pm.instruments[0].notes[0].start, 1.0, atol=TOLERANCE_S)


@pytest.mark.parametrize("tracks", [{}, {"bass": [], "vocals": [], "drums": []}])
def test_no_notes_still_make_a_valid_file_with_the_named_tracks(tracks):
    data = midi_file(tracks, None, None, None, None)
    pm, mf = read(data)
    assert pm.instruments == [] and data[:4] == b"MThd"
    assert [t.name for t in mf.tracks[1:]] == list(tracks)
    np.testing.assert_allclose(pm.get_tempo_changes()[1], [120.0])


def test_a_key_struck_again_before_it_ends_is_released_first():
    notes = [Note(0.0, 2.0, 60, 90), Note(1.0, 1.5, 60, 80), Note(1.5, 1.5, 62, 70)]
    pm, mf = read(midi_file({"other": notes}))
    got = sorted((round(n.start, 3), round(n.end, 3), n.pitch) for n in pm.instruments[0].notes)
    assert got[0] == (0.0, 1.0, 60) and got[1] == (1.0, 1.5, 60)
    assert got[2][2] == 62 and got[2][1] > got[2][0]  # a zero-length note lasts a tick
    held: dict[int, int] = {}
    for msg in mf.tracks[1]:
        if msg.type == "note_on":
            assert held.get(msg.note, 0) == 0  # never struck while held
            held[msg.note] = 1
        elif msg.type == "note_off":
            held[msg.note] = 0


def test_any_object_with_the_note_fields_is_a_note():
    Plain = namedtuple("Plain", "start_s end_s pitch velocity")
    pm, _ = read(midi_file({"guitar": [Plain(0.5, 1.0, 64.0, 300)]}))
    note = pm.instruments[0].notes[0]
    assert (note.pitch, note.velocity, pm.instruments[0].program) == (64, 127, 25)


def test_notes_struck_together_on_one_key_are_one_note_and_timeless_notes_are_dropped():
    notes = [Note(1.0, 1.2, 60, 50), Note(1.0, 1.8, 60, 90), Note(float("nan"), 2.0, 62, 90)]
    pm, _ = read(midi_file({"other": notes}))
    got = [
        (round(n.start, 3), round(n.end, 3), n.pitch, n.velocity) for n in pm.instruments[0].notes
    ]
    assert got == [(1.0, 1.8, 60, 90)]


def test_beats_far_apart_still_give_a_file_with_the_notes_in_place():
    beats = [0.5, 30.5, 31.0]  # a 30 s "beat" is slower than a set_tempo event can hold
    notes = [Note(10.0, 11.0, 40, 90), Note(30.7, 31.5, 41, 90)]
    pm, _ = read(midi_file({"bass": notes}, None, beats, None, None))
    starts = [n.start for n in pm.instruments[0].notes]
    np.testing.assert_allclose(starts, [10.0, 30.7], atol=TOLERANCE_S)


def test_a_gap_in_the_beats_counts_the_beats_missing_from_it():
    beats = np.concatenate([np.arange(0, 20, 0.6), np.arange(30, 50, 0.6)])  # 100 BPM
    notes = [Note(t, t + 0.5, 40, 90) for t in (5.0, 22.2, 27.45, 40.0)]
    pm, _ = read(midi_file({"bass": notes}, None, list(beats), None, None))
    np.testing.assert_allclose(pm.get_tempo_changes()[1], [100.0], atol=0.01)
    np.testing.assert_allclose(
        [n.start for n in pm.instruments[0].notes], [5.0, 22.2, 27.45, 40.0], atol=TOLERANCE_S
    )


def test_a_track_name_outside_latin_1_is_written_with_question_marks():
    _, mf = read(midi_file({"голос": [], "bass": []}))
    assert [t.name for t in mf.tracks[1:]] == ["?????", "bass"]


@pytest.mark.parametrize("beats_per_bar", [0, -3, 65])
def test_an_impossible_time_signature_is_refused(beats_per_bar):
    with pytest.raises(InvalidOption, match="time_signature"):
        midi_file({}, None, None, None, beats_per_bar)
