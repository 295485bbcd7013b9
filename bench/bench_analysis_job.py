"""What the analysis adds to a job: a 60 s htdemucs job with analysis on against off.

    ./run.sh bench bench_analysis_job [--seconds 60] [--runs 2] [--no-ast]

Writes a full-size htdemucs and a full-size AST (random weights, AudioSet's 527 labels) where
downloads would leave them (`--no-ast`: no AST, so the windows go unlabelled), starts the six
services once, and times jobs from upload to `done` in turn with analysis off, analysis on with
`midi=false`, and everything on (a different song each run: the result cache would answer a
repeat). Prints each run, the best of each, and their ratios to analysis off.
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


MODES = {"off": ("false", "false"), "analysis": ("true", "false"), "all": ("true", "true")}


def one_job(client: httpx.Client, data: bytes, mode: str) -> tuple[float, dict]:
    analysis, midi = MODES[mode]
    start = time.perf_counter()
    r = client.post(
        "/api/jobs",
        files={"file": ("song.wav", data)},
        data={"model": "htdemucs", "analysis": analysis, "midi": midi},
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
    parser.add_argument("--no-ast", action="store_true", help="no AST weights: no labels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        settings = Settings(_env_file=None, models_dir=models)
        fx.install_published(settings, "htdemucs", [fx.htdemucs(fx.FOUR, 12, **fx.FULL)])
        if not args.no_ast:
            write_tiny_ast(models / "huggingface", full_size=True)
        stack = start_stack(Path(tmp) / "data", models, tone_threads=args.tone_threads)
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
                info = httpx.get(f"{stack.url('tone')}/info").json()
                assert info["loaded"] != args.no_ast, info
                one_job(client, upload(5.0, seed=99), "all")  # warm every path once
                seed = 0
                for run in range(args.runs):
                    for mode in MODES:
                        seed += 1
                        wall, job = one_job(client, upload(args.seconds, seed), mode)
                        times[mode].append(wall)
                        print(f"run {run + 1} {mode}: {wall:.2f}s", flush=True)
                analysis_json = client.get(job["links"]["analysis"]).json()
        finally:
            stack.stop()
    best = {mode: min(t) for mode, t in times.items()}
    ast = "no AST" if args.no_ast else "AST (full size)"
    print(f"{args.seconds:.0f} s song, htdemucs (full size), {ast}, best of {args.runs}")
    print(
        f"analysis off: {best['off']:.2f}s   analysis, midi=false: {best['analysis']:.2f}s "
        f"({best['analysis'] / best['off']:.3f}x)   everything on: {best['all']:.2f}s "
        f"({best['all'] / best['off']:.3f}x)"
    )
    windows = analysis_json["windows"]
    labelled = sum(bool(w["tone"]) and w["tone"]["status"] == "ok" for w in windows)
    print(
        f"tone model: {analysis_json['tone_model']['status']}, {labelled} of {len(windows)} "
        f"windows labelled; job warnings: {job['warnings']}"
    )
    track = analysis_json["track"]
    print(f"tempo {track['tempo_bpm']}, key {track['key']}, sources {track.get('sources')}")


if __name__ == "__main__":
    main()
