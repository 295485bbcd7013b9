"""The analysis of whole jobs through the six services: a generated song with known key, tempo
and chords, and inputs with none (silence, 2 s, noise, a sustained tone) that still finish, with
null tempo, key, chords and sections, each with its reason, and a valid MIDI file."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest
import soundfile as sf

from test import musicgen
from test.stackutil import wait_job

SR = musicgen.SR


def wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, SR, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def run_job(client, audio: np.ndarray, **fields) -> tuple[dict, dict]:
    response = client.post("/api/jobs", files={"file": ("a.wav", wav(audio))}, data=fields)
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["id"])
    assert job["status"] == "done", job
    return job, client.get(job["links"]["analysis"]).json()


@pytest.fixture(scope="module")
def song_analysis(client):
    chords, truth = musicgen.key_progression(7, "major", seconds_per_chord=60 / 96 * 4)
    drums = musicgen.drum_pattern(96.0, chords.shape[1] / SR, seed=2)
    return truth, *run_job(client, 0.6 * chords + 0.5 * drums)


def test_track_summary_of_a_generated_song(song_analysis):
    truth, job, analysis = song_analysis
    track = analysis["track"]
    assert track["key"]["tonic"] == "G" and track["key"]["mode"] == "major"
    assert 0 < track["key"]["confidence"] <= 1
    assert track["tempo_bpm"] == pytest.approx(96.0, rel=0.02)
    assert 0 < track["tempo_confidence"] <= 1
    assert np.median(np.diff(track["beats_s"])) == pytest.approx(60 / 96, rel=0.03)
    assert track["downbeats_s"] and track["time_signature"] in (2, 4)  # BeatNet's bars
    assert "downbeats" not in track["reasons"]
    assert track["models"]["beats"]["name"] == "beatnet" and track["sources"]["beats"] == "mix"
    expected = [musicgen.chord_name(r, q) for r, q in truth]
    long_chords = [c["chord"] for c in track["chords"] if c["end_s"] - c["start_s"] > 1.0]
    assert long_chords == expected
    assert track["chords"][0]["start_s"] == 0.0
    assert track["chords"][-1]["end_s"] == pytest.approx(track["duration_s"], abs=0.05)
    assert -30 < track["loudness_lufs"] < 0 and track["peak_dbfs"] <= 0.0


def test_windows_of_a_generated_song(song_analysis):
    _, job, analysis = song_analysis
    windows = analysis["windows"]
    assert [w["index"] for w in windows] == list(range(len(windows)))
    assert windows[1]["start_s"] == pytest.approx(10.24)
    for w in windows:
        assert w["key"] is None or w["key"]["mode"] in ("major", "minor")
        assert w["loudness_lufs"] is not None and w["spectral_centroid_hz"] > 0
        assert set(w["stem_activity"]) == set(job["stems"])
        assert all(0.0 <= v <= 1.0 for v in w["stems_present"].values())
        assert "errors" not in w


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros((2, 20 * SR), np.float32),
        musicgen.drum_pattern(120.0, 2.0),
        musicgen.noise(20.0),
        musicgen.sine(440.0, 20.0),
    ],
    ids=["silence", "2s", "noise", "sustained-tone"],
)
def test_no_key_tempo_or_chords_but_a_finished_job(client, audio):
    job, analysis = run_job(client, audio, model="dsp")
    track = analysis["track"]
    for field in ("key", "tempo_bpm", "beats_s", "chords", "sections"):
        assert track[field] is None, (field, track[field])
    assert {"key", "tempo", "chords", "sections"} <= set(track["reasons"]), track["reasons"]
    assert "errors" not in track
    assert all("errors" not in w for w in analysis["windows"])
    # the MIDI file is there and valid, a named track per transcribed stem
    midi = mido.MidiFile(file=io.BytesIO(client.get(job["links"]["midi"]).content))
    assert [t.name for t in midi.tracks[1:]] == track["midi"]["stems"]
    if not audio.any():
        assert sum(track["midi"]["notes"].values()) == 0  # silence: valid, and empty
