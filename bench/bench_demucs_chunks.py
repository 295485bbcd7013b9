"""Chunked separation through `common.chunks` against the libraries' own front ends.

    .venv/bin/python bench/bench_demucs_chunks.py [--families small,6s,bag,full,umx]
        [--seconds 20] [--threads 2]

Per family, a real architecture with random weights is written where a download would leave it
and loaded by the predictor's own code. Demucs families print max |diff| / peak of the fused
chunks (standardised, cut, separated one window at a time, centre-trimmed, overlap-added,
unstandardised: what a job does) against `demucs.api.Separator(shifts=0).separate_tensor`, and
the wall time of both. `umx` prints the SDR of chunked against whole-track Open-Unmix per stem.
Needs the shared test music (`../shared/testdata`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from common.config import Settings  # noqa: E402
from test import separation_fixtures as dm  # noqa: E402
from test.unit.prediction import test_umx_separator as um  # noqa: E402

FAMILIES = ("small", "6s", "bag", "full", "umx")


def offline_models_dir(models: Path, threads: int) -> Settings:
    """Point the hub caches at `models`, offline, as the tests do."""
    import huggingface_hub.constants as hf

    os.environ.update(
        TORCH_HOME=str(models / "torch"), HF_HOME=str(models / "huggingface"), HF_HUB_OFFLINE="1"
    )
    hf.HF_HUB_OFFLINE, hf.HF_HUB_CACHE = True, str(models / "huggingface" / "hub")
    return Settings(models_dir=models, device="cpu", torch_threads=threads)


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def bench_demucs(family: str, settings: Settings, music: np.ndarray, tmp: Path) -> None:
    from prediction import demucs_separator
    from prediction.demucs_separator import DemucsSeparator

    repo = None
    if family == "small":
        name, models = "htdemucs", [dm.htdemucs(dm.FOUR, 10, **dm.SMALL)]
    elif family == "full":
        name, models = "htdemucs", [dm.htdemucs(dm.FOUR, 12, **dm.FULL)]
    elif family == "6s":
        name, models = "htdemucs_6s", [dm.htdemucs(dm.SIX, 11, **dm.SMALL)]
    else:
        from demucs.pretrained import get_model
        from demucs.states import save_with_checksum

        name, repo = "mybag", tmp / "repo"
        repo.mkdir(exist_ok=True)
        for sig, seed in (("aaaa0001", 20), ("bbbb0002", 21)):
            model = dm.htdemucs(dm.FOUR, seed, **dm.SMALL)
            save_with_checksum(dm.package(model), repo / f"{sig}.th")
        weights = [[1.0, 0.5, 0.25, 0.0], [0.5, 1.0, 0.75, 2.0]]
        bag = {"models": ["aaaa0001", "bbbb0002"], "weights": weights}
        (repo / "mybag.yaml").write_text(yaml.safe_dump(bag))
    if repo is None:
        dm.install_published(settings, name, models)
        separator = demucs_separator.load(name, settings)
    else:
        separator = DemucsSeparator(name, get_model(name, repo=repo))
    params = sum(p.numel() for m in separator.models for p in m.parameters())
    ours, t_ours = timed(dm.separate_in_chunks, separator, music)
    reference, t_ref = timed(dm.demucs_reference, music, name, repo)
    error = dm.relative_error(ours, reference)
    print(
        f"{family:6s} {name:12s} {params / 1e6:6.2f}M params  max|diff|/peak {error:.2e}  "
        f"chunked {t_ours:6.1f}s  separate_tensor {t_ref:6.1f}s"
    )


def bench_umx(settings: Settings, music: np.ndarray) -> None:
    from prediction import umx_separator

    um.install_umxhq(settings, seed=7)
    separator = umx_separator.load("umxhq", settings)
    reference, t_ref = timed(um.whole_track, separator, music)
    chunked, t_ours = timed(um.separate_in_chunks, separator, music)
    sdrs = "  ".join(
        f"{s} {um.sdr_db(reference[k], chunked[k]):.1f} dB"
        for k, s in enumerate(separator.info.stems)
    )
    print(
        f"umx    umxhq        chunked vs whole track: {sdrs}  "
        f"chunked {t_ours:6.1f}s  whole {t_ref:6.1f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    families = args.families.split(",")
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    music = dm.real_music(args.seconds)
    if music is None:
        sys.exit(f"the shared test music is missing under {dm.TESTDATA}")
    torch.set_num_threads(args.threads)
    print(f"{music.shape[1] / 44100:.1f} s of real music, {args.threads} torch thread(s), cpu")
    for family in families:
        with tempfile.TemporaryDirectory() as tmp:
            settings = offline_models_dir(Path(tmp) / "models", args.threads)
            if family == "umx":
                bench_umx(settings, music)
            else:
                bench_demucs(family, settings, music, Path(tmp))


if __name__ == "__main__":
    main()
