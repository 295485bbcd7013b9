"""Real-time factor of whole jobs through the six services (upload -> downloaded result).

    ./run.sh bench bench_pipeline [--seconds 30] [--model dsp] [--analysis false] [--runs 2]

Starts a stack on free loopback ports with an empty models dir (unless --models), submits a
generated song, polls, downloads the multi-channel result, and prints wall time / audio time.
Each run sends a different song (the same one would come back from the result cache); the
first includes the predictor's warm-up; the figure to quote is the best of the runs.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402

from test.songgen import make_song, mixture  # noqa: E402
from test.stackutil import start_stack, wait_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--model", default="dsp")
    parser.add_argument("--analysis", default="false")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--models", type=Path, default=None, help="models dir (default: empty)")
    args = parser.parse_args()

    def upload_for(run: int) -> bytes:
        # a different song each run: the same one would come back from the result cache
        buf = io.BytesIO()
        sf.write(buf, mixture(make_song(args.seconds, seed=run)).T, 44100, "PCM_16", format="WAV")
        return buf.getvalue()

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or Path(tmp) / "models"
        models.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        stack = start_stack(Path(tmp) / "data", models)
        print(f"stack healthy in {time.perf_counter() - t0:.1f}s")
        try:
            with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
                times = []
                for run in range(args.runs):
                    upload = upload_for(run)
                    start = time.perf_counter()
                    r = client.post(
                        "/api/jobs",
                        files={"file": ("bench.wav", upload)},
                        data={"model": args.model, "analysis": args.analysis},
                    )
                    r.raise_for_status()
                    accepted = time.perf_counter() - start
                    job = wait_job(client, r.json()["id"], timeout=3600)
                    assert job["status"] == "done", job
                    result = client.get(job["links"]["result"])
                    result.raise_for_status()
                    wall = time.perf_counter() - start
                    times.append(wall)
                    print(
                        f"run {run + 1}: {args.seconds:.0f} s of audio, model {job['model']}, "
                        f"analysis={args.analysis}: wall {wall:.2f}s (202 after {accepted:.2f}s), "
                        f"RTF {wall / args.seconds:.3f}"
                    )
                print(f"best RTF {min(times) / args.seconds:.3f}")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
