"""General MIDI songs with known truth, each instrument rendered alone by FluidSynth.

A song is written as MIDI in code (pretty_midi): a form such as "ABAB" of sections of
`bars_per_section` bars of 4/4 in one key. Each section letter has its own progression of
diatonic major/minor triads (one or two chords a bar) and its own texture (drum groove, bass
figure, chord instrument and register, lead instrument and rhythm), so a listener hears a new
part; a repeated letter repeats its material. Four stems, each rendered alone with the FluidSynth
CLI and the FluidR3 GM soundfont:

- "drums": GM channel 10, kick, snare and closed hi-hat;
- "bass": chord roots (and fifths) in octave 2;
- "other": the chord instrument (piano, organ or nylon guitar) playing the triads in octave 4;
- "vocals": a monophonic lead (flute, alto sax, choir) on chord tones and scale notes, octave 4-5.

The mix is the sum of the stems. Renders are cached under `~/.cache/audiosplit-tests/gmsongs/`
keyed by the arguments and this module's source, so a second call only decodes four WAV files.
Audio is float32 stereo `(2, n)` at 44.1 kHz; n covers the song and `TAIL_S` of release tail.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile

SR = 44100
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
CACHE_DIR = Path.home() / ".cache" / "audiosplit-tests" / "gmsongs"
GAIN = 0.6  # FluidSynth's master gain: FluidR3 at 0.6 leaves headroom for four stems
TAIL_S = 1.0  # s of audio after the last bar: the notes' release
MIX_PEAK = 0.95  # the stems are scaled together when their sum would peak above this
STEMS = ("drums", "bass", "other", "vocals")
BEATS_PER_BAR = 4

PITCH_NAMES_SHARP = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
PITCH_NAMES_FLAT = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")
# Keys written with flats (tonic pitch classes); the others with sharps. Only the spelling of
# the truth labels depends on it: mir_eval compares pitch classes.
FLAT_MAJOR = {5, 10, 3, 8, 1, 6}  # F Bb Eb Ab Db Gb
FLAT_MINOR = {2, 7, 0, 5, 10, 3}  # D G C F Bb Eb
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # natural minor: its triads are all major or minor but ii°

# Each section's chords by bar, as scale degrees (0 = tonic); a bar with two degrees changes
# chord on beat 3. The diminished degree (vii° in major, ii° in minor) is never used.
PROGRESSIONS = {
    "major": {
        "A": ((0,), (5,), (3,), (4,)),  # I vi IV V
        "B": ((3,), (4,), (2,), (5,)),  # IV V iii vi
        "C": ((1, 4), (0,), (1, 4), (0,)),  # ii V | I | ii V | I
    },
    "minor": {
        "A": ((0,), (5,), (2,), (6,)),  # i VI III VII
        "B": ((3,), (4,), (0,), (0,)),  # iv v i i
        "C": ((5, 6), (0,), (3, 6), (0,)),  # VI VII | i | iv VII | i
    },
}


@dataclass(frozen=True)
class Texture:
    """How one section letter sounds: GM programs (0-based) and rhythmic figures."""

    chord_program: int
    chord_figure: str  # "block" (a chord a beat), "pad" (held), "arpeggio" (eighths)
    chord_low: int  # lowest MIDI note of the chord voicing
    bass_figure: str  # "halves" (root on 1 and 3), "root-fifth" (eighths), "whole"
    lead_program: int
    lead_rhythm: tuple[float, ...]  # note lengths in beats, filling one bar
    lead_low: int  # lowest MIDI note of the lead
    groove: str  # "rock", "busy", "half-time"


TEXTURES = {
    "A": Texture(0, "block", 55, "halves", 73, (1.0, 1.0, 2.0), 67, "rock"),  # piano, flute
    "B": Texture(16, "pad", 60, "root-fifth", 65, (0.5,) * 8, 60, "busy"),  # organ, alto sax
    "C": Texture(24, "arpeggio", 52, "whole", 52, (2.0, 2.0), 64, "half-time"),  # guitar, choir
}
BASS_PROGRAM = 33  # Electric Bass (finger)
KICK, SNARE, HAT = 36, 38, 42  # GM percussion keys on channel 10
GROOVES = {  # (beat within the bar, drum) hits; beats count from 0
    "rock": [(0, KICK), (2, KICK), (1, SNARE), (3, SNARE)] + [(b / 2, HAT) for b in range(8)],
    "busy": [(0, KICK), (1.5, KICK), (2, KICK), (1, SNARE), (3, SNARE)]
    + [(b / 4, HAT) for b in range(16)],
    "half-time": [(0, KICK), (2.5, KICK), (2, SNARE)] + [(b, HAT) for b in range(4)],
}


@dataclass(frozen=True)
class Song:
    mix: np.ndarray  # (2, n) float32, 44.1 kHz: the sum of the stems
    stems: dict[str, np.ndarray]  # "drums", "bass", "other", "vocals", each (2, n) float32
    chords: list[tuple[float, float, str]]  # (start_s, end_s, Harte label "F:maj", "D:min")
    notes: dict[str, list[tuple[float, float, int]]]  # "bass"/"vocals"/"other" -> notes
    beats_s: list[float]
    downbeats_s: list[float]
    sections: list[tuple[float, float, str]]  # (start_s, end_s, "A" / "B" / "C")
    tempo_bpm: float
    key: str  # "F major", "E minor"


def fluidsynth_missing() -> str | None:
    """Why songs cannot be rendered here (for `pytest.skip`), or None when they can."""
    if shutil.which("fluidsynth") is None:
        return "the fluidsynth CLI is not installed (apt-get install fluidsynth)"
    if not SOUNDFONT.is_file():
        return f"the GM soundfont {SOUNDFONT} is missing (apt-get install fluid-soundfont-gm)"
    return None


def parse_key(key: str) -> tuple[int, str]:
    """ "F major" -> (5, "major"); "Bb minor" / "C# minor" -> (10, "minor") / (1, "minor")."""
    try:
        tonic, mode = key.split()
        pc = (PITCH_NAMES_SHARP.index(tonic[0].upper()) + tonic[1:].count("#")) % 12
        pc = (pc - tonic[1:].count("b")) % 12
    except ValueError as e:
        raise ValueError(f"expected a key like 'F major' or 'Bb minor', got {key!r}") from e
    if mode not in PROGRESSIONS:
        raise ValueError(f"expected mode 'major' or 'minor' in {key!r}")
    return pc, mode


def _scale(tonic: int, mode: str) -> tuple[int, ...]:
    steps = MAJOR_STEPS if mode == "major" else MINOR_STEPS
    return tuple((tonic + s) % 12 for s in steps)


def _triad(scale: tuple[int, ...], degree: int) -> tuple[int, str]:
    """(root pitch class, "maj" | "min") of the diatonic triad on a scale degree."""
    root, third = scale[degree % 7], scale[(degree + 2) % 7]
    return root, "maj" if (third - root) % 12 == 4 else "min"


def _harte(root: int, quality: str, tonic: int, mode: str) -> str:
    flats = tonic in (FLAT_MAJOR if mode == "major" else FLAT_MINOR)
    return f"{(PITCH_NAMES_FLAT if flats else PITCH_NAMES_SHARP)[root]}:{quality}"


def _at_or_above(pc: int, low: int) -> int:
    """The lowest MIDI note of pitch class `pc` at or above MIDI note `low`."""
    return low + (pc - low) % 12


class _Writer:
    """Builds the four stems' MIDI and the truth lists, one section after another."""

    def __init__(self, tonic: int, mode: str, tempo_bpm: float, seed: int) -> None:
        self.tonic, self.mode, self.seed = tonic, mode, seed
        self.scale = _scale(tonic, mode)
        self.beat_s = 60.0 / tempo_bpm
        self.midi = {s: pretty_midi.PrettyMIDI(initial_tempo=tempo_bpm) for s in STEMS}
        self.instruments: dict[tuple[str, int], pretty_midi.Instrument] = {}
        self.chords: list[tuple[float, float, str]] = []
        self.notes: dict[str, list[tuple[float, float, int]]] = {
            "bass": [],
            "vocals": [],
            "other": [],
        }

    def note(
        self, stem: str, program: int, pitch: int, start_b: float, length_b: float, velocity: int
    ) -> None:
        """One note from beat `start_b` lasting `length_b` beats (the last 5 % released)."""
        key = (stem, program)
        if key not in self.instruments:
            inst = pretty_midi.Instrument(program, is_drum=stem == "drums", name=stem)
            self.instruments[key] = inst
            self.midi[stem].instruments.append(inst)
        start, end = start_b * self.beat_s, (start_b + 0.95 * length_b) * self.beat_s
        self.instruments[key].notes.append(pretty_midi.Note(velocity, pitch, start, end))
        if stem != "drums":
            self.notes[stem].append((round(start, 6), round(end, 6), pitch))

    def section(self, letter: str, first_bar: int, bars: int) -> None:
        texture = TEXTURES[letter]
        # the same seed for every repeat of a letter: a repeated section repeats its material
        rng = np.random.default_rng([self.seed, ord(letter)])
        progression = PROGRESSIONS[self.mode][letter]
        for i in range(bars):
            bar_b = (first_bar + i) * BEATS_PER_BAR
            degrees = progression[i % len(progression)]
            span_b = BEATS_PER_BAR / len(degrees)
            for j, degree in enumerate(degrees):
                self.chord(texture, _triad(self.scale, degree), bar_b + j * span_b, span_b)
            self.lead(texture, [_triad(self.scale, d) for d in degrees], bar_b, rng)
            for beat, drum in GROOVES[texture.groove]:
                velocity = 115 if drum != HAT else 80
                self.note("drums", 0, drum, bar_b + beat, 0.25, velocity)

    def chord(
        self, texture: Texture, triad: tuple[int, str], start_b: float, span_b: float
    ) -> None:
        root, quality = triad
        self.chords.append(
            (
                round(start_b * self.beat_s, 6),
                round((start_b + span_b) * self.beat_s, 6),
                _harte(root, quality, self.tonic, self.mode),
            )
        )
        pcs = [(root + i) % 12 for i in (0, 4 if quality == "maj" else 3, 7)]
        voicing = sorted(_at_or_above(pc, texture.chord_low) for pc in pcs)
        program = texture.chord_program
        if texture.chord_figure == "block":
            for b in range(int(span_b)):
                for p in voicing:
                    self.note("other", program, p, start_b + b, 1.0, 80)
        elif texture.chord_figure == "pad":
            for p in voicing:
                self.note("other", program, p, start_b, span_b, 75)
        else:  # arpeggio: up and down the triad in eighths
            cycle = [*voicing, voicing[-1] + 12 - 12 * (voicing[-1] >= 72), voicing[1]]
            for k in range(int(2 * span_b)):
                self.note("other", program, cycle[k % len(cycle)], start_b + k / 2, 0.5, 85)
        bass_root = _at_or_above(root, 36)  # C2..B2
        fifth = bass_root + 7
        if texture.bass_figure == "halves":
            figure = [(b, bass_root, 2.0) for b in np.arange(0, span_b, 2.0)]
        elif texture.bass_figure == "root-fifth":
            figure = [(k / 2, (bass_root, fifth)[k % 2], 0.5) for k in range(int(2 * span_b))]
        else:  # whole: the root held, the fifth on the last beat of a long chord
            figure = (
                [(0.0, bass_root, span_b)]
                if span_b < 4
                else [(0.0, bass_root, 3.0), (3.0, fifth, 1.0)]
            )
        for offset, pitch, length in figure:
            self.note("bass", BASS_PROGRAM, int(pitch), start_b + offset, length, 95)

    def lead(
        self, texture: Texture, triads: list[tuple[int, str]], bar_b: int, rng: np.random.Generator
    ) -> None:
        """A bar of melody: chord tones on the chord's beats, scale steps in between."""
        t = 0.0
        for length in texture.lead_rhythm:
            root, quality = triads[min(len(triads) - 1, int(t * len(triads) / BEATS_PER_BAR))]
            chord_tones = [(root + i) % 12 for i in (0, 4 if quality == "maj" else 3, 7)]
            on_beat = float(t).is_integer()
            pcs = chord_tones if on_beat else list(self.scale)
            pc = int(rng.choice(pcs))
            self.note(
                "vocals",
                texture.lead_program,
                _at_or_above(pc, texture.lead_low),
                bar_b + t,
                length,
                90,
            )
            t += length


def _cache_key(**args: object) -> str:
    source = Path(__file__).read_bytes()
    blob = json.dumps(args, sort_keys=True).encode() + source + str(SOUNDFONT).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _render(midi_paths: dict[str, Path], out_dir: Path) -> None:
    """Render each stem's MIDI alone to `<stem>.wav`, all four FluidSynth processes at once."""
    procs = {
        stem: subprocess.Popen(
            [
                "fluidsynth",
                "-ni",
                "-g",
                str(GAIN),
                "-F",
                str(out_dir / f"{stem}.wav"),
                "-r",
                str(SR),
                str(SOUNDFONT),
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for stem, path in midi_paths.items()
    }
    for stem, proc in procs.items():
        _, err = proc.communicate()
        if proc.returncode != 0 or not (out_dir / f"{stem}.wav").is_file():
            raise RuntimeError(f"fluidsynth failed on the {stem} stem: {err.decode()[-500:]}")


def _load(song_dir: Path) -> Song:
    truth = json.loads((song_dir / "truth.json").read_text())
    stems = {}
    for stem in STEMS:
        audio, rate = soundfile.read(song_dir / f"{stem}.wav", dtype="float32", always_2d=True)
        assert rate == SR, f"{stem}.wav is at {rate} Hz, expected {SR}"
        stems[stem] = audio.T
    n = truth["n_samples"]
    # FluidSynth stops at the end of its MIDI file: stems whose last note ends early are shorter
    stems = {s: np.pad(a[:, :n], ((0, 0), (0, max(0, n - a.shape[1])))) for s, a in stems.items()}
    peak = float(np.abs(sum(stems.values())).max())
    if peak > MIX_PEAK:
        stems = {s: (a * np.float32(MIX_PEAK / peak)) for s, a in stems.items()}
    stems = {s: np.ascontiguousarray(a, dtype=np.float32) for s, a in stems.items()}
    mix = np.sum([stems[s] for s in STEMS], axis=0, dtype=np.float32)
    return Song(
        mix=mix,
        stems=stems,
        chords=[tuple(c) for c in truth["chords"]],
        notes={s: [tuple(n) for n in v] for s, v in truth["notes"].items()},
        beats_s=truth["beats_s"],
        downbeats_s=truth["downbeats_s"],
        sections=[tuple(s) for s in truth["sections"]],
        tempo_bpm=truth["tempo_bpm"],
        key=truth["key"],
    )


def render_song(
    form: str = "ABAB",
    key: str = "F major",
    tempo_bpm: float = 100.0,
    bars_per_section: int = 4,
    seed: int = 0,
) -> Song:
    """A song of sections `form` (letters A, B, C) in `key` ("F major", "Bb minor"), its stems
    rendered by FluidSynth (cached on disk) and its truth. Raises RuntimeError when FluidSynth
    is missing (see `fluidsynth_missing`) or fails."""
    if missing := fluidsynth_missing():
        raise RuntimeError(missing)
    if not form or set(form) - set(TEXTURES):
        raise ValueError(f"form must be letters from {sorted(TEXTURES)}, got {form!r}")
    tonic, mode = parse_key(key)
    args = dict(form=form, key=key, tempo_bpm=tempo_bpm, bars=bars_per_section, seed=seed)
    song_dir = CACHE_DIR / _cache_key(**args)
    if not (song_dir / "truth.json").is_file():
        _write(song_dir, form, tonic, mode, tempo_bpm, bars_per_section, seed)
    return _load(song_dir)


def _write(
    song_dir: Path, form: str, tonic: int, mode: str, tempo_bpm: float, bars: int, seed: int
) -> None:
    writer = _Writer(tonic, mode, tempo_bpm, seed)
    bar_s = BEATS_PER_BAR * writer.beat_s
    sections = []
    for i, letter in enumerate(form):
        writer.section(letter, i * bars, bars)
        sections.append((i * bars * bar_s, (i + 1) * bars * bar_s, letter))
    n_beats = len(form) * bars * BEATS_PER_BAR
    duration = n_beats * writer.beat_s
    names = (
        PITCH_NAMES_FLAT
        if tonic in (FLAT_MAJOR if mode == "major" else FLAT_MINOR)
        else (PITCH_NAMES_SHARP)
    )
    truth = {
        "chords": writer.chords,
        "notes": {s: sorted(v) for s, v in writer.notes.items()},
        "beats_s": [round(b * writer.beat_s, 6) for b in range(n_beats)],
        "downbeats_s": [round(b * writer.beat_s, 6) for b in range(0, n_beats, BEATS_PER_BAR)],
        "sections": [(round(a, 6), round(b, 6), letter) for a, b, letter in sections],
        "tempo_bpm": tempo_bpm,
        "key": f"{names[tonic]} {mode}",
        "n_samples": int(np.ceil((duration + TAIL_S) * SR)),
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # render into a private folder and rename it into place: tests running side by side never
    # read a half-written song
    tmp = Path(tempfile.mkdtemp(prefix=song_dir.name + ".", dir=CACHE_DIR))
    try:
        paths = {}
        for stem in STEMS:
            paths[stem] = tmp / f"{stem}.mid"
            writer.midi[stem].write(str(paths[stem]))
        _render(paths, tmp)
        (tmp / "truth.json").write_text(json.dumps(truth))
        try:
            os.rename(tmp, song_dir)
        except OSError:  # another process renamed its render first: keep theirs
            if not (song_dir / "truth.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
