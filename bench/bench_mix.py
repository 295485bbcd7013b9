"""Figures of GET /api/jobs/{id}/mix's render (gateway/mixdown.py): seconds and memory per
minute of song, at one thread.

    .venv/bin/python bench/bench_mix.py [--seconds 60 180] [--repeats 2]
    ./run.sh bench bench_mix

A generated song's four stems (test/songgen.py) as a done job's result.wav; each case renders
the mix the route would, from result.wav to the file, in a child process of its own:
- `exact`: speed 1, 0 semitones, drums at -6 dB (the weighted sum, block by block), wav and mp3;
- `stretched`: speed 0.8 and +2 semitones (Rubber Band through pedalboard), wav and mp3.
Time: the best of `--repeats` renders per minute of song, as CPU time (steady on a shared
machine) and wall time. Memory: the child's peak RSS while rendering over its RSS before; the
cost per minute is the slope between the lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# One thread, as one gateway request gets; must be set before numpy loads its BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.jobfiles import JobFiles  # noqa: E402

JOB_ID = "benchmix01"
CASES = {
    "exact wav": {"fmt": "wav"},
    "exact mp3": {"fmt": "mp3"},
    "stretched wav": {"speed": 0.8, "semitones": 2.0, "fmt": "wav"},
    "stretched mp3": {"speed": 0.8, "semitones": 2.0, "fmt": "mp3"},
}


def write_job(folder: Path, seconds: float) -> None:
    """A done job's result.wav under `folder`: a generated song's four stems."""
    import numpy as np
    import soundfile as sf

    from common.constants import DSP_STEMS, SAMPLE_RATE
    from test.songgen import make_song

    files = JobFiles(folder / "jobs", JOB_ID)
    files.result_dir.mkdir(parents=True)
    song = make_song(seconds, seed=3)
    channels = np.concatenate([song[s] for s in DSP_STEMS]).T
    sf.write(files.result_path, channels, SAMPLE_RATE, subtype="FLOAT")


def child(folder: Path, seconds: float, case: str, repeats: int) -> dict:
    """One case in this process: best render seconds (wall, CPU), peak RSS growth in MB."""
    import pedalboard  # noqa: F401 - loaded before the baseline

    from common.constants import DSP_STEMS
    from gateway.mixdown import mix_options, render_mix
    from gateway.store import JobRecord

    stems = list(DSP_STEMS)
    files = JobFiles(folder / "jobs", JOB_ID)
    job = JobRecord(JOB_ID, "done", 0.0, 0.0, stems=stems, duration_s=seconds)
    options = mix_options(stems, gains="drums:-6", clip="rescale", **CASES[case])
    before = rss_mb()
    wall = cpu = float("inf")
    with PeakRss() as peak:
        for i in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            render_mix(files, job, options, folder / f"mix{i}")
            wall = min(wall, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
    return {"wall": wall, "cpu": cpu, "mb": peak.mb - before}


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The highest `rss_mb()` seen every 5 ms while the block runs (a thread samples it: the
    process's own high-water mark would include the imports' peak)."""

    def __enter__(self) -> PeakRss:
        self.mb = rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.mb = max(self.mb, rss_mb())

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.mb = max(self.mb, rss_mb())


def run_case(folder: Path, seconds: float, case: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--folder", str(folder)]
    cmd += ["--seconds", str(seconds), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0, 180.0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.folder, args.seconds[0], args.child, args.repeats)))
        return
    import pedalboard

    lengths = sorted(args.seconds)
    print(
        f"mix render, 4 stems, one thread, pedalboard {pedalboard.__version__}, best of "
        f"{args.repeats}; per minute of song: CPU s, wall s; peak RSS growth in MB"
    )
    head = "".join(f"{f'{s:.0f} s: cpu':>12s}{'wall':>7s}{'MB':>6s}" for s in lengths)
    print(f"  {'case':14s}{head}{'MB/min':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {s: Path(tmp) / f"{s:.0f}s" for s in lengths}
        for s, folder in folders.items():
            write_job(folder, s)
        for case in CASES:
            figures = [run_case(folders[s], s, case, args.repeats) for s in lengths]
            row = "".join(
                f"{f['cpu'] / (s / 60):12.2f}{f['wall'] / (s / 60):7.2f}{f['mb']:6.0f}"
                for s, f in zip(lengths, figures, strict=True)
            )
            slope = ""
            if len(lengths) > 1:
                mb = (figures[-1]["mb"] - figures[0]["mb"]) / ((lengths[-1] - lengths[0]) / 60)
                slope = f"{mb:8.1f}"
            print(f"  {case:14s}{row}{slope}")


if __name__ == "__main__":
    main()
