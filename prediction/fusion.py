"""On-disk accumulation and block-wise fusing of predicted chunks.

Each chunk's stems are stored as their own file (written to a temporary name, then renamed), so
a retried chunk replaces itself instead of being added twice, and a crash never leaves half a
chunk behind. Finalizing walks the track in blocks: for each block it adds the weighted pieces of
the chunks that cover it, in chunk order (the order Demucs adds them, so the float sums agree),
divides by the weight sum, undoes the input standardisation and writes the block to the output
files. Memory stays flat in song length.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from common.analysis_plan import window_bounds
from common.chunks import triangle_weight
from common.constants import SAMPLE_RATE
from common.errors import BadRequest, Conflict, NotFound, StorageError
from common.interfaces import ChunkSpec, EnsembleJob, FusedResult, FuseJob, FuseStatus
from common.rawfile import RawArrayFile
from prediction.ensemble_math import combine

BLOCK_FRAMES = 1 << 18  # ~6 s per block: bounded memory whatever the song length


def output_stems(job: FuseJob) -> list[str]:
    """Stem names in channel order: all model stems, or [stem, no_stem]."""
    if job.stem is None:
        return list(job.model_stems)
    return [job.stem, f"no_{job.stem}"]


class JobAccumulator:
    """The fuser's files for one job under `root/<job_id>/`."""

    def __init__(self, root: Path, job_id: str):
        self.dir = root / job_id
        self.job_id = job_id

    @property
    def spec_path(self) -> Path:
        return self.dir / "job.json"

    def create(self, job: FuseJob) -> None:
        """Record the job; a second identical PUT is fine, a different one is a conflict."""
        if job.stem is not None and job.stem not in job.model_stems:
            raise BadRequest(f"stem {job.stem!r} is not one of {job.model_stems}")
        check_pass_weights(job)
        if self.spec_path.exists():
            if self.load() != job:
                raise Conflict(f"job {self.job_id} already exists with another plan")
            return
        try:
            (self.dir / "chunks").mkdir(parents=True, exist_ok=True)
            write_atomic(self.spec_path, job.model_dump_json().encode())
        except OSError as e:
            raise StorageError(f"cannot write the fuser's files for {self.job_id}: {e}") from e

    def load(self) -> FuseJob:
        if not self.spec_path.exists():
            raise NotFound(f"the fuser has no job {self.job_id}")
        return FuseJob.model_validate_json(self.spec_path.read_text())

    def chunk_path(self, index: int) -> Path:
        return self.dir / "chunks" / f"{index:06d}.f32"

    def add_chunk(self, chunk: ChunkSpec, stems: np.ndarray) -> None:
        """Store one chunk's centre-trimmed stems (n_stems, 2, length)."""
        job = self.load()
        chunks = all_chunks(job)
        if not 0 <= chunk.index < len(chunks) or chunks[chunk.index] != chunk:
            raise BadRequest(f"chunk {chunk.index} is not part of job {self.job_id}'s plan")
        expected = (len(job.model_stems), 2, chunk.length)
        if stems.shape != expected:
            raise BadRequest(f"chunk {chunk.index}: shape {stems.shape}, expected {expected}")
        if not np.isfinite(stems).all():
            raise BadRequest(f"chunk {chunk.index} contains NaN or infinite samples")
        try:
            write_atomic(self.chunk_path(chunk.index), np.ascontiguousarray(stems).tobytes())
        except OSError as e:
            raise StorageError(f"cannot store chunk {chunk.index} of {self.job_id}: {e}") from e

    def status(self) -> FuseStatus:
        job = self.load()
        received = sorted(int(p.stem) for p in (self.dir / "chunks").glob("*.f32"))
        return FuseStatus(
            job_id=self.job_id, chunks_planned=len(all_chunks(job)), received=received
        )

    def finalize(self) -> FusedResult:
        job = self.load()
        status = self.status()
        missing = sorted(set(range(status.chunks_planned)) - set(status.received))
        if missing:
            raise Conflict(f"job {self.job_id} still misses chunks {missing[:10]}")
        try:
            return fuse_to_files(job, self.chunk_path)
        except OSError as e:
            raise StorageError(f"cannot write the results of {self.job_id}: {e}") from e

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def all_chunks(job: FuseJob) -> list[ChunkSpec]:
    return [c for plan in job.plans for c in plan.chunks]


def fuse_to_files(job: FuseJob, chunk_path) -> FusedResult:
    """Fuse every chunk of `job` block by block into the multi-channel WAV and per-stem WAVs."""
    n = job.plans[0].n_frames - job.plans[0].lead
    n_model = len(job.model_stems)
    chunk_files = {
        c.index: RawArrayFile(chunk_path(c.index), (n_model, 2, c.length)) for c in all_chunks(job)
    }

    def blocks() -> Iterator[np.ndarray]:
        for b0 in range(0, n, BLOCK_FRAMES):
            block = fuse_passes(job.plans, chunk_files, b0, min(n, b0 + BLOCK_FRAMES), n_model)
            block *= np.float32(job.norm.std)
            block += np.float32(job.norm.mean)
            yield select_stems(block, job)

    activity = StemActivity(n, len(output_stems(job)), job.activity_window, job.activity_hop)
    return write_stem_files(job.job_id, Path(job.out_dir), output_stems(job), n, blocks(), activity)


def combine_members(job: EnsembleJob) -> FusedResult:
    """An ensemble's stems: per stem, its members' fused stem files combined by `job.method`
    (prediction/ensemble_math.py), read and written block by block."""
    readers = [{s: sf.SoundFile(member.stem_paths[s]) for s in job.stems} for member in job.members]
    try:
        n = readers[0][job.stems[0]].frames
        lengths = {r[s].frames for r in readers for s in job.stems}
        if lengths != {n}:
            raise BadRequest(f"the members' stems differ in length: {sorted(lengths)}")
        weights = np.asarray([m.weight for m in job.members], dtype=np.float64)
        weights /= weights.sum()

        def blocks() -> Iterator[np.ndarray]:
            for b0 in range(0, n, BLOCK_FRAMES):
                k = min(n, b0 + BLOCK_FRAMES) - b0
                block = [
                    [m[s].read(k, dtype="float64", always_2d=True).T for s in job.stems]
                    for m in readers
                ]
                yield combine(job.method, weights, np.asarray(block))  # (members, stems, 2, k)

        activity = StemActivity(n, len(job.stems), job.activity_window, job.activity_hop)
        return write_stem_files(job.job_id, Path(job.out_dir), job.stems, n, blocks(), activity)
    finally:
        for member in readers:
            for f in member.values():
                f.close()


def write_stem_files(
    job_id: str,
    out_dir: Path,
    stems: list[str],
    n: int,
    blocks: Iterator[np.ndarray],
    activity: StemActivity,
) -> FusedResult:
    """Write `blocks` ((n_stems, 2, k) float32, in track order, n frames in all) as the
    multi-channel WAV and one WAV per stem, under temporary names renamed at the end."""
    (out_dir / "stems").mkdir(parents=True, exist_ok=True)
    result_path = out_dir / "result.wav"
    stem_paths = {s: out_dir / "stems" / f"{s}.wav" for s in stems}
    tmp = {p: p.with_suffix(".partial.wav") for p in [result_path, *stem_paths.values()]}
    peak = 0.0
    fmt = "RF64" if n * 2 * len(stems) * 4 > 0xFFFF0000 else "WAV"
    b0 = 0
    with sf.SoundFile(
        tmp[result_path], "w", SAMPLE_RATE, 2 * len(stems), "FLOAT", format=fmt
    ) as res:
        writers = {
            s: sf.SoundFile(tmp[stem_paths[s]], "w", SAMPLE_RATE, 2, "FLOAT", format="WAV")
            for s in stems
        }
        try:
            for block in blocks:
                peak = max(peak, float(np.abs(block).max(initial=0.0)))
                activity.add(block, b0)
                res.write(block.reshape(-1, block.shape[-1]).T)
                for i, s in enumerate(stems):
                    writers[s].write(block[i].T)
                b0 += block.shape[-1]
        finally:
            for w in writers.values():
                w.close()
    for final, partial in tmp.items():
        os.replace(partial, final)
    return FusedResult(
        job_id=job_id,
        stems=stems,
        n_frames=n,
        result_path=str(result_path),
        stem_paths={s: str(p) for s, p in stem_paths.items()},
        peak=peak,
        activity_db=activity.db(),
    )


class StemActivity:
    """Per analysis window, the RMS of every output stem, summed block by block as the fuser
    writes them (so the analysis gets each stem's level from the stems themselves)."""

    def __init__(self, n_frames: int, n_stems: int, window: int, hop: int):
        self.bounds = window_bounds(n_frames, hop, window) if window and hop else []
        self.sums = np.zeros((len(self.bounds), n_stems))
        self.hop = hop

    def add(self, block: np.ndarray, b0: int) -> None:
        """Count a fused block `(n_stems, 2, k)` that starts at track frame `b0`."""
        if not self.bounds:
            return
        b1 = b0 + block.shape[-1]
        first = max(0, (b0 - (self.bounds[0][1] - self.bounds[0][0])) // self.hop)
        for w in range(first, len(self.bounds)):
            lo, hi = self.bounds[w]
            if lo >= b1:
                break
            lo, hi = max(lo, b0), min(hi, b1)
            if lo < hi:
                piece = block[..., lo - b0 : hi - b0]
                self.sums[w] += np.square(piece, dtype=np.float64).sum(axis=(1, 2))

    def db(self) -> list[list[float]]:
        """`[window][stem]` RMS in dBFS (floored at -120)."""
        out = []
        for (lo, hi), sums in zip(self.bounds, self.sums, strict=True):
            mean_square = sums / (2 * (hi - lo))
            with np.errstate(divide="ignore"):
                levels = 10.0 * np.log10(mean_square)
            out.append([round(max(-120.0, float(v)), 2) for v in levels])
        return out


def check_pass_weights(job: FuseJob) -> None:
    """Pass weights, where given, have one finite weight ≥ 0 per model stem, and every stem
    some weight in all (`fuse_passes` divides by the sum)."""
    n_model = len(job.model_stems)
    totals = np.zeros(n_model)
    for i, plan in enumerate(job.plans):
        weights = [1.0] * n_model if plan.weights is None else plan.weights
        if len(weights) != n_model or not all(np.isfinite(w) and w >= 0 for w in weights):
            raise BadRequest(
                f"pass {i}: weights {plan.weights} are not {n_model} finite numbers ≥ 0"
            )
        totals += weights
    if not (totals > 0).all():
        raise BadRequest(f"the passes give stem(s) no weight at all: {totals.tolist()}")


def fuse_passes(plans, chunk_files, b0: int, b1: int, n_model: int) -> np.ndarray:
    """(n_model, 2, b1 - b0) of the track: each pass fused and trimmed by its lead, the passes
    averaged per stem with their weights: `apply_model` averages its shifts, and combines a bag's
    members (each with its own shifts) weighted per source."""
    if len(plans) == 1 and plans[0].weights is None:
        return fuse_block(plans[0], chunk_files, b0, b1, n_model)
    out = np.zeros((n_model, 2, b1 - b0), dtype=np.float32)
    totals = np.zeros(n_model, dtype=np.float32)
    for plan in plans:
        weights = np.asarray(plan.weights or [1.0] * n_model, dtype=np.float32)
        out += weights[:, None, None] * fuse_block(plan, chunk_files, b0, b1, n_model)
        totals += weights
    out /= totals[:, None, None]
    return out


def fuse_block(plan, chunk_files, b0: int, b1: int, n_model: int) -> np.ndarray:
    """(n_model, 2, b1 - b0): one pass's weighted sum of the chunks covering track frames
    [b0, b1), divided by the summed weights."""
    weight = triangle_weight(plan.segment, plan.transition_power)
    v0, v1 = b0 + plan.lead, b1 + plan.lead  # the pass's own frame numbers
    out = np.zeros((n_model, 2, v1 - v0), dtype=np.float32)
    weight_sum = np.zeros(v1 - v0, dtype=np.float32)
    for chunk in plan.chunks:
        lo, hi = max(v0, chunk.offset), min(v1, chunk.offset + chunk.length)
        if lo >= hi:
            continue
        w = weight[lo - chunk.offset : hi - chunk.offset]
        piece = chunk_files[chunk.index].read(lo - chunk.offset, hi - chunk.offset)
        out[..., lo - v0 : hi - v0] += w * piece
        weight_sum[lo - v0 : hi - v0] += w
    out /= weight_sum
    return out


def select_stems(block: np.ndarray, job: FuseJob) -> np.ndarray:
    """(n_model, 2, k) -> (n_out, 2, k): all stems, or [stem, sum of the others]."""
    if job.stem is None:
        return block
    i = job.model_stems.index(job.stem)
    rest = [block[j] for j in range(len(job.model_stems)) if j != i]
    return np.stack([block[i], np.sum(rest, axis=0, dtype=np.float32)])


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
