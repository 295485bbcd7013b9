"""The channel predictor's own speed on htdemucs (or umxhq), and that its fused result is still
Demucs'.

    ./run.sh bench bench_predictor [--seconds 60] [--compile auto|on|off] [--model umxhq]

Writes a full-size htdemucs (random weights) where a download would leave it, starts only the
predictor process (it loads, and compiles where `--compile` allows, before it reports healthy),
asks it for the chunk plan of a song, then sends the chunk windows one request at a time, as
the gateway does with batch size 1, with nothing else running. Prints the predictor's own
separation time (what it reports per request) and the client's wall time, both as real-time
factors of the song, which include the 25% overlap of the plan. Then fuses the chunks as the
fuser does and compares the result with `demucs.api.Separator(shifts=0).separate_tensor` on the
same weights: max |diff| / peak. `--model umxhq`: umxhq's four Open-Unmix models (its exact
architecture, random weights, where torch.hub caches them), speed only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.bench_demucs_service import song, through_demucs  # noqa: E402
from common.chunks import chunk_window, overlap_add, standardisation  # noqa: E402
from common.config import Settings  # noqa: E402
from common.interfaces import (  # noqa: E402
    Normalisation,
    PlanRequest,
    PlanResponse,
    SeparateMeta,
    SeparateResult,
)
from common.wire import decode, encode  # noqa: E402
from gateway.stack import Stack  # noqa: E402
from test import separation_fixtures as fx  # noqa: E402
from test.stackutil import stack_settings  # noqa: E402


def through_predictor(
    models: Path, data: Path, track: np.ndarray, compile_models: str, model: str = "htdemucs"
) -> tuple[float, float, int, np.ndarray]:
    """(predictor's seconds, client wall seconds, chunks, fused stems (n_stems, 2, n))."""
    settings, env = stack_settings(data, models, compile_models=compile_models)
    stack = Stack(settings, env)
    t0 = time.perf_counter()
    stack.start(("predictor",))
    try:
        stack.wait_healthy(timeout=1800)
        print(f"predictor healthy in {time.perf_counter() - t0:.1f}s", flush=True)
        with httpx.Client(base_url=stack.url("predictor"), timeout=600) as client:
            r = client.post(
                "/plan",
                json=PlanRequest(model=model, n_frames=track.shape[1]).model_dump(),
            )
            r.raise_for_status()
            plan = PlanResponse.model_validate_json(r.content)
            (only,) = plan.plans
            norm = standardisation(track) if plan.model.normalise else Normalisation()
            pieces, served = [], 0.0
            start = time.perf_counter()
            for chunk in only.chunks:
                window = chunk_window(track, chunk, norm)[None]
                body, headers = encode(window, SeparateMeta(model=model, chunks=[chunk]))
                r = client.post("/separate", content=body, headers=headers)
                r.raise_for_status()
                stems, meta = decode(r.content, r.headers, SeparateResult)
                served += meta.seconds
                pieces.append((chunk, stems[0]))
            wall = time.perf_counter() - start
    finally:
        stack.stop()
    fused = overlap_add(pieces, only, pieces[0][1].shape[:-1])
    return served, wall, len(pieces), fused * np.float32(norm.std) + np.float32(norm.mean)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--compile", default="auto", help="COMPILE_MODELS for the predictor")
    parser.add_argument("--model", choices=["htdemucs", "umxhq"], default="htdemucs")
    args = parser.parse_args()
    track = song(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        settings = Settings(_env_file=None, models_dir=models)
        if args.model == "umxhq":
            from test.unit.prediction.test_umx_separator import install_umxhq

            install_umxhq(settings, seed=12)
        else:
            fx.install_published(settings, "htdemucs", [fx.htdemucs(fx.FOUR, 12, **fx.FULL)])
        served, wall, chunks, ours = through_predictor(
            models, Path(tmp) / "data", track, args.compile, args.model
        )
        if args.model == "htdemucs":
            theirs, reference = through_demucs(models, track)
    seconds = track.shape[1] / 44100
    print(f"{args.model}: {seconds:.0f} s of audio, {chunks} chunks, compile={args.compile}")
    print(f"predictor, its own time:  {served:.2f}s (RTF {served / seconds:.3f})")
    print(f"predictor, client wall:   {wall:.2f}s (RTF {wall / seconds:.3f})")
    if args.model == "htdemucs":
        error = float(np.abs(ours - reference).max() / np.abs(reference).max())
        print(f"demucs separate_tensor:   {theirs:.2f}s (RTF {theirs / seconds:.3f})")
        print(f"max|diff|/peak against separate_tensor: {error:.2e}")


if __name__ == "__main__":
    main()
