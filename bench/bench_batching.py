"""Is batching windows worth it on this machine? htdemucs (full size, random weights), eager.

    ./run.sh bench bench_batching [--windows 4] [--device cpu|cuda]

Times the same windows of one training length (7.8 s) one by one, in batches of 2, and as one
batch, after one warm-up window. The predictor's default batch size per device
(`prediction.devices`: 1 on the CPU, 4 elsewhere) should be the fastest of these.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from test import separation_fixtures as fx  # noqa: E402


def timed(model: torch.nn.Module, x: torch.Tensor, batch: int, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        model(x[i : i + batch])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = fx.htdemucs(fx.FOUR, 12, **fx.FULL).to(args.device)
    length = int(model.segment * model.samplerate)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.windows, 2, length)).astype(np.float32) * 0.1)
    x = x.to(args.device)
    print(
        f"{args.windows} windows of {length} frames on {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    with torch.no_grad():
        model(x[:1])
        for batch in sorted({1, 2, args.windows}):
            seconds = timed(model, x, batch, args.device)
            print(f"batch {batch}: {seconds:.2f}s ({seconds / args.windows:.2f}s a window)")


if __name__ == "__main__":
    main()
