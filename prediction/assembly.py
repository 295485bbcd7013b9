"""A chained job's result assembled from the fused results that hold its stems.

The first stage's result is finished when its links start; each link's result grows as its
chunks are fused (`prediction.prefix`). Every frame final in all of them is final in the job's
result: `extend_assembly` copies those frames, stem by stem, into the job's growing result,
so the result of a chained job grows while its links run and a player can start on it, and
`assemble_stems` copies the rest once every link is finished and publishes it. Each source is
read in place in the storage up to its record (`common.resultstore`: the growing file on local
disk, its published stretches in a bucket, or `result.wav`), a block at a time: memory stays
flat in song length. A retried or resumed assembly goes on from the frames it had written.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from common.errors import BadRequest, Conflict
from common.interfaces import AssemblyJob, FusedResult
from common.resultfile import PrefixRecord
from common.resultstore import open_result_bytes, read_stored_record
from prediction.fusion import BLOCK_FRAMES, JobAccumulator, StemActivity, job_lock, published
from prediction.prefix import GrowingResult


def extend_assembly(job: AssemblyJob, acc: JobAccumulator) -> GrowingResult:
    """Copy into the job's growing result the frames final in every source so far (a source
    with no record yet has none). `acc`: the fuser's files of the job."""
    keys = list(dict.fromkeys(stem.out_key for stem in job.stems))
    records = {key: read_stored_record(acc.store, key) for key in keys}
    for key, record in records.items():
        if record is not None and record.n_frames != job.n_frames:
            raise BadRequest(
                f"the assembled results differ in length: {key} has {record.n_frames} "
                f"frames, the track {job.n_frames}"
            )
    for stem in job.stems:
        record = records[stem.out_key]
        if record is not None and 2 * stem.index + 2 > record.channels:
            raise BadRequest(f"{stem.out_key} has no stem {stem.index} ({stem.name})")
    target = min(record.ready_frames if record else 0 for record in records.values())
    with job_lock(job.job_id):
        grow = acc.growing(job.out_key, [stem.name for stem in job.stems], job.n_frames)
        if target > grow.ready:
            sources = {key: Source(acc, key, records[key]) for key in keys}
            try:
                grow.append(copied(job, sources, grow.ready, target))
            finally:
                for source in sources.values():
                    source.close()
        return grow


def assemble_stems(job: AssemblyJob, acc: JobAccumulator) -> FusedResult:
    """The job's result whole and published: every source must be finished."""
    with job_lock(job.job_id):
        grow = extend_assembly(job, acc)
        if grow.ready < job.n_frames:
            raise Conflict(
                f"only {grow.ready} of {job.n_frames} frames are final in every result of "
                f"{job.job_id}: a link has not finished"
            )
        activity = StemActivity(job.n_frames, len(job.stems), job.activity_window, job.activity_hop)
        return published(job.job_id, grow, activity, job.out_key)


class Source:
    """One fused result's final frames, read in place: its bytes as the record found them."""

    def __init__(self, acc: JobAccumulator, out_key: str, record: PrefixRecord):
        self.record = record
        self.raw: BinaryIO = open_result_bytes(acc.store, out_key, record)

    def pairs(self, lo: int, hi: int, stems: list[int]) -> np.ndarray:
        """(len(stems), 2, hi - lo) float32: frames [lo, hi), the stems numbered `stems`."""
        channels = self.record.channels
        self.raw.seek(self.record.data_offset + lo * channels * 4)
        data = self.raw.read((hi - lo) * channels * 4)
        frames = np.frombuffer(data, "<f4").reshape(hi - lo, channels)
        return frames.T.reshape(-1, 2, hi - lo)[stems]

    def close(self) -> None:
        self.raw.close()


def copied(job: AssemblyJob, sources: dict[str, Source], lo: int, hi: int):
    """Blocks (n_stems, 2, k) of frames [lo, hi): each stem from its source, in the job's
    order; each source read once a block."""
    keys = list(sources)
    picks = [[s.index for s in job.stems if s.out_key == key] for key in keys]
    read = [(key, i) for key, p in zip(keys, picks, strict=True) for i in p]  # read order
    order = [read.index((s.out_key, s.index)) for s in job.stems]
    for b0 in range(lo, hi, BLOCK_FRAMES):
        b1 = min(hi, b0 + BLOCK_FRAMES)
        taken = [sources[key].pairs(b0, b1, p) for key, p in zip(keys, picks, strict=True)]
        yield np.concatenate(taken)[order]
