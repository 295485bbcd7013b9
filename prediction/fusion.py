"""On-disk accumulation and block-wise fusing of predicted chunks, as they arrive.

Each chunk's stems are stored as their own file (written to a temporary name, then renamed), so
a retried chunk replaces itself instead of being added twice, and a crash never leaves half a
chunk behind. As soon as a stretch of the track is final (every chunk covering it, in every
pass, is here: `prediction.prefix.ready_frames`) it is fused and appended to the job's growing
result file: for each block, the weighted pieces of the chunks that cover it are added in chunk
order (the order Demucs adds them, so the float sums agree), divided by the weight sum, and the
input standardisation is undone. Every one of these is a per-sample operation, so fusing the
track in pieces as it becomes final gives the same bits as fusing it at the end. Finalizing
fuses what is left and publishes the file. Memory stays flat in song length.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from common.analysis_plan import window_bounds
from common.chunks import triangle_weight
from common.errors import BadRequest, Conflict, NotFound, StorageError
from common.interfaces import (
    ChunkSpec,
    EnsembleJob,
    FusedResult,
    FuseJob,
    FuseStatus,
)
from common.rawfile import RawArrayFile
from common.resultfile import read_record
from common.resultstore import read_stored_record, result_key
from common.storage import LocalStorage, Storage
from prediction.ensemble_math import combine
from prediction.prefix import GrowingResult, ready_frames, write_atomic

BLOCK_FRAMES = 1 << 18  # ~6 s per block: bounded memory whatever the song length

_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def job_lock(job_id: str) -> threading.RLock:
    """One lock per job: concurrent chunk PUTs of a job append to one file, one at a time."""
    with _locks_guard:
        return _locks.setdefault(job_id, threading.RLock())


def output_stems(job: FuseJob) -> list[str]:
    """Stem names in channel order: all model stems, or [stem, no_stem]."""
    if job.stem is None:
        return list(job.model_stems)
    return [job.stem, f"no_{job.stem}"]


def track_frames(job: FuseJob) -> int:
    return job.plans[0].n_frames - job.plans[0].lead


class JobAccumulator:
    """The fuser's files for one job under `root/<job_id>/`; its result in the storage under
    `job.out_key`. `store` (default: local disk at root's parent, the data dir) holds both:
    on local disk they are these files; in object storage the spec and every chunk are put in
    the bucket before the call returns, `root/<job_id>/` is a cache of them (and of the growing
    result), and a replica that lacks it fetches what it needs from the bucket."""

    def __init__(self, root: Path, job_id: str, store: Storage | None = None):
        self.dir = root / job_id
        self.job_id = job_id
        self.store = store if store is not None else LocalStorage(root.parent)
        self.key = f"{root.name}/{job_id}"  # on local disk: this very folder

    @property
    def spec_path(self) -> Path:
        return self.dir / "job.json"

    def _put(self, path: Path, data: bytes) -> None:
        """The file at `path` (in self.dir) and, in object storage, its object."""
        key = f"{self.key}/{path.relative_to(self.dir).as_posix()}"
        if self.store.remote:
            write_atomic(path, data)
        self.store.put_bytes(key, data)

    def result_dir(self, out_key: str) -> Path:
        """Where the result grows on this machine: its own folder on local disk, else a cache."""
        return self.store.local_path(out_key) or self.dir / "result"

    def growing(self, out_key: str, stems: list[str], n_frames: int) -> GrowingResult:
        mirror = self.store if self.store.remote else None
        return GrowingResult(self.result_dir(out_key), stems, n_frames, mirror, out_key)

    def create(self, job: FuseJob) -> None:
        """Record the job; a second identical PUT is fine, a different one is a conflict.
        A job recorded before (a resumed job) fuses at once what its chunks make final."""
        if job.stem is not None and job.stem not in job.model_stems:
            raise BadRequest(f"stem {job.stem!r} is not one of {job.model_stems}")
        check_pass_weights(job)
        if self.spec_path.exists():
            if self.load() != job:
                raise Conflict(f"job {self.job_id} already exists with another plan")
            self._advance(job)
            return
        try:
            (self.dir / "chunks").mkdir(parents=True, exist_ok=True)
            self._put(self.spec_path, job.model_dump_json().encode())
        except OSError as e:
            raise StorageError(f"cannot write the fuser's files for {self.job_id}: {e}") from e

    def load(self) -> FuseJob:
        if not self.spec_path.exists() and self.store.remote:
            try:  # another replica's job: its spec is in the bucket
                spec = self.store.get_bytes(f"{self.key}/job.json")
            except FileNotFoundError:
                spec = None
            if spec is not None:
                (self.dir / "chunks").mkdir(parents=True, exist_ok=True)
                write_atomic(self.spec_path, spec)
        if not self.spec_path.exists():
            raise NotFound(f"the fuser has no job {self.job_id}")
        return FuseJob.model_validate_json(self.spec_path.read_text())

    def chunk_path(self, index: int) -> Path:
        return self.dir / "chunks" / f"{index:06d}.f32"

    def received(self) -> set[int]:
        """The chunks stored: in object storage, those in the bucket (whoever received them)."""
        if self.store.remote:
            names = self.store.list_prefix(f"{self.key}/chunks")
            return {int(n.rsplit("/", 1)[1].split(".")[0]) for n in names if n.endswith(".f32")}
        return {int(p.stem) for p in (self.dir / "chunks").glob("*.f32")}

    def _fetch_chunks(self, indices) -> None:
        """The chunks another replica received, copied here from the bucket."""
        for index in indices:
            path = self.chunk_path(index)
            if self.store.remote and not path.exists():
                self.store.get_file(f"{self.key}/chunks/{path.name}", path)

    def add_chunk(self, chunk: ChunkSpec, stems: np.ndarray) -> None:
        """Store one chunk's centre-trimmed stems (n_stems, 2, length) and fuse what it makes
        final."""
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
            self._put(self.chunk_path(chunk.index), np.ascontiguousarray(stems).tobytes())
        except OSError as e:
            raise StorageError(f"cannot store chunk {chunk.index} of {self.job_id}: {e}") from e
        self._advance(job)

    def status(self) -> FuseStatus:
        job = self.load()
        record = read_record(self.result_dir(job.out_key))
        if record is None and self.store.remote:
            record = read_stored_record(self.store, job.out_key)
        n = track_frames(job)
        ready = record.ready_frames if record is not None and record.n_frames == n else 0
        return FuseStatus(
            job_id=self.job_id,
            chunks_planned=len(all_chunks(job)),
            received=sorted(self.received()),
            ready_frames=ready,
            n_frames=n,
        )

    def _advance(self, job: FuseJob) -> GrowingResult:
        """Fuse the frames that became final since the last time into the growing result."""
        with job_lock(self.job_id):
            try:
                grow = self.growing(job.out_key, output_stems(job), track_frames(job))
                received = self.received()
                target = ready_frames(job.plans, received)
                if target > grow.ready:
                    self._fetch_chunks(received)
                    files = chunk_files(job, self.chunk_path, received)
                    grow.append(fused_blocks(job, files, grow.ready, target))
            except OSError as e:
                raise StorageError(f"cannot write the result of {self.job_id}: {e}") from e
            return grow

    def finalize(self) -> FusedResult:
        job = self.load()
        missing = sorted(set(range(len(all_chunks(job)))) - self.received())
        if missing:
            raise Conflict(f"job {self.job_id} still misses chunks {missing[:10]}")
        activity = StemActivity(
            track_frames(job), len(output_stems(job)), job.activity_window, job.activity_hop
        )
        with job_lock(self.job_id):
            grow = self._advance(job)
            try:
                return published(self.job_id, grow, activity, job.out_key)
            except OSError as e:
                raise StorageError(f"cannot write the results of {self.job_id}: {e}") from e

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.store.remote:
            self.store.delete_prefix(self.key)
        with _locks_guard:
            _locks.pop(self.job_id, None)


def all_chunks(job: FuseJob) -> list[ChunkSpec]:
    return [c for plan in job.plans for c in plan.chunks]


def chunk_files(job: FuseJob, chunk_path, received: set[int]) -> dict[int, RawArrayFile]:
    """The stored chunks, each read a frame range at a time."""
    n_model = len(job.model_stems)
    return {
        c.index: RawArrayFile(chunk_path(c.index), (n_model, 2, c.length))
        for c in all_chunks(job)
        if c.index in received
    }


def fused_blocks(job: FuseJob, chunk_files, lo: int, hi: int) -> Iterator[np.ndarray]:
    """Track frames [lo, hi) of the output stems, fused and de-standardised, a block at a time:
    (n_out, 2, k) float32. Every chunk covering them must be in `chunk_files`."""
    n_model = len(job.model_stems)
    for b0 in range(lo, hi, BLOCK_FRAMES):
        block = fuse_passes(job.plans, chunk_files, b0, min(hi, b0 + BLOCK_FRAMES), n_model)
        block *= np.float32(job.norm.std)
        block += np.float32(job.norm.mean)
        yield select_stems(block, job)


def published(
    job_id: str, grow: GrowingResult, activity: StemActivity, out_key: str
) -> FusedResult:
    """Publish a finished result as `result.wav`, with its peak and the stems' levels per
    analysis window (read back a block at a time: the result was written piece by piece)."""
    peak = 0.0
    for b0 in range(0, grow.n_frames, BLOCK_FRAMES):
        block = grow.read(b0, min(grow.n_frames, b0 + BLOCK_FRAMES))
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
        activity.add(block, b0)
    grow.publish()
    return FusedResult(
        job_id=job_id,
        stems=grow.stems,
        n_frames=grow.n_frames,
        result_key=result_key(out_key),
        peak=peak,
        activity_db=activity.db(),
    )


def combine_members(job: EnsembleJob, acc: JobAccumulator) -> FusedResult:
    """An ensemble's stems: per stem, its members' fused stems combined with their weights
    (`job.method`: weighted mean or median), each stem read as its channel pair of the
    member's `result.wav` (read in place from the storage), block by block. A retried
    combination goes on from the frames it had written. `acc`: the fuser's files of the job."""
    objects = [acc.store.open(member.result_key) for member in job.members]
    readers = [sf.SoundFile(f) for f in objects]
    try:
        n = readers[0].frames
        lengths = {r.frames for r in readers}
        if lengths != {n}:
            raise BadRequest(f"the members' results differ in length: {sorted(lengths)}")
        weights = np.asarray([m.weight for m in job.members], dtype=np.float64)
        pairs = [[m.stems.index(s) for s in job.stems] for m in job.members]
        with job_lock(job.job_id):
            grow = acc.growing(job.out_key, job.stems, n)
            for r in readers:
                r.seek(grow.ready)

            def blocks() -> Iterator[np.ndarray]:
                for b0 in range(grow.ready, n, BLOCK_FRAMES):
                    k = min(n, b0 + BLOCK_FRAMES) - b0
                    members = [stem_pairs(r, p, k) for r, p in zip(readers, pairs, strict=True)]
                    yield combine(job.method, weights, np.stack(members))

            grow.append(blocks())
            activity = StemActivity(n, len(job.stems), job.activity_window, job.activity_hop)
            return published(job.job_id, grow, activity, job.out_key)
    finally:
        for r in readers:
            r.close()
        for f in objects:
            f.close()


def stem_pairs(reader: sf.SoundFile, stems: list[int], k: int) -> np.ndarray:
    """(len(stems), 2, k) float32: the next k frames of a result WAV (channels = stems x
    [L, R]), the channel pairs of the stems numbered `stems`."""
    frames = reader.read(k, dtype="float32", always_2d=True).T
    return frames.reshape(-1, 2, k)[stems]


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
