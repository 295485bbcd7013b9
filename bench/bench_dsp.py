"""Figures of the embedded dsp separator: quality, speed at one thread, chunk agreement.

    .venv/bin/python bench/bench_dsp.py [--seconds 30] [--repeats 3]

- SDR per stem on the shared MUSDB excerpt falcon69 (`../shared/testdata`, skipped when absent)
  next to the trivial mixture/4 estimate;
- real-time factor (wall time / audio time, lower is faster) of `separate_dsp` at one thread on
  a generated song: the whole track, one 12 s window (a 10 s chunk with 1 s of context each
  side), and the chunked job (10 s chunks, overlap 0.25, context C, overlap-added);
- agreement in dB of chunked against whole-track separation per context C, with and without
  the chunk's `origin`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# One thread, as one predictor worker gets; must be set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from common.chunks import center_trim, chunk_window, overlap_add, plan_chunks  # noqa: E402
from common.constants import DSP_STEMS, SAMPLE_RATE  # noqa: E402
from common.quality import sdr_db  # noqa: E402
from prediction.dsp import separate_dsp  # noqa: E402
from test.songgen import make_song, mixture  # noqa: E402

FALCON = REPO.parent / "shared" / "testdata" / "stems" / "falcon69"
SEGMENT_S = 10.0
OVERLAP = 0.25


def falcon_figures() -> None:
    if not FALCON.is_dir():
        print(f"falcon69: absent ({FALCON}), skipped")
        return
    truth = {s: sf.read(FALCON / f"{s}.flac", dtype="float32")[0].T for s in DSP_STEMS}
    mix = np.ascontiguousarray(sf.read(FALCON / "mixture.flac", dtype="float32")[0].T)
    stems = separate_dsp(mix)
    print(f"falcon69 ({mix.shape[-1] / SAMPLE_RATE:.2f} s), simple SDR in dB:")
    print(f"  {'stem':8s} {'dsp':>7s} {'mix/4':>7s} {'gain':>7s}")
    for i, name in enumerate(DSP_STEMS):
        ours, trivial = sdr_db(truth[name], stems[i]), sdr_db(truth[name], mix / 4)
        print(f"  {name:8s} {ours:7.2f} {trivial:7.2f} {ours - trivial:+7.2f}")


def chunked(mix: np.ndarray, context_s: float, aligned: bool = True) -> np.ndarray:
    """(2, n) -> (4, 2, n): the job's way, chunk by chunk with context, overlap-added."""
    context = int(context_s * SAMPLE_RATE)
    plan = plan_chunks(
        mix.shape[-1], int(SEGMENT_S * SAMPLE_RATE), OVERLAP, lambda k: k + 2 * context
    )
    pieces = []
    for chunk in plan.chunks:
        origin = chunk.window_start if aligned else 0
        out = separate_dsp(chunk_window(mix, chunk), SAMPLE_RATE, origin)
        pieces.append((chunk, center_trim(out, chunk.length)))
    return overlap_add(pieces, plan, (len(DSP_STEMS), 2))


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` runs (after one warm-up): the least disturbed one."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def speed_figures(mix: np.ndarray, repeats: int) -> None:
    seconds = mix.shape[-1] / SAMPLE_RATE
    window = mix[:, : 12 * SAMPLE_RATE]
    print(f"speed at one thread (best of {repeats}), real-time factor = wall / audio:")
    t = best_time(lambda: separate_dsp(mix), repeats)
    print(f"  whole {seconds:.0f} s track:        {t:6.3f} s  RTF {t / seconds:.4f}")
    t = best_time(lambda: separate_dsp(window), repeats)
    print(f"  one 12 s window:           {t:6.3f} s  RTF {t / 12:.4f}")
    for context_s in (0.5, 1.0, 2.0):
        t = best_time(lambda c=context_s: chunked(mix, c), repeats)
        print(f"  chunked, context {context_s:.1f} s:   {t:6.3f} s  RTF {t / seconds:.4f}")


def agreement_figures(mix: np.ndarray) -> None:
    whole = separate_dsp(mix)
    print("chunked vs whole-track separation, SDR in dB per stem (" + "/".join(DSP_STEMS) + "):")
    for context_s in (0.0, 0.25, 0.5, 1.0, 2.0):
        for aligned in (False, True):
            fused = chunked(mix, context_s, aligned)
            figures = " ".join(f"{sdr_db(whole[i], fused[i]):6.1f}" for i in range(len(DSP_STEMS)))
            label = "with origin" if aligned else "no origin  "
            print(f"  context {context_s:4.2f} s, {label}: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the generated song")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mix = mixture(make_song(seconds=args.seconds, seed=0))
    falcon_figures()
    speed_figures(mix, args.repeats)
    agreement_figures(mix)


if __name__ == "__main__":
    main()
