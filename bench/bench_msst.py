"""A full-size MSST network's speed (MDX23C DrumSep, SCNet XL IHF) through the predictor's path,
and that the job's fused stems are MSST's own `demix` on the same weights.

    ./run.sh bench bench_msst [--model mdx23c_drumsep] [--seconds 30] [--threads 2]
                              [--no-reference]

Writes the network of the published config (test/resources/msst/) at random weights where a
download of the registry name would land (`<models>/<architecture>/`), loads it through the
registry, runs the job's chunks one window at a time through `separate_chunks` and the fuser's
files, and prints the time of one network forward on one chunk (and the RTF it makes on a song
at the config's overlap), the predictor's separation time as a real-time factor of the music,
and the process's peak resident memory, each as it is measured; then (unless
`--no-reference`) `msst.utils.model_utils.demix` on the whole track and max |diff| / peak
between the two.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.config import Settings  # noqa: E402
from prediction.msst_separator import CHECKPOINTS  # noqa: E402
from prediction.registry import ModelRegistry  # noqa: E402
from test.separation_fixtures import real_music, relative_error  # noqa: E402
from test.unit.prediction import test_msst_separator as t  # noqa: E402

CONFIGS = {"mdx23c_drumsep": t.DRUMSEP, "scnet_xl_ihf": t.SCNET_XL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="mdx23c_drumsep")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-reference", action="store_true", help="skip MSST's demix")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", "A window was not provided")  # SCNet's STFT, as published
    name, config = args.model, CONFIGS[args.model]
    track = real_music(args.seconds)
    if track is None:
        sys.exit("real test music (../shared/testdata) not found")
    track = np.ascontiguousarray(track[:, : int(args.seconds * 44100)])
    torch.set_num_threads(args.threads)
    seconds = track.shape[1] / 44100
    print(f"music: {seconds:.1f} s, torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            models_dir=Path(tmp) / "models", device="cpu", torch_threads=args.threads
        )
        model = t.install(settings, name, config, seed=0)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        separator = ModelRegistry(settings).get(name)
        inference = separator.inference
        architecture = CHECKPOINTS[name].architecture
        print(f"{name} ({architecture}): {params:.2f} M parameters, stems {separator.info.stems}")
        chunk = torch.from_numpy(track[None, :, : inference.chunk].copy())
        start = time.perf_counter()
        with torch.no_grad():
            separator.model(chunk)
        forward_s = time.perf_counter() - start
        # MSST's demix runs each stretch of a song num_overlap times, one chunk at a time
        steady = forward_s * inference.num_overlap / (inference.chunk / 44100)
        print(
            f"one forward on one {inference.chunk / 44100:.2f} s chunk: {forward_s:.1f} s "
            f"(a song's RTF at {inference.num_overlap} x overlap: about {steady:.1f})",
            flush=True,
        )
        start = time.perf_counter()
        ours = t.job_stems(separator, track, Path(tmp) / "job")
        job_s = time.perf_counter() - start
        print(f"job path (separate_chunks + fuser): {job_s:.1f} s, RTF {job_s / seconds:.2f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak resident memory of this process: {peak:.0f} MB", flush=True)
        if not args.no_reference:
            start = time.perf_counter()
            reference = t.msst_stems(model, track, config, name)
            reference_s = time.perf_counter() - start
            print(f"MSST demix reference: {reference_s:.1f} s, RTF {reference_s / seconds:.2f}")
            print(f"max |diff| / peak: {relative_error(ours, reference):.2e}")


if __name__ == "__main__":
    main()
