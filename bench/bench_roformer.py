"""A full-size 4-stem RoFormer's speed through the predictor's path, and that the job's fused
stems are MSST's `demix` on the same weights.

    ./run.sh bench bench_roformer [--seconds 20] [--config NAME] [--threads 0] [--no-reference]

Writes the architecture of a published MSST config at random weights where a download would
land (`<models>/roformer/`), as the registry name it belongs to: `mel_musdb18` the 4-stem
Mel-Band RoFormer (mel_band_roformer_musdb18, 58 M parameters, 8 s chunks), `bs_musdb18` the
4-stem BS-RoFormer (bs_roformer_musdb18, 132 M, 11 s chunks), `viperx` the 160 M-parameter
vocals BS-RoFormer, `musdb18_example` MSST's configs/config_musdb18_bs_roformer.yaml (a
training example, 3 s chunks) with its four stems as outputs; `karaoke`, `dereverb`, `denoise`
(one 228 M-parameter Mel-Band network, 8 s chunks) and `sw` (the 175 M-parameter 6-stem
BS-RoFormer, 13.4 s chunks) the published configs test/resources/roformer/ keeps. Loads it
through the registry, runs the job's chunks one window at a time through `separate_chunks` and
the fuser's files, and prints the predictor's separation time as a real-time factor of the
music and the process's peak resident memory (the full-size network's constant: its weights
and one chunk's forward); then (unless `--no-reference`) MSST's reference on the whole track
(the test's `msst_demix`) and max |diff| / peak between the two.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.config import Settings  # noqa: E402
from prediction.registry import ModelRegistry  # noqa: E402
from prediction.roformer_networks import read_config  # noqa: E402
from test.separation_fixtures import real_music, relative_error  # noqa: E402
from test.unit.prediction import test_roformer_separator as t  # noqa: E402

MUSDB18_4STEM = {  # its four instruments as the outputs: no target
    **t.MUSDB18_BS,
    "model": {**t.MUSDB18_BS["model"], "num_stems": 4},
    "training": {"instruments": ["vocals", "bass", "drums", "other"]},
}
CONFIGS = {  # --config: (registry name, config)
    "mel_musdb18": ("mel_band_roformer_musdb18", t.MEL_MUSDB18),
    "bs_musdb18": ("bs_roformer_musdb18", t.BS_MUSDB18),
    "viperx": ("bs_roformer_viperx", t.VIPERX_BS),
    "musdb18_example": ("bs_roformer_viperx", MUSDB18_4STEM),
}
PUBLISHED = Path(__file__).resolve().parent.parent / "test" / "resources" / "roformer"
CONFIGS |= {  # --config: (registry name, its published config)
    key: (name, read_config(PUBLISHED / file))
    for key, name, file in [
        (
            "karaoke",
            "mel_band_roformer_karaoke",
            "model_mel_band_roformer_karaoke_aufr33_viperx_sdr_10.1956.ckpt.yaml",
        ),
        ("dereverb", "mel_band_roformer_dereverb", "dereverb_mel_band_roformer_anvuew.yaml"),
        ("denoise", "mel_band_roformer_denoise", "model_mel_band_roformer_denoise.yaml"),
        ("sw", "bs_roformer_sw", "config_BandSplit-Roformer_SW_by-jarredou.yaml"),
    ]
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mel_musdb18")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--no-reference", action="store_true", help="skip MSST's demix")
    args = parser.parse_args()
    name, config = CONFIGS[args.config]
    track = real_music(args.seconds)
    if track is None:
        sys.exit("real test music (../shared/testdata) not found")
    track = np.ascontiguousarray(track[:, : int(args.seconds * 44100)])
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            models_dir=Path(tmp) / "models", device="cpu", torch_threads=args.threads
        )
        model = t.install(settings, name, config, seed=0)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        separator = ModelRegistry(settings).get(name)
        torch.set_num_threads(args.threads or torch.get_num_threads())
        start = time.perf_counter()
        ours = t.job_stems(separator, track, Path(tmp) / "job")
        job_s = time.perf_counter() - start
        if not args.no_reference:
            start = time.perf_counter()
            reference = t.reference_stems(model, track, config)
            reference_s = time.perf_counter() - start
    seconds = track.shape[1] / 44100
    print(f"config {args.config} ({name}): {params:.1f} M parameters, stems {separator.info.stems}")
    print(f"music: {seconds:.1f} s, torch threads {torch.get_num_threads()}")
    print(f"job path (separate_chunks + fuser): {job_s:.1f} s, RTF {job_s / seconds:.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory of this process: {peak:.0f} MB")
    if not args.no_reference:
        print(f"MSST demix reference: {reference_s:.1f} s, RTF {reference_s / seconds:.2f}")
        print(f"max |diff| / peak: {relative_error(ours, reference):.2e}")


if __name__ == "__main__":
    main()
