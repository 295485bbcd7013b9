"""Figures of the stems' notes: note-onset F-measures and the time to transcribe on this CPU.

    .venv/bin/python bench/bench_transcribe.py [--songs 4] [--threads 1] [--repeats 2]

On General MIDI songs from `test.gmsongs` (sections "ABCA", 4 bars each, in several keys and
tempi), each stem rendered alone by FluidSynth, as the separator would give it:

- note-onset precision, recall and F (mir_eval, onset within 50 ms, offsets ignored) per stem,
  with the stem's options (`STEM_OPTIONS`) and with Basic Pitch's own thresholds (onset 0.5,
  frame 0.3, 128 ms, "melodia" notes, polyphonic, no activation floor) on the same activations;
  the stem alone, and with the other stems mixed in at -20 dB (a separator's bleed);
- drum hits (kick, snare, closed hi-hat) of the drum stem: onset F within 50 ms;
- the notes found in the real stems of MUSDB's falcon69 (`../shared/testdata`, no truth);
- seconds of CPU wall time per minute of audio at `--threads` onnxruntime threads: the model
  (Basic Pitch's windows), the notes from its activations (decoding and the noise check), the
  drum onsets, and the MIDI file of the song.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# The threads we ask for, not the machine's: must be set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import mir_eval  # noqa: E402
import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from common.midi import midi_file  # noqa: E402
from test import gmsongs  # noqa: E402
from test.unit.transforms.test_drum_notes import drum_truth  # noqa: E402
from test.unit.transforms.test_transcribe import note_f_measure  # noqa: E402
from transforms.drum_notes import drum_notes  # noqa: E402
from transforms.transcribe import (  # noqa: E402
    SAMPLE_RATE,
    STEM_OPTIONS,
    NoteOptions,
    Transcriber,
    notes_from_activations,
    to_model_rate,
)

FALCON = REPO.parent / "shared" / "testdata" / "stems" / "falcon69"
SONGS = [("F major", 100.0), ("E minor", 120.0), ("Bb major", 90.0), ("A minor", 140.0)]
FORM, BARS = "ABCA", 4
PITCHED = ("bass", "vocals", "other")
BASIC_PITCH = NoteOptions(min_note_s=0.1277, min_activation=0.0)
BLEED = 0.1  # amplitude of the other stems in a stem, as a separator leaves them (-20 dB)


def best_time(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Seconds of the fastest of `repeats` runs (the least disturbed on a shared machine), and
    the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def falcon_figures(transcriber: Transcriber) -> None:
    """Real stems have no note truth here: what each stem gives, to see that it gives notes."""
    if not FALCON.is_dir():
        print(f"falcon69: absent ({FALCON}), skipped")
        return
    print("falcon69 (MUSDB, 6 s of rock, the true stems), notes found:")
    for stem in ("bass", "vocals", "other", "drums"):
        audio, rate = soundfile.read(FALCON / f"{stem}.flac", dtype="float32")
        mono = to_model_rate(audio.T, rate)
        notes = drum_notes(mono) if stem == "drums" else transcriber.transcribe(mono, stem)
        shown = " ".join(f"{n.start_s:.2f}:{n.pitch}" for n in notes[:10])
        print(f"  {stem:7s} {len(notes):3d}   {shown}{' ...' if len(notes) > 10 else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=len(SONGS), choices=range(1, len(SONGS) + 1))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if missing := gmsongs.fluidsynth_missing():
        print(f"skipped: {missing}")
        return

    transcriber = Transcriber(threads=args.threads)
    falcon_figures(transcriber)
    scores: dict[str, list[tuple[float, float, float]]] = {}
    seconds: dict[str, float] = {}  # summed wall time per part
    audio_s = 0.0
    for seed, (key, tempo) in enumerate(SONGS[: args.songs]):
        song = gmsongs.render_song(form=FORM, key=key, tempo_bpm=tempo, bars_per_section=BARS,
                                   seed=seed)  # fmt: skip
        audio_s += song.mix.shape[-1] / gmsongs.SR
        tracks = {}
        for stem in PITCHED:
            mono = to_model_rate(song.stems[stem])
            t, act = best_time(lambda m=mono: transcriber.activations(m), args.repeats)
            seconds["model"] = seconds.get("model", 0.0) + t
            t, notes = best_time(lambda a=act, m=mono, s=stem: notes_from_activations(a, m, s), 3)
            seconds["decode"] = seconds.get("decode", 0.0) + t
            tracks[stem] = notes
            scores.setdefault(stem, []).append(note_f_measure(notes, song.notes[stem]))
            own = note_f_measure(notes_from_activations(act, mono, BASIC_PITCH), song.notes[stem])
            scores.setdefault(f"{stem} (Basic Pitch's thresholds)", []).append(own)
            # what a separator leaves: the other stems at -20 dB
            bled = to_model_rate(song.stems[stem] + BLEED * (song.mix - song.stems[stem]))
            act = transcriber.activations(bled)
            for label, options in (("", STEM_OPTIONS[stem]), (" (Basic Pitch's)", BASIC_PITCH)):
                f = note_f_measure(notes_from_activations(act, bled, options), song.notes[stem])
                scores.setdefault(f"{stem} + others at -20 dB{label}", []).append(f)
        mono = to_model_rate(song.stems["drums"])
        t, hits = best_time(lambda m=mono: drum_notes(m), args.repeats)
        seconds["drums"] = seconds.get("drums", 0.0) + t
        tracks["drums"] = hits
        truth = drum_truth(FORM, tempo, BARS)
        for drum, name in ((36, "kick"), (38, "snare"), (42, "closed hi-hat")):
            est = np.array([n.start_s for n in hits if n.pitch == drum])
            f, p, r = mir_eval.onset.f_measure(truth[drum], est, window=0.05)
            scores.setdefault(f"drums: {name}", []).append((p, r, f))
        beats, downbeats = song.beats_s, song.downbeats_s
        t, _ = best_time(
            lambda tr=tracks, b=beats, d=downbeats: midi_file(tr, None, b, d, None), args.repeats
        )
        seconds["midi file"] = seconds.get("midi file", 0.0) + t

    minutes = audio_s / 60
    print(f"{args.songs} songs, {audio_s:.0f} s of audio, {FORM} x {BARS} bars each")
    print("note-onset scores (mean over songs):")
    print(f"  {'stem':42s} {'P':>5s} {'R':>5s} {'F':>5s}   F per song")
    for name, rows in scores.items():
        p, r, f = np.mean(rows, axis=0)
        per_song = " ".join(f"{row[2]:.2f}" for row in rows)
        print(f"  {name:42s} {p:5.2f} {r:5.2f} {f:5.2f}   {per_song}")
    print(f"seconds per minute of audio, {args.threads} thread(s), best of {args.repeats}:")
    print(f"  model, per pitched stem:  {seconds['model'] / len(PITCHED) / minutes:6.3f}")
    print(f"  notes from activations:   {seconds['decode'] / len(PITCHED) / minutes:6.3f}")
    print(f"  drum onsets:              {seconds['drums'] / minutes:6.3f}")
    print(f"  MIDI file (4 tracks):     {seconds['midi file'] / minutes:6.3f}")
    total = seconds["model"] + seconds["decode"] + seconds["drums"]
    print(f"  all four stems:           {total / minutes:6.3f}  (at {SAMPLE_RATE} Hz mono)")


if __name__ == "__main__":
    main()
