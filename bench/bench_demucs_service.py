"""The service against Demucs itself, same htdemucs architecture and weights, same machine.

    ./run.sh bench bench_demucs_service [--seconds 60] [--compile off|auto]

Writes a full-size htdemucs (random weights) where a download would leave it, starts the six
services on that models dir (the predictor loads the model before it reports healthy), and times
one job from upload to downloaded result with `analysis=false`. Then stops the stack and times
`demucs.api.Separator(shifts=0).separate_tensor` on the same audio with the model already
loaded. Prints both, their ratio, and max |diff| / peak between the two results. Uses real music
from ../shared/testdata when present, else a generated song.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from common.config import Settings  # noqa: E402
from test import separation_fixtures as fx  # noqa: E402
from test.songgen import make_song, mixture  # noqa: E402
from test.stackutil import start_stack, wait_job  # noqa: E402


def song(seconds: float) -> np.ndarray:
    track = fx.real_music(seconds)
    if track is None:
        track = mixture(make_song(seconds=seconds, seed=2))
    return np.ascontiguousarray(track[:, : int(seconds * 44100)])


def through_service(
    models: Path, data: Path, upload: bytes, extra: dict
) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    stack = start_stack(data, models, **extra)
    print(f"stack healthy in {time.perf_counter() - t0:.1f}s (model loaded)", flush=True)
    try:
        with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
            start = time.perf_counter()
            r = client.post(
                "/api/jobs",
                files={"file": ("song.wav", upload)},
                data={"model": "htdemucs", "analysis": "false"},
            )
            r.raise_for_status()
            job = wait_job(client, r.json()["id"], timeout=3600)
            assert job["status"] == "done", job
            result = client.get(job["links"]["result"])
            result.raise_for_status()
            wall = time.perf_counter() - start
    finally:
        stack.stop()
    stems, _ = sf.read(io.BytesIO(result.content), dtype="float32", always_2d=True)
    return wall, stems.T.reshape(4, 2, -1)


def through_demucs(models: Path, track: np.ndarray) -> tuple[float, np.ndarray]:
    os.environ.update(TORCH_HOME=str(models / "torch"), HF_HOME=str(models / "huggingface"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from demucs.api import Separator

    api = Separator(model="htdemucs", device="cpu", shifts=0, overlap=0.25, progress=False)
    start = time.perf_counter()
    _, stems = api.separate_tensor(torch.from_numpy(track.copy()))
    wall = time.perf_counter() - start
    return wall, np.stack([s.numpy() for s in stems.values()])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--compile", default=None, help="COMPILE_MODELS for the predictor")
    args = parser.parse_args()
    track = song(args.seconds)
    buf = io.BytesIO()
    sf.write(buf, track.T, 44100, subtype="FLOAT", format="WAV")
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        settings = Settings(_env_file=None, models_dir=models)
        fx.install_published(settings, "htdemucs", [fx.htdemucs(fx.FOUR, 12, **fx.FULL)])
        extra = {"compile_models": args.compile} if args.compile else {}
        ours, ours_stems = through_service(models, Path(tmp) / "data", buf.getvalue(), extra)
        theirs, their_stems = through_demucs(models, track)
    # Demucs orders htdemucs' stems drums, bass, other, vocals; the job keeps the model's order.
    error = float(np.abs(ours_stems - their_stems).max() / np.abs(their_stems).max())
    print(f"{args.seconds:.0f} s of audio, torch threads {torch.get_num_threads()}")
    print(f"service, upload to downloaded result: {ours:.2f}s (RTF {ours / args.seconds:.3f})")
    print(f"demucs separate_tensor:               {theirs:.2f}s (RTF {theirs / args.seconds:.3f})")
    print(f"ratio service / demucs: {ours / theirs:.3f}   max|diff|/peak: {error:.2e}")


if __name__ == "__main__":
    main()
