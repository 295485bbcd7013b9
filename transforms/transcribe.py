"""Notes of a pitched stem: Basic Pitch's ONNX model, and its activations made notes.

Basic Pitch (Spotify, ICASSP 2022, Apache-2.0) reads mono 22.05 kHz audio in windows of
43,844 samples (2 s less one hop) that overlap by 30 frames; each window gives 172 frames of
three activations per piano key: `note` (the key sounds), `onset` (it starts) and a finer
`contour`. We run its model with onnxruntime only (no TensorFlow), unwrap the windows as its
`inference.py` does (the same activations to 1e-7, tested), and turn the activations into notes
after its `note_creation.py` (`decode_notes`), with thresholds and a pitch range per stem
(`STEM_OPTIONS`); notes heard in noise are then dropped (`tonal_notes`). Basic Pitch's own
modules are not imported: its package `__init__` logs a warning per missing backend, and its
note creation imports resampy, which needs setuptools' removed `pkg_resources`.

Drums have no pitch: `transforms.drum_notes` finds their hits.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from scipy.signal import argrelmax, get_window, resample_poly

from common.errors import InvalidOption
from common.midi import Note

SAMPLE_RATE = 22050  # Hz: Basic Pitch's input rate
FFT_HOP = 256  # samples per model frame (11.6 ms)
WINDOW = 2 * SAMPLE_RATE - FFT_HOP  # 43,844 samples per model input
OVERLAP_FRAMES = 30  # frames shared by consecutive windows; half of them dropped each side
OVERLAP = OVERLAP_FRAMES * FFT_HOP  # 7,680 samples
HOP = WINDOW - OVERLAP  # 36,164 samples between window starts
KEPT_FRAMES = 172 - OVERLAP_FRAMES  # 142 frames used of the 172 of each window
N_KEYS = 88  # piano keys A0 .. C8
MIDI_A0 = 21  # MIDI pitch of key 0
BATCH_WINDOWS = 8  # windows per model call: bounds the model's intermediate memory
MAX_FLATNESS = 0.2  # spectral flatness around a note above which it is noise (`tonal_notes`)
FLATNESS_FFT = 2048  # samples per frame of that flatness (93 ms; 10.8 Hz bins)
FLATNESS_FRAMES = 64  # frames of a note that its flatness is the median of, at most

_INPUT = "serving_default_input_2:0"
_OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2")  # note, onset


def model_path() -> Path:
    """The ONNX model inside the installed basic-pitch wheel.

    Found without importing `basic_pitch`, whose `__init__` probes for TensorFlow, CoreML and
    TFLite and logs a warning for each one that is missing (installing a root log handler).
    """
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("basic-pitch is not installed (deploy/install-music-models.sh)")
    path = Path(next(iter(spec.submodule_search_locations))) / "saved_models/icassp_2022/nmp.onnx"
    if not path.is_file():
        raise ModelError(f"basic-pitch is installed but has no ONNX model at {path}")
    return path


class ModelError(RuntimeError):
    """Basic Pitch's model cannot be found or loaded."""


def to_model_rate(audio: np.ndarray, sample_rate: int = 44100) -> np.ndarray:
    """`(channels, n)` or `(n,)` float audio at `sample_rate` Hz -> `(m,)` float32 mono at
    22.05 kHz, the model's input."""
    mono = np.asarray(audio, dtype=np.float64)
    if mono.ndim == 2:
        mono = mono.mean(axis=0)
    if sample_rate != SAMPLE_RATE:
        g = np.gcd(int(sample_rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, int(sample_rate) // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _finite(mono: np.ndarray) -> np.ndarray:
    """`(n,)` float32 with NaN and infinite samples (a broken decoder's) made silence."""
    audio = np.asarray(mono, dtype=np.float32).reshape(-1)
    return np.where(np.isfinite(audio), audio, np.float32(0.0))


def frame_times(n_windows: int) -> np.ndarray:
    """`(n_windows * KEPT_FRAMES,)` seconds of each unwrapped frame.

    Window w starts at sample w * HOP of the audio padded with OVERLAP / 2 zeros in front, and
    its kept frames start OVERLAP_FRAMES / 2 frames in: frame k of window w therefore sits at
    sample w * HOP + k * FFT_HOP of the original audio. The hop is not a whole number of frames
    (141.3), so the step between windows is shorter than a frame: a plain grid of FFT_HOP
    would drift 8.5 ms late per window. Basic Pitch's `model_frames_to_time` corrects the drift
    in steps every 172 frames (within 9 ms of these times).
    """
    w, k = np.divmod(np.arange(n_windows * KEPT_FRAMES), KEPT_FRAMES)
    return (w * HOP + k * FFT_HOP) / SAMPLE_RATE


class Transcriber:
    """Basic Pitch's model, loaded once; `transcribe` turns a stem's audio into notes."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        path = path or model_path()
        options = ort.SessionOptions()
        # a predictor worker owns `threads` cores: onnxruntime would otherwise take them all
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load Basic Pitch's ONNX model {path}: {e}") from e

    def activations(self, mono_22k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(n,)` float32 mono at 22.05 kHz -> `note`, `onset` `(frames, 88)` in 0..1 (key 0 is
        A0, MIDI 21) and `times_s` `(frames,)`, the frames covering the audio."""
        audio = _finite(mono_22k)
        n = audio.shape[0]
        padded = np.concatenate([np.zeros(OVERLAP // 2, np.float32), audio])
        starts = range(0, max(padded.shape[0], 1), HOP)
        n_windows = len(starts)
        notes, onsets = [], []
        for first in range(0, n_windows, BATCH_WINDOWS):
            batch = np.zeros((min(BATCH_WINDOWS, n_windows - first), WINDOW, 1), np.float32)
            for i, start in enumerate(starts[first : first + batch.shape[0]]):
                piece = padded[start : start + WINDOW]
                batch[i, : piece.shape[0], 0] = piece
            note, onset = self.session.run(list(_OUTPUTS), {_INPUT: batch})
            half = OVERLAP_FRAMES // 2
            notes.append(note[:, half:-half].reshape(-1, N_KEYS))
            onsets.append(onset[:, half:-half].reshape(-1, N_KEYS))
        times = frame_times(n_windows)
        keep = times < n / SAMPLE_RATE
        return np.concatenate(notes)[keep], np.concatenate(onsets)[keep], times[keep]

    def transcribe(self, mono_22k: np.ndarray, stem: str | NoteOptions = "other") -> list[Note]:
        """`(n,)` float32 mono at 22.05 kHz -> the notes heard, sorted by start.

        `stem` ("bass", "vocals", "other", "guitar", "piano") picks the decoding thresholds and
        pitch range; a `NoteOptions` gives them directly. Silence and noise give no notes.
        """
        options = stem_options(stem)  # refused before the model runs
        return notes_from_activations(self.activations(mono_22k), mono_22k, options)


def stem_options(stem: str | NoteOptions) -> NoteOptions:
    """A stem's note options (`STEM_OPTIONS`), or `stem` itself when it is NoteOptions."""
    if isinstance(stem, NoteOptions):
        return stem
    if stem not in STEM_OPTIONS:
        raise InvalidOption(f"no note options for stem {stem!r}; known: {sorted(STEM_OPTIONS)}")
    return STEM_OPTIONS[stem]


def notes_from_activations(
    activations: tuple[np.ndarray, np.ndarray, np.ndarray],
    mono_22k: np.ndarray,
    stem: str | NoteOptions,
) -> list[Note]:
    """`Transcriber.activations(mono_22k)` -> the notes that `transcribe` gives: one model run
    serves several option sets (the bench, the tests)."""
    notes = decode_notes(*activations, stem_options(stem))
    return tonal_notes(notes, mono_22k)


def tonal_notes(notes: list[Note], mono_22k: np.ndarray) -> list[Note]:
    """The notes during which the audio `(n,)` (22.05 kHz) is tonal: the median spectral
    flatness over the note, from 0.7 times its fundamental to its 8th partial, under
    MAX_FLATNESS. The model hears notes in noise about as surely (activation 0.3..0.45) as many
    real sung or bass notes, but noise is flat there (0.35 and more, white or pink) where a
    played note is not (0.09 at most, with the other stems' bleed)."""
    if not notes:
        return notes
    # a few frames of each note (FLATNESS_FRAMES at most, spread over it): the median needs no
    # more, and a whole track's spectrogram would hold 0.4 GB for 10 minutes
    audio = np.pad(_finite(mono_22k), FLATNESS_FFT // 2)
    window = get_window("hann", FLATNESS_FFT)
    freqs = np.fft.rfftfreq(FLATNESS_FFT, 1 / SAMPLE_RATE)
    last_frame = (audio.shape[0] - FLATNESS_FFT) // FFT_HOP
    kept = []
    for note in notes:
        start = min(int(note.start_s * SAMPLE_RATE / FFT_HOP), last_frame)
        end = min(max(start + 1, int(note.end_s * SAMPLE_RATE / FFT_HOP)), last_frame + 1)
        hops = np.unique(np.linspace(start, end - 1, FLATNESS_FRAMES).astype(int)) * FFT_HOP
        frames = np.stack([audio[h : h + FLATNESS_FFT] for h in hops]) * window
        f0 = 440.0 * 2 ** ((note.pitch - 69) / 12)
        rows = (freqs >= 0.7 * f0) & (freqs <= min(8 * f0, SAMPLE_RATE / 2))
        band = np.abs(np.fft.rfft(frames, axis=1)[:, rows]) ** 2 + 1e-12
        flatness = np.exp(np.log(band).mean(axis=1)) / band.mean(axis=1)
        if np.median(flatness) < MAX_FLATNESS:
            kept.append(note)
    return kept


@dataclass(frozen=True)
class NoteOptions:
    """How activations become notes (Basic Pitch's `predict` defaults unless stated)."""

    onset_threshold: float = 0.5  # an onset peak this high starts a note
    frame_threshold: float = 0.3  # a note lasts while its key's `note` activation stays above
    min_note_s: float = 0.09  # shorter notes are dropped (Basic Pitch: 128 ms)
    min_pitch: int = 21  # MIDI range kept: A0..C8 is the model's whole range
    max_pitch: int = 108
    melodia: bool = True  # also take notes from activation left without an onset
    monophonic: bool = False  # keep only the strongest note at any time
    gap_frames: int = 11  # a dip below frame_threshold shorter than this does not end a note
    # (not in Basic Pitch) notes whose mean `note` activation is under this are dropped...
    min_activation: float = 0.0
    # ... and those under this share of the track's strong notes (the 90th percentile): the
    # model is less sure of every note of a real recording than of a clean synth (0.3..0.6
    # against 0.7..0.9), and the bleed of other instruments is weaker than the stem's own notes
    relative_activation: float = 0.0


# Chosen on GM songs rendered by FluidSynth, alone and with the other stems mixed in at -20 dB
# as a separator leaves them, and checked on real stems (MUSDB's falcon69) for notes at all
# (bench/bench_transcribe.py): an onset threshold above Basic Pitch's 0.5 drops the weak onsets
# of partials and of a chord's release; "melodia" notes bring back a voice's or a real bass's
# soft attacks but add a chord's partials; the relative floor drops most of the bleed.
_POLYPHONIC = NoteOptions(onset_threshold=0.6, melodia=False, relative_activation=0.7)
_MONOPHONIC = replace(_POLYPHONIC, melodia=True, monophonic=True)
STEM_OPTIONS = {
    "other": _POLYPHONIC,
    "piano": _POLYPHONIC,
    "guitar": replace(_POLYPHONIC, min_pitch=40, max_pitch=88),  # E2 .. E6 (24 frets)
    # E1 .. G4: a 4-string's open E to its 15th fret on G
    "bass": replace(_MONOPHONIC, min_pitch=28, max_pitch=67),
    "vocals": replace(_MONOPHONIC, min_pitch=36, max_pitch=84),  # C2 .. C6
}


def note_end(column: np.ndarray, start: int, threshold: float, gap: int) -> int:
    """Exclusive end of the note starting at `start` in one key's `(frames,)` activation: the
    first run of `gap` frames below `threshold` after it, or the last frame above it."""
    span = 8 * gap
    while True:  # a growing span: a note is short next to the track it is in
        below = column[start + 1 : start + 1 + span] < threshold
        if below.shape[0] >= gap:
            runs = np.convolve(below, np.ones(gap, dtype=int), mode="valid") == gap
            if runs.any():
                return start + 1 + int(np.argmax(runs))
        if start + 1 + span >= column.shape[0]:
            above = np.flatnonzero(~below)
            return start + 2 + int(above[-1]) if above.size else start + 1
        span *= 4


def decode_notes(
    note: np.ndarray, onset: np.ndarray, times_s: np.ndarray, options: NoteOptions
) -> list[Note]:
    """`note`, `onset` `(frames, 88)` activations and their `(frames,)` times -> notes sorted by
    start, after Basic Pitch's `output_to_notes_polyphonic`: each onset peak above the threshold
    starts a note that lasts while its key stays active; later onsets are taken first so a
    re-struck key ends the note before it."""
    n = note.shape[0]
    if n < 3:
        return []
    keys = np.arange(N_KEYS) + MIDI_A0
    outside = (keys < options.min_pitch) | (keys > options.max_pitch)
    frames = np.where(outside, 0.0, note)
    # Basic Pitch also starts notes where `note` jumps up without an onset peak; here that step
    # scores no better, and it splits a held note where two model windows meet (the later
    # window, not hearing the attack, is often more sure of the key)
    onsets = np.where(outside, 0.0, onset)
    min_frames = max(1, int(round(options.min_note_s * SAMPLE_RATE / FFT_HOP)))

    events: list[tuple[int, int, int, float]] = []  # (start, end, key, mean activation)
    remaining = frames.copy()
    # silence before the first frame, so that a note struck at 0 s has an onset peak
    t_idx, k_idx = argrelmax(np.pad(onsets, ((1, 0), (0, 0))), axis=0)
    t_idx -= 1
    strong = onsets[t_idx, k_idx] >= options.onset_threshold
    for t, k in sorted(zip(t_idx[strong], k_idx[strong], strict=True), reverse=True):
        end = note_end(remaining[:, k], t, options.frame_threshold, options.gap_frames)
        if end - t < min_frames:
            continue
        remaining[t:end, max(k - 1, 0) : k + 2] = 0  # its neighbours are the same note's bleed
        events.append((t, end, k, float(frames[t:end, k].mean())))
    if options.melodia:
        events += _notes_without_onsets(frames, remaining, options, min_frames)
    if events:
        strong = np.percentile([e[3] for e in events], 90)
        floor = max(options.min_activation, options.relative_activation * strong)
        events = [e for e in events if e[3] >= floor]
    if options.monophonic:
        events = _strongest_at_a_time(events, n, min_frames)

    step = FFT_HOP / SAMPLE_RATE
    notes = [
        Note(
            start_s=float(times_s[s]),
            end_s=float(times_s[e]) if e < n else float(times_s[-1] + step),
            pitch=int(k + MIDI_A0),
            velocity=int(np.clip(round(127 * amp), 1, 127)),
        )
        for s, e, k, amp in events
    ]
    return sorted(notes, key=lambda x: (x.start_s, x.pitch))


def _notes_without_onsets(
    frames: np.ndarray, remaining: np.ndarray, options: NoteOptions, min_frames: int
) -> list[tuple[int, int, int, float]]:
    """Basic Pitch's "melodia trick": from the strongest activation not yet in a note, grow a
    note forwards and backwards while the key stays active. Legato singing and slides have no
    onset peak for each note. Mutates `remaining`."""
    events = []
    t_idx, k_idx = np.nonzero(remaining > options.frame_threshold)
    # visiting candidates from the strongest down is the same as Basic Pitch's repeated argmax,
    # since taking a note only ever lowers `remaining`
    for i in np.argsort(-remaining[t_idx, k_idx], kind="stable"):
        t, k = int(t_idx[i]), int(k_idx[i])
        if remaining[t, k] <= options.frame_threshold:
            continue
        end = note_end(remaining[:, k], t, options.frame_threshold, options.gap_frames)
        back = note_end(remaining[t::-1, k], 0, options.frame_threshold, options.gap_frames)
        start = t - back + 1
        remaining[start:end, max(k - 1, 0) : k + 2] = 0
        if end - start >= min_frames:
            events.append((start, end, k, float(frames[start:end, k].mean())))
    return events


HARMONIC_INTERVALS = (12, 19, 24, 28, 31)  # semitones from a note to its partials 2, 3, 4, 5, 6
SAME_ONSET_FRAMES = 4  # onsets this close (46 ms) are one attack


def _without_harmonics(
    events: list[tuple[int, int, int, float]],
) -> list[tuple[int, int, int, float]]:
    """Drops notes that are a partial of a lower note sounding through most of them: the model
    hears a bass's or a voice's strong second and third partials as notes of their own."""
    if not events:
        return []
    start, end, key = (np.array([e[i] for e in events]) for i in range(3))
    covered = np.zeros(len(events), dtype=int)
    for i in range(0, len(events), 256):  # (256, events) at a time: memory stays small
        rows = slice(i, i + 256)
        # frames in common with each other note, where that note is a partial's interval below
        common = np.minimum(end[rows, None], end) - np.maximum(start[rows, None], start)
        is_partial = np.isin(key[rows, None] - key, HARMONIC_INTERVALS)
        covered[rows] = np.where(is_partial, common, 0).max(axis=1)
    return [e for e, c in zip(events, covered, strict=True) if c < 0.5 * (e[1] - e[0])]


def _strongest_at_a_time(
    events: list[tuple[int, int, int, float]], n_frames: int, min_frames: int
) -> list[tuple[int, int, int, float]]:
    """A monophonic line: partials of lower notes dropped, then of notes starting together the
    strongest kept, and each note ended where the next one starts (a held note's release or
    reverb often outlasts the next note's onset)."""
    line: list[tuple[int, int, int, float]] = []
    for event in sorted(_without_harmonics(events)):
        if line and event[0] - line[-1][0] < SAME_ONSET_FRAMES:
            if event[3] > line[-1][3]:
                line[-1] = event
            continue
        line.append(event)
    starts = [e[0] for e in line[1:]] + [n_frames] * bool(line)
    cut = [(s, min(e, nxt), k, a) for (s, e, k, a), nxt in zip(line, starts, strict=True)]
    return [event for event in cut if event[1] - event[0] >= min_frames]
