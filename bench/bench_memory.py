"""Peak memory of the predictor, the fuser and the gateway for a 1-minute and a 10-minute
song, next to Demucs' own `separate_tensor` on the same audio; and the disk a finished job keeps.

    ./run.sh bench bench_memory [--minutes 1 10] [--size small|full] [--no-demucs]
                                [--compile auto|on|off] [--model htdemucs|dsp|<RoFormer name>]
                                [--chain STEM>MODEL]

For each length: a fresh stack (so peaks are per song) with an htdemucs-architecture model at
random weights in its models dir, one job with `analysis=false`; then every stem is downloaded
as float WAV and as FLAC, and the ZIP (FLAC), so the gateway's peak covers the upload, the decode,
the job and the downloads; then the peak resident memory (VmHWM) of the predictor's, the
fuser's and the gateway's processes, and the bytes left under the job's directory over the size
of its stems as 32-bit float (frames x stems x 2 x 4 bytes; goal <= 1.3). Demucs runs in a child
process per length and reports its own peak (`--no-demucs` skips it). `--size small` (0.4 M
parameters, fast) shows how memory grows with length; `--size full` (42 M, ~0.5 real time on
2 cores) adds the real model's constant. `--model` a RoFormer name (mel_band_roformer_kj, …):
that model's published config narrowed as the unit tests run it (dim 16, depth 1, 1 s MSST
chunks), random weights in `<models>/roformer/`. `--chain vocals>dsp`: the job is chained (its
first stage's stem separated again; docs/models.md#chains).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402

from common.config import Settings  # noqa: E402
from test import separation_fixtures as fx  # noqa: E402
from test.songgen import make_song, mixture  # noqa: E402
from test.stackutil import start_stack, wait_job  # noqa: E402
from test.unit.prediction import test_roformer_separator as rt  # noqa: E402

ROFORMERS = {  # --model: the small network installed under that name
    "bs_roformer_viperx": rt.SMALL_BS,
    "mel_band_roformer_kj": rt.SMALL_MEL,
    "bs_roformer_musdb18": rt.SMALL_BS_4STEM,
    "mel_band_roformer_musdb18": rt.SMALL_MEL_4STEM,
}

DEMUCS_CHILD = """
import json, os, resource, sys
import numpy as np, soundfile as sf, torch
from demucs.api import Separator
wav, _ = sf.read(sys.argv[1], dtype="float32", always_2d=True)
api = Separator(model="htdemucs", device="cpu", shifts=0, overlap=0.25, progress=False)
api.separate_tensor(torch.from_numpy(np.ascontiguousarray(wav.T)))
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_mb(pid: int) -> float:
    """VmHWM of a process and its children, in MB."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--size", choices=["small", "full"], default="small")
    parser.add_argument("--no-demucs", action="store_true", help="skip Demucs' own run")
    parser.add_argument("--compile", default=None, help="COMPILE_MODELS for the predictor")
    parser.add_argument("--model", default="htdemucs", help="the job's model (dsp: no weights)")
    parser.add_argument("--chain", default="", help="the job's chain, e.g. vocals>dsp")
    args = parser.parse_args()
    arch = fx.SMALL if args.size == "small" else fx.FULL
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        settings = Settings(_env_file=None, models_dir=models)
        fx.install_published(settings, "htdemucs", [fx.htdemucs(fx.FOUR, 3, **arch)])
        if args.model in ROFORMERS:
            rt.install(settings, args.model, ROFORMERS[args.model], seed=3)
        env = {"TORCH_HOME": str(models / "torch"), "HF_HOME": str(models / "hf")}
        for minutes in args.minutes:
            song = Path(tmp) / f"song{minutes}.wav"
            mix = mixture(make_song(seconds=minutes * 60, seed=int(minutes)))
            sf.write(song, mix.T, 44100, subtype="PCM_16")
            extra = {"compile_models": args.compile} if args.compile else {}
            stack = start_stack(Path(tmp) / f"data{minutes}", models, **extra)
            try:
                with httpx.Client(base_url=stack.url("gateway"), timeout=600) as client:
                    r = client.post(
                        "/api/jobs",
                        files={"file": (song.name, song.read_bytes())},
                        data={"model": args.model, "analysis": "false", "chain": args.chain},
                    )
                    r.raise_for_status()
                    phases = [peak_mb(stack.procs["gateway"].pid)]  # upload and decode
                    job = wait_job(client, r.json()["id"], timeout=7200)
                    assert job["status"] == "done", job
                    phases.append(peak_mb(stack.procs["gateway"].pid))  # the job's run
                    download_everything(client, job)
                predictor = peak_mb(stack.procs["predictor"].pid)
                fuser = peak_mb(stack.procs["fuser"].pid)
                gateway = peak_mb(stack.procs["gateway"].pid)
                disk = disk_ratio(stack.settings.jobs_dir / job["id"], job)
            finally:
                stack.stop()
            demucs = float("nan") if args.no_demucs else demucs_peak_mb(song, env)
            rows.append((minutes, predictor, fuser, gateway, demucs))
            print(
                f"{minutes:4.0f} min: predictor {predictor:7.0f} MB  fuser {fuser:6.0f} MB  "
                f"gateway {gateway:6.0f} MB  | demucs separate_tensor {demucs:7.0f} MB  | "
                f"disk left {disk:.3f}x the float stems\n"
                f"        gateway's peak at the 202 {phases[0]:.0f} MB, "
                f"when done {phases[1]:.0f} MB, after the downloads {gateway:.0f} MB",
                flush=True,
            )
    if len(rows) >= 2:
        (m0, p0, f0, g0, d0), (m1, p1, f1, g1, d1) = rows[0], rows[-1]
        print(
            f"{m1:.0f} min vs {m0:.0f} min ({args.size} model): predictor {p1 / p0 - 1:+.1%}, "
            f"fuser {f1 / f0 - 1:+.1%}, gateway {g1 / g0 - 1:+.1%}, demucs {d1 / d0 - 1:+.1%}"
        )


def download_everything(client: httpx.Client, job: dict) -> None:
    """Every stem as float WAV and FLAC, and the ZIP, read to the end and dropped."""
    urls = [(u, {"format": f}) for u in job["links"]["stems"].values() for f in ("wav", "flac")]
    for url, params in [*urls, (job["links"]["zip"], {})]:
        with client.stream("GET", url, params=params) as response:
            response.raise_for_status()
            for _ in response.iter_bytes():
                pass


def disk_ratio(job_dir: Path, job: dict) -> float:
    """Bytes under the job's directory over its stems as 32-bit float."""
    kept = sum(p.stat().st_size for p in job_dir.rglob("*") if p.is_file())
    frames = round(job["duration_s"] * 44100)
    return kept / (frames * len(job["stems"]) * 2 * 4)


def demucs_peak_mb(song: Path, env: dict[str, str]) -> float:
    child = subprocess.run(
        [sys.executable, "-c", DEMUCS_CHILD, str(song)],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])["peak_mb"]


if __name__ == "__main__":
    main()
