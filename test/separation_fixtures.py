"""Shared by the separator tests and benches: real music, random-weight Demucs models written
where a download would leave them, and the job's chunked path (standardise, cut, separate, fuse).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import soundfile as sf
import torch
from demucs.htdemucs import HTDemucs
from demucs.states import get_state

from common.chunks import (
    MAX_SHIFT,
    center_trim,
    chunk_window,
    overlap_add,
    plan_chunks,
    plan_passes,
    standardisation,
)
from common.config import REPO_ROOT, Settings
from common.interfaces import FuseJob
from prediction.demucs_separator import legacy_files
from prediction.fusion import JobAccumulator
from prediction.separator import Separator

TESTDATA = REPO_ROOT.parent / "shared" / "testdata"
MUSIC = [
    TESTDATA / "stems" / "falcon69" / "mixture.flac",
    TESTDATA / "tricky" / "fmt_spleeter_44k_s16_stereo.wav",
]
FOUR = ["drums", "bass", "other", "vocals"]
SIX = [*FOUR, "guitar", "piano"]
SMALL = {"channels": 8, "depth": 4, "t_layers": 1}  # the real architecture, ~0.4 M parameters
# htdemucs as released (42 M parameters): the mmi grid's settings at 7.8 s.
FULL = {"channels": 48, "depth": 4, "t_layers": 5, "dconv_mode": 3, "bottom_channels": 512}
TOLERANCE = 1e-4  # max |diff| / peak


def real_music(min_seconds: float = 20.0) -> np.ndarray | None:
    """(2, n) float32: ≥ `min_seconds` of real music (two recordings, repeated); None when the
    shared test data is absent."""
    if not all(p.is_file() for p in MUSIC):
        return None
    parts = [sf.read(p, dtype="float32", always_2d=True)[0].T for p in MUSIC]
    track = np.concatenate(parts, axis=1)
    while track.shape[1] < min_seconds * 44100:
        track = np.concatenate([track, parts[0]], axis=1)
    return np.ascontiguousarray(track)


def htdemucs(sources: list[str], seed: int, **kwargs) -> HTDemucs:
    torch.manual_seed(seed)
    return HTDemucs(sources=sources, segment=Fraction(39, 5), **kwargs).eval()


def package(model: torch.nn.Module) -> dict:
    """The dict Demucs' released `.th` files hold (`demucs.states.serialize_model`'s, without
    the training args, which need omegaconf); weights in half precision as released."""
    args, kwargs = model._init_args_kwargs
    return {
        "klass": type(model),
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=True),
        "training_args": {},
    }


def install_published(settings: Settings, name: str, models: list[torch.nn.Module]) -> None:
    """Write `models` where Demucs' legacy download of `name` puts its files."""
    checkpoints = Path(settings.models_dir) / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    files = legacy_files(name)
    assert len(files) == len(models)
    for model, file in zip(models, files, strict=True):
        torch.save(package(model), checkpoints / file)


# --- the job's side: standardise, cut, separate, fuse -----------------------------------------


def separate_in_chunks(separator: Separator, track: np.ndarray) -> np.ndarray:
    """(2, n) -> (n_stems, 2, n) as a job does it, one window per request: whole-track
    standardisation, windows of the plan, centre trim, overlap-add, standardisation undone."""
    norm = standardisation(track)
    info = separator.info
    plan = plan_chunks(track.shape[1], info.segment, info.overlap, separator.padded_length)
    pieces = []
    for chunk in plan.chunks:
        out = separator.separate(chunk_window(track, chunk, norm)[None])[0]
        pieces.append((chunk, center_trim(out, chunk.length)))
    fused = overlap_add(pieces, plan, (len(info.stems), 2))
    fused *= np.float32(norm.std)
    fused += np.float32(norm.mean)
    return fused


def separate_in_passes(
    separator: Separator, track: np.ndarray, shifts: int, seed: int, workdir: Path
) -> tuple[np.ndarray, list[int]]:
    """(2, n) -> (n_stems, 2, n) as a job with `shifts` does it: the predictor's plans (a bag's
    members each on passes of their own), one window per request through `separate_chunks`,
    and the fuser's own code from its chunk files to its result WAV. Also the random offsets
    the plans drew, in the order `apply_model` draws them (see `demucs_reference`)."""
    norm = standardisation(track)
    info = separator.info
    plans = plan_passes(
        track.shape[1],
        info.segment,
        info.overlap,
        separator.padded_length,
        shifts=shifts,
        seed=seed,
        members=separator.member_weights(),
    )
    job = FuseJob(job_id="passes", plans=plans, model_stems=info.stems, norm=norm, out_key="out")
    fuser = JobAccumulator(workdir / "fuser", job.job_id)
    fuser.create(job)
    for plan in plans:
        for chunk in plan.chunks:
            window = chunk_window(track, chunk, norm, lead=plan.lead)[None]
            stems, _ = separator.separate_chunks(window, [chunk])
            fuser.add_chunk(chunk, center_trim(stems[0], chunk.length))
    multi, _ = sf.read(
        fuser.store.local_path(fuser.finalize().result_key), dtype="float32", always_2d=True
    )
    offsets = [MAX_SHIFT - plan.lead for plan in plans]
    return multi.T.reshape(len(info.stems), 2, -1), offsets


@contextmanager
def demucs_drawing(offsets: list[int]) -> Iterator[None]:
    """Demucs' `apply_model` takes its random shift offsets from `offsets`, in order, and must
    take them all. (Its own draws from the global `random` interleave with its transformer's
    calls to `random.randrange`, so no seed reproduces them outside Demucs.)"""
    import demucs.apply

    queue = list(offsets)

    def randint(low: int, high: int) -> int:
        assert (low, high) == (0, MAX_SHIFT), (low, high)
        assert queue, f"Demucs drew more than the {len(offsets)} planned offsets"
        return queue.pop(0)

    saved = demucs.apply.random
    demucs.apply.random = SimpleNamespace(randint=randint)
    try:
        yield
    finally:
        demucs.apply.random = saved
    assert not queue, f"Demucs drew {len(offsets) - len(queue)} of {len(offsets)} offsets"


def demucs_reference(
    track: np.ndarray,
    name: str,
    repo: Path | None = None,
    shifts: int = 0,
    offsets: list[int] | None = None,
) -> np.ndarray:
    """(n_stems, 2, n) from Demucs' own front end, loading `name` itself; with `shifts`, the
    random shift offsets taken from `offsets` (see `demucs_drawing`)."""
    from demucs.api import Separator as DemucsApi

    api = DemucsApi(
        model=name, repo=repo, device="cpu", shifts=shifts, overlap=0.25, progress=False
    )
    with demucs_drawing(offsets or []):
        _, stems = api.separate_tensor(torch.from_numpy(track))
    return np.stack([s.numpy() for s in stems.values()])


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / np.abs(reference).max())
