"""Frame ranges of a job's result: the final prefix while it runs, `from_frame` pieces always.

While a job runs, the fuser appends every stretch of the result that has become final to the
job's growing result file and records how far it is (`common.resultfile`); what is served here
is read from that file up to the record, so it is bit for bit the start of the finished
result. A player fetches the prefix, then only the new frames with `from_frame`. Every answer
carries the `X-Audiosplit-*` headers (`progress_headers`) saying what part of the result it is.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from fastapi.responses import StreamingResponse

from common.constants import SAMPLE_RATE
from common.errors import Conflict, InvalidOption, NotFound
from common.resultfile import PrefixRecord, float_wav_header, read_record
from common.resultstore import open_result_bytes, read_stored_record
from gateway.jobfiles import JobFiles
from gateway.store import JobRecord

BLOCK_FRAMES = 1 << 16  # frames read and sent at a time (~1.5 s; 2 MB for 4 stems)


@dataclass(frozen=True)
class Piece:
    """Frames [start, end) of the result, `end` being how far it is final (`ready`)."""

    start: int
    ready: int
    n_frames: int

    @property
    def partial(self) -> bool:
        return self.ready < self.n_frames or self.start > 0


def progress_headers(piece: Piece) -> dict[str, str]:
    """`X-Audiosplit-Partial`: whether the answer is less than the whole result;
    `-Ready-Frames` / `-Ready-S`: how much of it is final (44.1 kHz frames / seconds);
    `-From-Frame`: the result's frame the answer starts at."""
    return {
        "X-Audiosplit-Partial": "true" if piece.partial else "false",
        "X-Audiosplit-Ready-Frames": str(piece.ready),
        "X-Audiosplit-Ready-S": f"{piece.ready / SAMPLE_RATE:.6f}",
        "X-Audiosplit-From-Frame": str(piece.start),
    }


def done_piece(job: JobRecord, from_frame: int) -> Piece:
    """The whole result from `from_frame` (once done); 422 from its end on: no frame there is
    ever final."""
    if from_frame and from_frame >= job.n_frames:
        raise InvalidOption(
            f"from_frame={from_frame} is beyond the result, which has {job.n_frames} frames "
            f"(frames 0 to {job.n_frames - 1})"
        )
    return Piece(from_frame, job.n_frames, job.n_frames)


def wav_range(
    files: JobFiles, job: JobRecord, stem: str | None, from_frame: int, filename: str
) -> StreamingResponse:
    """The final frames of the result from `from_frame`, as a float WAV: all channels, or the
    channel pair of `stem`. A running job gives what is final so far (409 `not_ready` while
    nothing from `from_frame` on is); a done job its result from `from_frame`."""
    if job.status == "failed":
        raise Conflict(f"job {job.id} failed: it has no result", code="not_ready")
    piece = done_piece(job, from_frame)  # 422 from the end on, running or done
    record = None
    if job.status != "done":
        record = job_record(files)
        if record is None or record.n_frames != job.n_frames or record.ready_frames == 0:
            raise Conflict(
                f"job {job.id} is {job.status}: no part of its result is final yet",
                code="not_ready",
            )
        if from_frame >= record.ready_frames:
            raise Conflict(
                f"job {job.id} is {job.status}: frames from {from_frame} on are not final yet "
                f"({record.ready_frames} are)",
                code="not_ready",
            )
        piece = Piece(from_frame, record.ready_frames, record.n_frames)
    stems = job.stems if record is None else record.stems
    if stem is not None and stem not in stems:
        raise NotFound(f"job {job.id} has no stem {stem!r}; its stems: {', '.join(stems)}")
    pick = None if stem is None else [2 * stems.index(stem), 2 * stems.index(stem) + 1]
    if record is None:
        source, channels = open_finished(files)
    else:
        source, channels = open_growing(files, record), record.channels
    out_channels = channels if pick is None else len(pick)
    size = len(float_wav_header(piece.ready - piece.start, out_channels))
    size += (piece.ready - piece.start) * out_channels * 4
    return StreamingResponse(
        wav_stream(source, channels, pick, piece.start, piece.ready),
        media_type="audio/wav",
        headers={
            **progress_headers(piece),
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


class FrameSource:
    """Frames of a result, read from `frame` on: `read(k)` -> (k, channels) float32."""

    def __init__(self, raw: io.BufferedReader | None, data_offset: int, snd: sf.SoundFile | None):
        self.raw, self.data_offset, self.snd = raw, data_offset, snd

    def seek(self, frame: int, channels: int) -> None:
        if self.snd is not None:
            self.snd.seek(frame)
        else:
            self.raw.seek(self.data_offset + frame * channels * 4)

    def read(self, k: int, channels: int) -> np.ndarray:
        if self.snd is not None:
            return self.snd.read(k, dtype="float32", always_2d=True)
        data = self.raw.read(k * channels * 4)
        return np.frombuffer(data, "<f4").reshape(-1, channels)

    def close(self) -> None:
        (self.snd or self.raw).close()


def job_record(files: JobFiles) -> PrefixRecord | None:
    """How far the running job's result is final (the fuser's record, on disk or stored)."""
    if files.remote:
        return read_stored_record(files.store, files.result_key)
    return read_record(files.result_dir)


def open_growing(files: JobFiles, record: PrefixRecord) -> FrameSource:
    """The growing file, or, once the fuser has published it, the same file renamed (in object
    storage: the published stretches, then result.wav)."""
    try:
        raw = open_result_bytes(files.store, files.result_key, record)
    except FileNotFoundError as e:
        raise NotFound("the result file is gone (deleted or expired)") from e
    return FrameSource(raw, record.data_offset, None)


def open_finished(files: JobFiles) -> tuple[FrameSource, int]:
    """A done job's `result.wav`, whoever wrote its header (read through libsndfile)."""
    try:
        files.fetch(files.result_path)  # in object storage: into this gateway's cache, once
        snd = sf.SoundFile(files.result_path)
    except (FileNotFoundError, sf.LibsndfileError) as e:
        raise NotFound("the result file is gone (deleted or expired)") from e
    return FrameSource(None, 0, snd), snd.channels


def wav_stream(
    source: FrameSource, channels: int, pick: list[int] | None, lo: int, hi: int
) -> Iterator[bytes]:
    """A float WAV of frames [lo, hi) of `source`: its header, then the frames a block at a
    time (all channels, or those in `pick`)."""
    try:
        yield float_wav_header(hi - lo, channels if pick is None else len(pick))
        source.seek(lo, channels)
        for b0 in range(lo, hi, BLOCK_FRAMES):
            frames = source.read(min(hi, b0 + BLOCK_FRAMES) - b0, channels)
            if frames.shape[0] != min(hi, b0 + BLOCK_FRAMES) - b0:
                raise NotFound("the result file is shorter than its record says")
            yield np.ascontiguousarray(frames if pick is None else frames[:, pick], "<f4").tobytes()
    finally:
        source.close()
