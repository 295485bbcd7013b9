"""Analysis on real recordings with human annotations, side by side with librosa and madmom.

    ./run.sh bench bench_analysis_real [--data ../shared/testdata/annotated]

For every item of the development set (`INDEX.tsv`: tempo, beats, downbeats, key, chords) it
prints what each tracker found and its score (mir_eval), then a summary:
- tempo within 4 % of the annotation (an octave error counts as wrong);
- beat and downbeat F-measure (70 ms), scored inside the annotated span only (some items keep
  just their first beats);
- key: mir_eval's weighted score; chords: `majmin` weighted accuracy.
Trackers: ours (transforms/beats.py: BeatNet + madmom's DBN), today's librosa path
(transforms/rhythm.py: librosa's beat tracker and the accent rule), madmom's own models
(CC BY-NC-SA: RNN downbeats + DBN; CNN key; deep chroma chords). Nine items is a sanity set, not
a measure: the figures that count come from recordings that are not here.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import librosa  # noqa: E402
import mir_eval  # noqa: E402
import numpy as np  # noqa: E402

from common.constants import ANALYSIS_RATE  # noqa: E402
from transforms import chords as chord_model  # noqa: E402
from transforms import key as key_model  # noqa: E402
from transforms import rhythm  # noqa: E402
from transforms.beats import BeatTracker  # noqa: E402

TOLERANCE = 0.04  # tempo within 4 %
SPAN_MARGIN_S = 0.07  # beats scored within the annotated span, +- the F-measure window


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--data", type=Path, default=here.parent / "shared/testdata/annotated")
    parser.add_argument("--no-madmom", action="store_true", help="skip madmom's models")
    return parser.parse_args()


def librosa_beats(mono: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Today's path before BeatNet: librosa's tracker on the onset strength, the accent rule."""
    env = rhythm.onset_envelope(mono)
    acc = rhythm.accent_envelope(mono)
    tempo = rhythm.track_tempo(env, acc, len(mono) / ANALYSIS_RATE)
    return tempo.bpm, tempo.beats_s


def span_f(ref: np.ndarray, est: list[float] | None) -> float:
    """Beat F-measure on the annotated span: estimates outside it are not judged."""
    if not est or len(ref) == 0:
        return 0.0
    e = np.asarray(est)
    e = e[(e >= ref[0] - SPAN_MARGIN_S) & (e <= ref[-1] + SPAN_MARGIN_S)]
    return float(mir_eval.beat.f_measure(ref, e))


def key_score(ref: str, tonic: str | None, mode: str | None) -> float:
    if not tonic:
        return 0.0
    return float(mir_eval.key.weighted_score(ref, f"{tonic} {mode}"))


def madmom_signal(path: Path):
    """The file decoded at 44.1 kHz mono for madmom (which would call ffmpeg to decode)."""
    from madmom.audio.signal import Signal

    mono, sr = librosa.load(path, sr=44100, mono=True)
    return Signal(mono, sample_rate=sr)


def madmom_key(path: Path) -> tuple[str, str]:
    from madmom.features.key import CNNKeyRecognitionProcessor, key_prediction_to_label

    label = key_prediction_to_label(CNNKeyRecognitionProcessor()(madmom_signal(path)))
    tonic, mode = label.split()
    return tonic, mode


def our_chords(mono: np.ndarray) -> list[tuple[float, float, str]]:
    chroma = key_model.chroma_frames(mono)
    segs = chord_model.recognise(chroma)
    step = rhythm.FRAME_S
    return [(s.start_frame * step, s.end_frame * step, s.chord) for s in segs]


def harte(label: str) -> str:
    if label == "N":
        return "N"
    return f"{label[:-1]}:min" if label.endswith("m") else f"{label}:maj"


def chord_score(ref_lab: Path, est: list[tuple[float, float, str]]) -> float:
    ref_int, ref_labels = mir_eval.io.load_labeled_intervals(str(ref_lab))
    est_int = np.array([(a, b) for a, b, _ in est])
    est_labels = [harte(c) for _, _, c in est]
    est_int, est_labels = mir_eval.util.adjust_intervals(
        est_int, est_labels, ref_int.min(), ref_int.max(), "N", "N"
    )
    merged = mir_eval.util.merge_labeled_intervals(ref_int, ref_labels, est_int, est_labels)
    intervals, ref_l, est_l = merged
    durations = mir_eval.util.intervals_to_durations(intervals)
    comparisons = mir_eval.chord.majmin(ref_l, est_l)
    return float(mir_eval.chord.weighted_accuracy(comparisons, durations))


def madmom_chords(path: Path) -> list[tuple[float, float, str]]:
    from madmom.audio.chroma import DeepChromaProcessor
    from madmom.features.chords import DeepChromaChordRecognitionProcessor

    segs = DeepChromaChordRecognitionProcessor()(DeepChromaProcessor()(madmom_signal(path)))
    return [(float(a), float(b), str(c)) for a, b, c in segs]


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    rows = list(csv.DictReader(open(args.data / "INDEX.tsv"), delimiter="\t"))
    trackers = {"ours": BeatTracker("beatnet")}
    if not args.no_madmom:
        trackers["madmom"] = BeatTracker("madmom")
    tempo_hits = {name: 0 for name in [*trackers, "librosa"]}
    tempo_items = 0
    print(
        f"{'item':30} {'truth':>7} | {'tracker':8} {'BPM':>7} {'ok':>3} {'beatF':>6} "
        f"{'downF':>6} {'metre':>5} {'s':>5}"
    )
    for row in rows:
        path = args.data / row["audio"]
        mono, _ = librosa.load(path, sr=ANALYSIS_RATE, mono=True)
        truth = float(row["tempo_bpm"]) if row["tempo_bpm"] else None
        ref_beats = np.loadtxt(args.data / row["beats"], ndmin=1) if row["beats"] else None
        ref_down = np.loadtxt(args.data / row["downbeats"], ndmin=1) if row["downbeats"] else None
        if truth is not None:
            tempo_items += 1
            found: dict[str, tuple] = {}
            for name, tracker in trackers.items():
                t0 = time.perf_counter()
                b = tracker.track(mono)
                found[name] = (
                    b.tempo_bpm,
                    b.beats_s,
                    b.downbeats_s,
                    b.time_signature,
                    time.perf_counter() - t0,
                )
            t0 = time.perf_counter()
            bpm, beats = librosa_beats(mono)
            found["librosa"] = (bpm, beats, None, None, time.perf_counter() - t0)
            for name, (bpm, beats, down, metre, secs) in found.items():
                ok = bpm is not None and abs(bpm - truth) <= TOLERANCE * truth
                tempo_hits[name] += ok
                bf = f"{span_f(ref_beats, beats):.3f}" if ref_beats is not None else "-"
                df = f"{span_f(ref_down, down):.3f}" if ref_down is not None else "-"
                shown = f"{bpm:.2f}" if bpm else "none"
                print(
                    f"{row['id'][:30]:30} {truth:7.2f} | {name:8} {shown:>7} "
                    f"{'yes' if ok else 'no':>3} {bf:>6} {df:>6} {metre or '-':>5} {secs:5.1f}"
                )
        if row["key"]:
            ours = key_model.estimate_key(key_model.summed(key_model.chroma_frames(mono)))
            line = f"{row['id'][:30]:30} key {row['key']:>9} | ours {ours.tonic} {ours.mode} "
            line += f"score {key_score(row['key'], ours.tonic, ours.mode):.2f}"
            if not args.no_madmom:
                tonic, mode = madmom_key(path)
                line += f" | madmom {tonic} {mode} score {key_score(row['key'], tonic, mode):.2f}"
            print(line)
        if row["chords"]:
            lab = args.data / row["chords"]
            line = (
                f"{row['id'][:30]:30} chords majmin | ours {chord_score(lab, our_chords(mono)):.2f}"
            )
            if not args.no_madmom:
                line += f" | madmom {chord_score(lab, madmom_chords(path)):.2f}"
            print(line)
    print()
    for name, hits in tempo_hits.items():
        print(f"tempo within 4 %: {name:8} {hits} of {tempo_items} ({hits / tempo_items:.0%})")


if __name__ == "__main__":
    main()
