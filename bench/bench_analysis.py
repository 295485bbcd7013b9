"""Time per 10 s analysis window of each analysis stage, in-process (no HTTP).

    ./run.sh bench bench_analysis [--threads 1] [--repeats 7] [--ast]

Prints the median and best time of each stage over `--repeats` runs on a window of generated
music. `--threads 1` (default) pins BLAS / OpenMP / torch to one core, the budget the cqt service is
held to (< 0.5 s per window). `--ast` also times `ASTFeatureExtractor` (the reference the
log-mel matches) and one forward of an AST of the real size with random weights, which shows
what the tone identifier costs per window without needing its weights.
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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0, help="window length")
    parser.add_argument("--ast", action="store_true", help="also time the extractor and AST")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.threads > 0:
    # Before numpy / torch load their thread pools.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

from common.constants import AST_SAMPLE_RATE, SAMPLE_RATE  # noqa: E402
from transforms import features  # noqa: E402
from transforms.key import analyse_key, cqt_kernel  # noqa: E402


def music(seconds: float, seed: int) -> np.ndarray:
    """Chords with harmonics, a noisy hi-hat pulse, stereo: float32 (2, n) at 44.1 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    root = 110.0 * 2 ** (rng.integers(12) / 12)
    tones = sum(
        0.1 / (h + 1) * np.sin(2 * np.pi * root * ratio * (h + 1) * t)
        for ratio in (1.0, 1.26, 1.5)
        for h in range(5)
    )
    hats = 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * 4 * t) > 0.9)
    return np.stack([tones + hats, 0.9 * tones - hats]).astype(np.float32)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, best) seconds of `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    audio = music(ARGS.seconds, seed=0)
    mono = audio.mean(axis=0)
    mono_16k = features.to_mono_16k(audio)
    start = time.perf_counter()
    cqt_kernel()
    kernel_s = time.perf_counter() - start

    stages: dict[str, Callable[[], object]] = {
        "rms + peak dB": lambda: (features.rms_db(audio), features.peak_db(audio)),
        "loudness (BS.1770)": lambda: features.integrated_loudness(audio),
        "centroid + rolloff (STFT)": lambda: features.spectral_centroid_rolloff(mono),
        "resample 44.1k -> 16k": lambda: features.to_mono_16k(audio),
        "kaldi fbank": lambda: features.kaldi_fbank(mono_16k),
        "log-mel total (ast_log_mel)": lambda: features.ast_log_mel(audio),
        "CQT chroma + key": lambda: analyse_key(audio),
    }
    if ARGS.ast:
        stages.update(ast_stages(mono_16k))

    threads = ARGS.threads or "default"
    print(
        f"{ARGS.seconds:g} s stereo windows at 44.1 kHz, threads={threads}, "
        f"repeats={ARGS.repeats}; CQT kernel built once in {kernel_s * 1000:.0f} ms"
    )
    print(f"{'stage':34s} {'median ms':>10s} {'best ms':>9s} {'x real time':>12s}")
    for name, fn in stages.items():
        median, best = timed(fn, ARGS.repeats)
        print(f"{name:34s} {median * 1000:10.1f} {best * 1000:9.1f} {ARGS.seconds / median:12.0f}")


def ast_stages(mono_16k: np.ndarray) -> dict[str, Callable[[], object]]:
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    from prediction.tone_identifier import normalise

    if ARGS.threads > 0:
        torch.set_num_threads(ARGS.threads)
    extractor = ASTFeatureExtractor()
    model = ASTForAudioClassification(ASTConfig(num_labels=527)).eval()  # real size, random
    x = torch.from_numpy(normalise(features.ast_log_mel(np.stack([mono_16k] * 2)), 1024))[None]

    def forward() -> None:
        with torch.inference_mode():
            model(input_values=x)

    return {
        "ASTFeatureExtractor (reference)": lambda: extractor(
            mono_16k, sampling_rate=AST_SAMPLE_RATE, return_tensors="np"
        ),
        "AST forward (base size, CPU)": forward,
    }


if __name__ == "__main__":
    main()
