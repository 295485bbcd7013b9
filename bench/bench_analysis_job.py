"""What the analysis adds to a job: a 60 s htdemucs job with analysis on against off.

    ./run.sh bench bench_analysis_job [--seconds 60] [--runs 2]

Writes a full-size htdemucs and a full-size AST (random weights, AudioSet's 527 labels) where
downloads would leave them, starts the six services once, and times jobs from upload to `done`
alternately with `analysis=false` and `analysis=true` (a different song each run: the result
cache would answer a repeat). Prints each run, the best of each, and their ratio.
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

from common.config import Settings  # noqa: E402
from test import separation_fixtures as fx  # noqa: E402
from test.astutil import write_tiny_ast  # noqa: E402
from test.songgen import make_song, mixture  # noqa: E402
from test.stackutil import start_stack, wait_job  # noqa: E402


def upload(seconds: float, seed: int) -> bytes:
    track = mixture(make_song(seconds=seconds, seed=seed))
    buf = io.BytesIO()
    sf.write(buf, track.T, 44100, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def one_job(client: httpx.Client, data: bytes, analysis: str) -> tuple[float, dict]:
    start = time.perf_counter()
    r = client.post(
        "/api/jobs",
        files={"file": ("song.wav", data)},
        data={"model": "htdemucs", "analysis": analysis},
    )
    r.raise_for_status()
    job = wait_job(client, r.json()["id"], timeout=3600)
    assert job["status"] == "done", job
    return time.perf_counter() - start, job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--tone-threads", type=int, default=0, help="TONE_THREADS (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        settings = Settings(_env_file=None, models_dir=models)
        fx.install_published(settings, "htdemucs", [fx.htdemucs(fx.FOUR, 12, **fx.FULL)])
        write_tiny_ast(models / "huggingface", full_size=True)
        stack = start_stack(Path(tmp) / "data", models, tone_threads=args.tone_threads)
        times: dict[str, list[float]] = {"false": [], "true": []}
        try:
            with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
                info = httpx.get(f"{stack.url('tone')}/info").json()
                assert info["loaded"], info
                one_job(client, upload(5.0, seed=99), "true")  # warm every path once
                seed = 0
                for run in range(args.runs):
                    for analysis in ("false", "true"):
                        seed += 1
                        wall, job = one_job(client, upload(args.seconds, seed), analysis)
                        times[analysis].append(wall)
                        print(f"run {run + 1} analysis={analysis}: {wall:.2f}s", flush=True)
                analysis_json = client.get(job["links"]["analysis"]).json()
        finally:
            stack.stop()
    off, on = min(times["false"]), min(times["true"])
    print(f"{args.seconds:.0f} s song, htdemucs (full size), AST (full size), best of {args.runs}")
    print(f"analysis=false: {off:.2f}s   analysis=true: {on:.2f}s   on/off: {on / off:.3f}")
    windows = analysis_json["windows"]
    labelled = sum(bool(w["tone"]) and w["tone"]["status"] == "ok" for w in windows)
    print(
        f"tone model: {analysis_json['tone_model']['status']}, {labelled} of {len(windows)} "
        f"windows labelled; job warnings: {job['warnings']}"
    )
    print(f"tempo {analysis_json['track']['tempo_bpm']}, key {analysis_json['track']['key']}")


if __name__ == "__main__":
    main()
