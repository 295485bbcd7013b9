"""Analysis cost per minute of audio, per service, in-process (no HTTP).

    ./run.sh bench bench_analysis [--threads 1] [--repeats 5] [--seconds 60]

Runs each service's own per-window code over every analysis window of a generated song (chords
and drums), then the track-level calls, and prints seconds of compute per minute of audio:
fft (levels, spectral shape, AST input, onset / accent / loudness series), cqt (chroma, key),
the tone identifier (one AST forward per window, full size, random weights) and the two track
calls (tempo and beats; key and chords). `--threads 1` pins BLAS / OpenMP / torch to one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="0: leave the libraries' default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60.0, help="song length")
    parser.add_argument("--no-ast", action="store_true", help="skip the AST forward")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.threads > 0:
    # Before numpy / torch load their thread pools.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

from common.analysis_plan import hop_samples  # noqa: E402
from common.constants import (  # noqa: E402
    ANALYSIS_FRAME_HOP,
    ANALYSIS_WINDOW_S,
    LOUDNESS_STEP,
    SAMPLE_RATE,
)
from common.interfaces import ToneResult, TrackRhythmRequest, WindowFeatures  # noqa: E402
from gateway.analysis import TrackSeries, add_features, window_requests  # noqa: E402
from test import musicgen  # noqa: E402
from transforms import cqt, features, fft  # noqa: E402
from transforms.window import resolve  # noqa: E402


def song(seconds: float) -> np.ndarray:
    chords, _ = musicgen.key_progression(9, "minor", seconds_per_chord=seconds / 8)
    drums = musicgen.drum_pattern(123.0, chords.shape[1] / SAMPLE_RATE)
    return (0.6 * chords + 0.5 * drums).astype(np.float32)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up call (numba compiles on the first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    audio = song(ARGS.seconds)
    n = audio.shape[1]
    requests = window_requests("bench", n, hop_samples(ANALYSIS_WINDOW_S))
    bodies = [(audio[:, lo:hi], header) for header, lo, hi in requests]
    series = TrackSeries(n)

    def fft_windows() -> None:
        for body, header in bodies:
            span = resolve(body.shape[1], header)
            proper = np.ascontiguousarray(body[:, span.window])
            features.ast_input(proper)
            fft.measure(proper)
            fft.series(body, span)

    def cqt_windows() -> None:
        for body, header in bodies:
            own, meta = cqt.window_tonal(body, header)
            series.chroma[:, meta.first_frame : meta.first_frame + own.shape[1]] = own

    for body, header in bodies:  # fill the series once for the track calls
        values, n_blocks = fft.series(body, resolve(body.shape[1], header))
        meta = WindowFeatures(
            index=header.index, rms_db=0, peak_db=0, loudness_lufs=None,
            spectral_centroid_hz=0, spectral_rolloff_hz=0, tone=ToneResult(status="unavailable"),
            first_frame=header.start // ANALYSIS_FRAME_HOP, n_onset=header.own_frames,
            first_block=header.start // LOUDNESS_STEP, n_blocks=n_blocks,
        )  # fmt: skip
        add_features(series, values, meta)
    cqt_windows()
    rhythm_body = np.concatenate([series.onset, series.accent, series.steps])
    rhythm_meta = TrackRhythmRequest(
        n_samples=n, n_frames=len(series.onset), n_blocks=len(series.steps)
    )
    stages: dict[str, Callable[[], object]] = {
        "fft: windows (features, AST input, series)": fft_windows,
        "cqt: windows (chroma, key)": cqt_windows,
        "fft: track (tempo, beats, loudness)": lambda: fft.track_rhythm(rhythm_body, rhythm_meta),
        "cqt: track (key, chords)": lambda: cqt.track_tonal(series.chroma, n),
    }
    if not ARGS.no_ast:
        stages["tone: AST forwards (base size, CPU)"] = ast_forwards(len(bodies))

    minutes = n / SAMPLE_RATE / 60
    print(
        f"{n / SAMPLE_RATE:.0f} s song, {len(bodies)} windows of {ANALYSIS_WINDOW_S} s, "
        f"threads={ARGS.threads or 'default'}, median of {ARGS.repeats}"
    )
    print(f"{'stage':44s} {'s':>7s} {'s per minute of audio':>22s}")
    for name, fn in stages.items():
        seconds = timed(fn, ARGS.repeats)
        print(f"{name:44s} {seconds:7.2f} {seconds / minutes:22.2f}", flush=True)


def ast_forwards(n_windows: int) -> Callable[[], object]:
    import torch
    from transformers import ASTConfig, ASTForAudioClassification

    if ARGS.threads > 0:
        torch.set_num_threads(ARGS.threads)
    model = ASTForAudioClassification(ASTConfig(num_labels=527)).eval()  # real size, random
    x = torch.randn(1, 1024, 128)

    def forward() -> None:
        with torch.inference_mode():
            for _ in range(n_windows):
                model(input_values=x)

    return forward


if __name__ == "__main__":
    main()
