"""Progressive results and fairness, measured through the six services (issue 12, 4 (a) and (b)).

    nice -n 10 .venv/bin/python bench/bench_progressive.py [--part a|b|all] [--models dsp,htdemucs]

(a) A 3-minute song (`--song-s`), full-size htdemucs at random weights written where a download
    would leave them, `analysis=false`: seconds from the 202 to the job's `ready_s >= 30` (the
    first 30 s final and served), over seconds from the 202 to `done`.
(b) Per model: a 30 s job (`--short-s`) alone on an idle stack, then the same job sent 5 s after
    a 10-minute job (`--long-s`): its seconds to `done` with the long job running, over alone.
    The long job is not waited for (the stack is stopped once the short one is done).

Songs are generated (test/songgen.py). Each part starts its own stack of real processes on
loopback ports with the project's default settings (JOB_CONCURRENCY 2, CHUNK_CONCURRENCY 2).
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
from gateway.stack import Stack  # noqa: E402
from test import separation_fixtures as fx  # noqa: E402
from test.songgen import make_song, mixture  # noqa: E402
from test.stackutil import stack_settings  # noqa: E402

POLL_S = 0.1
HEALTHY_TIMEOUT_S = 900  # a compiling predictor on a busy machine takes minutes to be healthy


def start_stack(data: Path, models: Path, **extra) -> Stack:
    settings, env = stack_settings(data, models, **extra)
    stack = Stack(settings, env)
    stack.start()
    try:
        stack.wait_healthy(timeout=HEALTHY_TIMEOUT_S)
    except BaseException:
        stack.stop()
        raise
    return stack


def song_bytes(seconds: float, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, mixture(make_song(seconds=seconds, seed=seed)).T, 44100, "PCM_16", format="WAV")
    return buf.getvalue()


def submit(client: httpx.Client, data: bytes, model: str) -> tuple[str, float]:
    """(job id, time of the 202)."""
    r = client.post(
        "/api/jobs",
        files={"file": ("song.wav", data)},
        data={"model": model, "analysis": "false"},
    )
    r.raise_for_status()
    return r.json()["id"], time.perf_counter()


def watch(client: httpx.Client, job_id: str, ready_s: float | None = None) -> dict:
    """Poll until done: {'done': t, 'ready': t of the first poll seeing ready_s >= the goal}."""
    seen: dict = {}
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        now = time.perf_counter()
        if ready_s is not None and "ready" not in seen and job["ready_s"] >= ready_s:
            seen["ready"] = now
            r = client.get(f"/api/jobs/{job_id}/result")  # what a player would fetch
            seen["ready_http"] = r.status_code
            seen["ready_header_s"] = float(r.headers.get("X-Audiosplit-Ready-S", "nan"))
        if job["status"] == "done":
            seen["done"] = now
            return seen
        if job["status"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job['error']}")
        time.sleep(POLL_S)


def models_dir(tmp: Path, need_htdemucs: bool) -> Path:
    models = tmp / "models"
    models.mkdir(parents=True, exist_ok=True)
    if need_htdemucs:
        settings = Settings(_env_file=None, models_dir=models)
        fx.install_published(settings, "htdemucs", [fx.htdemucs(fx.FOUR, 12, **fx.FULL)])
    return models


def part_a(tmp: Path, seconds: float, extra: dict) -> None:
    data = song_bytes(seconds, seed=31)
    stack = start_stack(tmp / "data_a", models_dir(tmp, True), **extra)
    try:
        with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
            job_id, t0 = submit(client, data, "htdemucs")
            seen = watch(client, job_id, ready_s=30.0)
    finally:
        stack.stop()
    to_ready, to_done = seen["ready"] - t0, seen["done"] - t0
    print(
        f"(a) htdemucs full size, {seconds:.0f} s song, analysis=false: 202 -> ready_s >= 30 "
        f"in {to_ready:.1f} s (GET /result then: HTTP {seen['ready_http']}, "
        f"{seen['ready_header_s']:.1f} s final), 202 -> done in {to_done:.1f} s: "
        f"ratio {to_ready / to_done:.3f}",
        flush=True,
    )


def part_b(tmp: Path, model: str, short_s: float, long_s: float, extra: dict) -> None:
    short, long = song_bytes(short_s, seed=41), song_bytes(long_s, seed=42)
    stack = start_stack(tmp / f"data_b_{model}", models_dir(tmp, model != "dsp"), **extra)
    try:
        with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
            job_id, t0 = submit(client, short, model)
            alone = watch(client, job_id)["done"] - t0
            client.delete(f"/api/jobs/{job_id}")  # else the same song is a cached result
            long_id, t_long = submit(client, long, model)
            time.sleep(max(0.0, 5.0 - (time.perf_counter() - t_long)))
            job_id, t0 = submit(client, short, model)
            beside = watch(client, job_id)["done"] - t0
            progress = client.get(f"/api/jobs/{long_id}").json()["progress"]
    finally:
        stack.stop()
    print(
        f"(b) {model}: {short_s:.0f} s job alone {alone:.1f} s; sent 5 s after a "
        f"{long_s:.0f} s job: {beside:.1f} s (the long job at progress {progress:.2f} then): "
        f"ratio {beside / alone:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--models", default="dsp,htdemucs", help="for (b)")
    parser.add_argument("--song-s", type=float, default=180.0, help="(a)'s song")
    parser.add_argument("--short-s", type=float, default=30.0)
    parser.add_argument("--long-s", type=float, default=600.0)
    parser.add_argument("--compile", default=None, help="COMPILE_MODELS for the predictor")
    args = parser.parse_args()
    extra = {"compile_models": args.compile} if args.compile else {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("a", "all"):
            part_a(Path(tmp), args.song_s, extra)
        if args.part in ("b", "all"):
            for model in args.models.split(","):
                part_b(Path(tmp), model, args.short_s, args.long_s, extra)


if __name__ == "__main__":
    main()
