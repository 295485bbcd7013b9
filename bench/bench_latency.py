"""Gateway latency under load: submitting a 10 MB upload, and polling a job's status with 100
concurrent clients while the job separates.

    ./run.sh bench bench_latency [--runs 3] [--pollers 100] [--upload-mb 10] [--model dsp]

Starts a stack on free loopback ports with an empty models dir (unless --models). Each run
generates a different song as a 16-bit WAV of --upload-mb MB (the same song would come back
from the result cache, born done), times `POST /api/jobs` until its 202 (upload streamed to
disk, decoded, checked, stored), then lets --pollers asyncio clients poll `GET /api/jobs/{id}`
back to back until the job is done, and prints the latency percentiles of those polls. The
pollers run in this process on the same cores as the stack, so the figures include the client.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from test.songgen import make_song, mixture  # noqa: E402
from test.stackutil import start_stack  # noqa: E402

WAV_HEADER_BYTES = 44
PCM16_FRAME_BYTES = 4  # stereo, 2 bytes a sample


def upload_of(megabytes: float, seed: int) -> bytes:
    """A generated song as a 16-bit stereo WAV of about `megabytes` MB (10^6 bytes)."""
    frames = int((megabytes * 1e6 - WAV_HEADER_BYTES) / PCM16_FRAME_BYTES)
    buf = io.BytesIO()
    sf.write(buf, mixture(make_song(frames / 44100, seed=seed)).T, 44100, "PCM_16", format="WAV")
    return buf.getvalue()


async def poll(url: str, job_id: str, pollers: int, max_s: float, until_done: bool) -> dict:
    """`pollers` clients GET the job back to back, for `max_s` seconds or (`until_done`) until
    one of them sees it end; their latencies in seconds.

    Each poller has its own client and connection, as separate users would: one shared
    `httpx.AsyncClient` with 100 requests in flight measured ~100 polls/s with a p99 of ~4 s on
    this machine against ~1400/s and ~0.1 s for 100 clients, so it would time its own pool.
    """
    latencies: list[float] = []
    errors = 0
    finished = asyncio.Event()
    final: dict = {}
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for _ in range(pollers)]
    try:
        await asyncio.gather(*(c.get("/health") for c in clients))  # connect before timing

        async def poller(client: httpx.AsyncClient) -> None:
            nonlocal errors
            while not finished.is_set():
                start = time.perf_counter()
                try:
                    r = await client.get(f"/api/jobs/{job_id}")
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors += 1
                elif until_done and r.json()["status"] in ("done", "failed"):
                    final.update(r.json())
                    finished.set()

        started = time.perf_counter()
        tasks = [asyncio.create_task(poller(c)) for c in clients]
        try:
            await asyncio.wait_for(finished.wait(), timeout=max_s)
        except TimeoutError:
            finished.set()
        await asyncio.gather(*tasks)
        window = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {"latencies": np.array(latencies), "errors": errors, "window": window, "job": final}


def describe(polled: dict, pollers: int) -> tuple[str, float, float]:
    lat = polled["latencies"] * 1000
    p50, p99 = np.percentile(lat, [50, 99])
    text = (
        f"{pollers} pollers, {lat.size} polls in {polled['window']:.1f}s "
        f"({lat.size / polled['window']:.0f}/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {lat.max():.1f} ms, errors {polled['errors']}"
    )
    return text, p50, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=100)
    parser.add_argument("--upload-mb", type=float, default=10.0)
    parser.add_argument("--model", default="dsp")
    parser.add_argument("--analysis", default="true")
    parser.add_argument("--max-poll-s", type=float, default=600.0)
    parser.add_argument("--models", type=Path, default=None, help="models dir (default: empty)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or Path(tmp) / "models"
        models.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        stack = start_stack(Path(tmp) / "data", models)
        url = stack.url("gateway")
        print(f"stack healthy in {time.perf_counter() - t0:.1f}s")
        submits, p50s, p99s = [], [], []
        try:
            with httpx.Client(base_url=url, timeout=600) as client:
                for run in range(args.runs):
                    upload = upload_of(args.upload_mb, seed=1000 + run)
                    start = time.perf_counter()
                    r = client.post(
                        "/api/jobs",
                        files={"file": ("bench.wav", upload)},
                        data={"model": args.model, "analysis": args.analysis},
                    )
                    submit = time.perf_counter() - start
                    r.raise_for_status()
                    job = r.json()
                    polled = asyncio.run(
                        poll(url, job["id"], args.pollers, args.max_poll_s, until_done=True)
                    )
                    text, p50, p99 = describe(polled, args.pollers)
                    submits.append(submit)
                    p50s.append(p50)
                    p99s.append(p99)
                    print(
                        f"run {run + 1}: submit {len(upload) / 1e6:.1f} MB "
                        f"({job['duration_s']:.0f} s of audio) -> 202 in {submit * 1000:.0f} ms; "
                        f"while it separates ({polled['job'].get('status', 'unfinished')} "
                        f"after {polled['window']:.1f}s): {text}"
                    )
                idle = asyncio.run(poll(url, job["id"], args.pollers, 3.0, until_done=False))
                print(f"idle stack (the last job done): {describe(idle, args.pollers)[0]}")
            print(
                f"submit ({args.upload_mb:.0f} MB) median {np.median(submits) * 1000:.0f} ms, "
                f"best {min(submits) * 1000:.0f} ms; status poll with {args.pollers} pollers: "
                f"p50 median {np.median(p50s):.1f} ms, p99 median {np.median(p99s):.1f} ms"
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
