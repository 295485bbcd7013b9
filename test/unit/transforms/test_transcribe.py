"""Notes from stems: Basic Pitch on General MIDI stems rendered by FluidSynth, real stems.

Each stem is transcribed alone, as the separator would give it, and scored with mir_eval's
note-onset F-measure (onset within 50 ms, pitch within 50 cents, offsets ignored).
"""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import mir_eval
import numpy as np
import pretty_midi
import pytest
import soundfile

from common.errors import InvalidOption
from common.midi import Note, midi_file
from test import gmsongs
from transforms import transcribe
from transforms.transcribe import SAMPLE_RATE, Transcriber, to_model_rate

pytestmark = pytest.mark.skipif(
    gmsongs.fluidsynth_missing() is not None, reason=str(gmsongs.fluidsynth_missing())
)
SONG = dict(form="ABAB", key="F major", tempo_bpm=100.0, bars_per_section=4, seed=0)


def note_f_measure(notes, truth: list[tuple[float, float, int]]) -> tuple[float, float, float]:
    """Precision, recall and F of `notes` against `(onset_s, offset_s, pitch)` truth."""
    if not notes or not truth:
        return 0.0, 0.0, 0.0

    def hz(pitches) -> np.ndarray:
        return 440.0 * 2 ** ((np.asarray(pitches, dtype=float) - 69) / 12)

    ref = np.array([[a, b] for a, b, _ in truth])
    est = np.array([[n.start_s, max(n.end_s, n.start_s + 0.01)] for n in notes])
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref, hz([p for *_, p in truth]), est, hz([n.pitch for n in notes]),
        onset_tolerance=0.05, offset_ratio=None,
    )  # fmt: skip
    return p, r, f


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(threads=1)


@pytest.fixture(scope="module")
def song() -> gmsongs.Song:
    return gmsongs.render_song(**SONG)


@pytest.fixture(scope="module")
def transcribed(transcriber, song) -> dict[str, list[Note]]:
    """The song's pitched stems transcribed, each alone."""
    return {s: transcriber.transcribe(to_model_rate(song.stems[s]), s) for s in song.notes}


@pytest.mark.parametrize("stem", ["bass", "vocals", "other"])
def test_note_onset_f_measure_of_each_stem_alone(transcribed, song, stem):
    notes = transcribed[stem]
    p, r, f = note_f_measure(notes, song.notes[stem])
    print(f"{stem}: {len(notes)} notes for {len(song.notes[stem])}, P {p:.2f} R {r:.2f} F {f:.2f}")
    # measured 1.00 (bass), 0.94 (vocals: flute, alto sax), 0.78 (other: piano, organ)
    assert f >= {"bass": 0.9, "vocals": 0.8, "other": 0.7}[stem]


def test_the_midi_file_of_the_notes_plays_them_in_time(transcribed, song):
    """Transcribed notes through `midi_file` with the song's beats, read back by pretty_midi:
    the same notes at the same seconds, so the file plays in sync with the audio."""
    data = midi_file(transcribed, song.tempo_bpm, song.beats_s, song.downbeats_s, 4)
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    np.testing.assert_allclose(pm.get_tempo_changes()[1], [song.tempo_bpm], atol=0.01)
    for inst in pm.instruments:
        back = sorted((n.start, n.pitch) for n in inst.notes)
        want = sorted((n.start_s, n.pitch) for n in transcribed[inst.name])
        assert [p for _, p in back] == [p for _, p in want]
        np.testing.assert_allclose([t for t, _ in back], [t for t, _ in want], atol=0.005)
    assert {i.name for i in pm.instruments} == set(transcribed)


FALCON = Path(__file__).resolve().parents[4] / "shared" / "testdata" / "stems" / "falcon69"


@pytest.mark.skipif(not FALCON.is_dir(), reason=f"no real stems at {FALCON}")
def test_real_stems_give_notes(transcriber):
    """MUSDB's falcon69 (6 s, rock): the model is far less sure of a real bass and voice than
    of a synth's (activations 0.3..0.6 against 0.7..0.9); thresholds set on synths alone gave
    no note at all here."""
    pitches = {}
    for stem in ("bass", "vocals"):
        audio, rate = soundfile.read(FALCON / f"{stem}.flac", dtype="float32")
        pitches[stem] = [
            n.pitch for n in transcriber.transcribe(to_model_rate(audio.T, rate), stem)
        ]
    assert len(pitches["bass"]) >= 3 and set(pitches["bass"]) <= set(range(28, 68))
    assert len(pitches["vocals"]) >= 3


def test_a_note_late_in_a_long_track_is_on_time(transcriber):
    """60 s is 37 model windows: frame times that ignored the hop's fraction of a frame would
    put this note about 0.3 s late."""
    audio = np.zeros(60 * SAMPLE_RATE, np.float32)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    start = 55 * SAMPLE_RATE
    audio[start : start + SAMPLE_RATE] = 0.3 * np.sin(2 * np.pi * 220.0 * t) * np.exp(-t)
    notes = transcriber.transcribe(audio, "other")
    assert [n.pitch for n in notes] == [57]
    assert abs(notes[0].start_s - 55.0) < 0.03


def noise(seconds: float, color: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * SAMPLE_RATE))
    if color == "white":
        return (0.3 * white).astype(np.float32)
    spectrum = np.fft.rfft(white)
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.shape[0]))  # pink: power ~ 1 / f
    spectrum[0] = 0
    pink = np.fft.irfft(spectrum, white.shape[0])
    return (0.3 * pink / pink.std()).astype(np.float32)


@pytest.mark.parametrize(
    "name",
    ["empty", "one sample", "silence 2 s", "white noise", "pink noise", "loud noise", "nan"],
)
def test_no_notes_without_music(transcriber, name):
    audio = {
        "empty": np.zeros(0, np.float32),
        "one sample": np.ones(1, np.float32),
        "silence 2 s": np.zeros(2 * SAMPLE_RATE, np.float32),
        "white noise": noise(10, "white"),
        "pink noise": noise(10, "pink"),
        "loud noise": np.clip(noise(10, "white", seed=1) * 4, -1, 1),
        "nan": np.full(SAMPLE_RATE, np.nan, np.float32),
    }[name]
    activations = transcriber.activations(audio)
    for stem in transcribe.STEM_OPTIONS:
        assert transcribe.notes_from_activations(activations, audio, stem) == []
    assert transcriber.transcribe(audio, "bass") == []


@pytest.mark.parametrize("seconds", [0.3, 2.0, 5.0])  # within one model window, two, four
def test_one_sustained_tone_is_one_note(transcriber, seconds):
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)  # A3, from the first sample
    activations = transcriber.activations(tone)
    for stem in transcribe.STEM_OPTIONS:
        notes = transcribe.notes_from_activations(activations, tone, stem)
        assert [n.pitch for n in notes] == [57]
        assert notes[0].start_s < 0.02 and notes[0].end_s > seconds - 0.1


def test_bass_notes_stay_in_the_bass_range(transcriber, song):
    notes = transcriber.transcribe(to_model_rate(song.stems["other"]), "bass")
    assert all(28 <= n.pitch <= 67 for n in notes)


def test_an_unknown_stem_is_refused_with_the_known_ones(transcriber):
    with pytest.raises(InvalidOption, match="bass"):
        transcriber.transcribe(np.zeros(100, np.float32), "kazoo")


def test_activations_are_basic_pitch_s_own(transcriber, tmp_path, monkeypatch):
    """Our windows and unwrapping against Basic Pitch's `run_inference` on the same model."""
    # resampy <= 0.4.2 imports setuptools' removed pkg_resources; Basic Pitch's note creation
    # imports resampy for its sonification only
    try:
        import resampy  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "resampy", types.ModuleType("resampy"))
    from basic_pitch import inference

    t = np.arange(int(7.3 * SAMPLE_RATE)) / SAMPLE_RATE  # 5 windows, the last one partial
    audio = (0.2 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)).astype(
        np.float32
    )
    soundfile.write(tmp_path / "tone.wav", audio, SAMPLE_RATE, subtype="FLOAT")
    theirs = inference.run_inference(
        tmp_path / "tone.wav", inference.Model(transcribe.model_path())
    )
    note, onset, _ = transcriber.activations(audio)
    n = theirs["note"].shape[0]  # they drop the last partial frames
    assert n <= note.shape[0] <= n + 8
    np.testing.assert_allclose(note[:n], theirs["note"], atol=1e-5)
    np.testing.assert_allclose(onset[:n], theirs["onset"], atol=1e-5)


def test_windowing_is_basic_pitch_s():
    from basic_pitch import constants

    assert transcribe.SAMPLE_RATE == constants.AUDIO_SAMPLE_RATE
    assert transcribe.FFT_HOP == constants.FFT_HOP
    assert transcribe.WINDOW == constants.AUDIO_N_SAMPLES
    assert transcribe.N_KEYS == constants.N_FREQ_BINS_NOTES
    assert transcribe.KEPT_FRAMES + transcribe.OVERLAP_FRAMES == constants.ANNOT_N_FRAMES
    times = transcribe.frame_times(3)
    assert times[0] == 0 and np.all(np.diff(times) > 0)
    assert times[transcribe.KEPT_FRAMES] == transcribe.HOP / SAMPLE_RATE


def test_to_model_rate_mixes_down_and_halves_the_rate():
    stereo = np.stack([np.ones(44100), -np.ones(44100) * 0.5]).astype(np.float32)
    mono = to_model_rate(stereo, 44100)
    assert mono.dtype == np.float32 and mono.shape == (22050,)
    np.testing.assert_allclose(mono[1000:-1000], 0.25, atol=1e-3)
