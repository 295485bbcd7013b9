"""gateway/music.py: which stems each part listens to, rows read from result.wav, one stem's
track of the MIDI file."""

import io

import mido
import numpy as np
import pytest
import soundfile as sf

from common.midi import Note, midi_file
from gateway.jobfiles import JobFiles
from gateway.music import MusicAnalyser, listens_to_stems, read_rows, single_track


def test_the_stems_are_listened_to_where_a_neural_separator_made_them():
    assert listens_to_stems("htdemucs", ["drums", "bass", "other", "vocals"])
    assert listens_to_stems("htdemucs,umxhq", ["vocals", "drums", "bass", "other"])
    assert not listens_to_stems("dsp", ["vocals", "drums", "bass", "other"])
    assert not listens_to_stems("htdemucs,dsp", ["vocals", "drums", "bass", "other"])
    assert not listens_to_stems("htdemucs", ["vocals", "no_vocals"])  # one stem and the rest
    chained = ["drums-kick", "drums-snare", "bass", "other", "vocals-lead", "vocals-backing"]
    assert listens_to_stems("htdemucs", chained)  # a chained stem's parts stand for it
    assert MusicAnalyser.midi_stems(chained) == ["bass", "vocals", "other", "drums"]


def test_a_chained_stem_s_parts_are_summed_into_its_row(tmp_path):
    files = JobFiles(tmp_path / "jobs", "job2")
    n = 44100
    t = np.arange(n) / 44100
    lead, backing = 0.1 * np.sin(2 * np.pi * 220 * t), 0.05 * np.sin(2 * np.pi * 330 * t)
    channels = np.stack([x for s in (lead, backing, 0 * t) for x in (s, s)], axis=1)
    files.result_dir.mkdir(parents=True)
    sf.write(files.result_path, channels.astype(np.float32), 44100, subtype="FLOAT")
    stems = ["vocals-lead", "vocals-backing", "bass"]
    row = read_rows(files, stems, {"vocals": ("vocals",)})["vocals"]
    middle = slice(1000, n // 2 - 1000)
    assert np.abs(row[middle] - (lead + backing)[::2][middle]).max() < 1e-2


def test_rows_sum_the_stems_they_name_at_22_khz(tmp_path):
    files = JobFiles(tmp_path / "jobs", "job1")
    n = 3 * 44100
    t = np.arange(n) / 44100
    stems = {"vocals": 0.0 * t, "drums": 0.1 * np.sin(2 * np.pi * 100 * t), "bass": 0.2 * t / 3}
    channels = np.stack([x for s in stems.values() for x in (s, s)], axis=1)
    files.result_dir.mkdir(parents=True)
    sf.write(files.result_path, channels.astype(np.float32), 44100, subtype="FLOAT")
    rows = read_rows(files, list(stems), {"db": ("drums", "bass"), "guitar": ("guitar",)})
    assert set(rows) == {"db"}  # no guitar stem: no row
    expected = (stems["drums"] + stems["bass"])[::2]
    assert rows["db"].dtype == np.float32 and abs(len(rows["db"]) - n // 2) <= 1
    middle = slice(1000, n // 2 - 1000)
    assert np.abs(rows["db"][middle] - expected[middle]).max() < 1e-2


def test_one_stem_of_the_midi_file_keeps_the_tempo_map():
    notes = {"bass": [Note(0.5, 1.0, 40, 90)], "vocals": [Note(1.0, 1.5, 67, 80)]}
    whole = midi_file(notes, beats_s=[0.5 * i for i in range(16)])
    one = mido.MidiFile(file=io.BytesIO(single_track(whole, "vocals")))
    assert [t.name for t in one.tracks[1:]] == ["vocals"]
    assert any(m.type == "set_tempo" for m in one.tracks[0])
    assert (
        abs(mido.tempo2bpm(next(m.tempo for m in one.tracks[0] if m.type == "set_tempo")) - 120) < 1
    )
    with pytest.raises(KeyError):
        single_track(whole, "drums")
