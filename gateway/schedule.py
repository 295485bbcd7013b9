"""How one job's chunks are sent: batches in track order, and its progress in the store.

Fairness across jobs is the job queue's and the predictor's: each running job has its own
`chunk_concurrency` requests in flight and the predictor serves requests in arrival order, so a
short job's chunks interleave with a long one's instead of waiting behind them. Within a job,
chunks go in track order (`track_order`), so its final prefix grows steadily.
"""

from __future__ import annotations

import time

from common.constants import SAMPLE_RATE
from common.interfaces import ChunkSpec, FuseJob
from gateway.store import JobStore

# The separation's share of a job's progress; the rest is fusing and the analysis of the stems
# once they are final. Measured on a 60 s htdemucs job on 2 cores (bench_analysis_job): beats,
# chords and sections take ~5 s, MIDI of three stems ~15 s, against ~50 s of separation.
SEPARATION_SHARE = 0.95
SEPARATION_SHARE_ANALYSIS = 0.9
SEPARATION_SHARE_MIDI = 0.8


def separation_share(analysis: bool, midi: bool) -> float:
    if midi:
        return SEPARATION_SHARE_MIDI
    return SEPARATION_SHARE_ANALYSIS if analysis else SEPARATION_SHARE


class ProgressReport:
    """A job's progress and its final seconds (`ready_s`) in the store, written at most every
    `INTERVAL_S` (a fast model's chunks come back tens of times a second; every poll reads the
    store). `ready_frames` None: the job's own result is not being fused (an ensemble member, a
    chain's first stage or link: their job's ready_s is written where they are combined)."""

    INTERVAL_S = 0.5

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        total: int,
        part: tuple[int, int],
        ready_frames,
        share: float = SEPARATION_SHARE,
    ):
        self.store, self.job_id, self.total, self.part = store, job_id, total, part
        self.share = share  # of the job's progress: the separation's; the analysis the rest
        self.frames = ready_frames
        self.done = 0
        self.last = float("-inf")

    def ready(self, frames: int) -> None:
        if self.frames is not None:
            self.frames = max(self.frames, frames)

    def tick(self, done: int) -> None:
        self.done = done
        if time.monotonic() - self.last >= self.INTERVAL_S:
            self.write(done)

    def write(self, done: int, **fields) -> None:
        self.done = done
        progress = round(self.share * (self.part[0] + done / self.total) / self.part[1], 4)
        if self.frames is not None:
            fields["ready_s"] = round(self.frames / SAMPLE_RATE, 3)
        self.store.update(self.job_id, progress=progress, **fields)
        self.last = time.monotonic()


def fuser_job_id(job_id: str, run: str = "") -> str:
    """The fuser's job for one model run of a job: the job's own (`run` empty), an ensemble
    member's (`m<k>`), a chained job's first stage (`s`) or its k-th link (`c<k>`)."""
    return f"{job_id}-{run}" if run else job_id


def fuser_job_ids(job_id: str, resolved: dict) -> list[str]:
    """Every fuser job a job with these resolved options may have."""
    runs = [f"m{k}" for k in range(len(resolved.get("members") or []))]
    links = resolved.get("chain") or []
    if links:
        runs += ["s", *(f"c{k}" for k in range(len(links)))]
    return [fuser_job_id(job_id), *(fuser_job_id(job_id, run) for run in runs)]


def output_stems(job: FuseJob) -> list[str]:
    """The stems the fused result holds, in channel order: the model's, or [stem, no_stem]."""
    return list(job.model_stems) if job.stem is None else [job.stem, f"no_{job.stem}"]


def track_order(
    batches: list[list[tuple[int, ChunkSpec]]],
) -> list[list[tuple[int, ChunkSpec]]]:
    """Batches by where their first chunk starts in the track (`offset - lead`), so every pass
    (shift, bag member) separates a region before any goes on to the next: the fuser's final
    prefix then grows as the chunks come back instead of waiting for the last pass. Stable:
    at one start, the passes keep their order. Each batch stays one pass's consecutive chunks."""
    return sorted(batches, key=lambda batch: batch[0][1].offset - batch[0][0])


def group_batches(
    todo: list[tuple[int, ChunkSpec]], batch_size: int
) -> list[list[tuple[int, ChunkSpec]]]:
    """Consecutive chunks of one pass and one length, `batch_size` at most per request (a
    request's windows must share their length; the last chunk of a pass is usually shorter)."""
    batches: list[list[tuple[int, ChunkSpec]]] = []
    for lead, chunk in todo:
        last = batches[-1] if batches else None
        if (
            last
            and len(last) < max(1, batch_size)
            and last[0][0] == lead
            and last[0][1].length == chunk.length
            and last[0][1].window_length == chunk.window_length
        ):
            last.append((lead, chunk))
        else:
            batches.append([(lead, chunk)])
    return batches
