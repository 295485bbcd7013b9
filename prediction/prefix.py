"""How far a job's result is final, and the result file that grows to it.

A track frame is final once every chunk that covers it, in every pass, has arrived: no later
chunk adds to it. The fuser fuses those frames as soon as they are final and appends them to
the job's growing result (`common.resultfile`: a float WAV whose header states the finished
length, and a record of the frames written, replaced after they are on disk), so a reader never
sees a frame that is not final, and a fuser killed mid-write drops the bytes past the record
when it reopens the file.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.interfaces import ChunkPlan
from common.resultfile import (
    PREFIX_NAME,
    RECORD_NAME,
    RESULT_NAME,
    PrefixRecord,
    float_wav_header,
    read_record,
)
from common.resultstore import (
    PIECES_DIR,
    piece_key,
    read_stored_record,
    record_bytes,
    record_key,
    result_key,
)
from common.storage import Storage


def ready_frames(plans: list[ChunkPlan], received: set[int]) -> int:
    """Track frames [0, t) that are final given the chunk indices `received`.

    In each pass the chunks are in offset order; the first one missing (among those that reach
    the track past the pass's lead) starts where that pass stops being final: every frame before
    it is covered only by earlier chunks. The track is final up to the least of the passes."""
    n = plans[0].n_frames - plans[0].lead
    ready = n
    for plan in plans:
        for chunk in plan.chunks:
            if chunk.index not in received and chunk.offset + chunk.length > plan.lead:
                ready = min(ready, max(0, chunk.offset - plan.lead))
                break
    return ready


class GrowingResult:
    """The result WAV of one job, appended to in track order, in the local folder `out_dir`.
    With `mirror` (object storage, `out_key` the result's folder there) every block is also
    published there before the record says it is final (`common.resultstore`), and a fuser
    without the local file (another replica) rebuilds it from there. Not thread-safe: the
    fuser holds the job's lock around every use."""

    def __init__(
        self,
        out_dir: Path,
        stems: list[str],
        n_frames: int,
        mirror: Storage | None = None,
        out_key: str = "",
    ):
        self.dir = Path(out_dir)
        self.stems = list(stems)
        self.n_frames = n_frames
        self.channels = 2 * len(stems)
        self.header = float_wav_header(n_frames, self.channels)
        self.path = self.dir / PREFIX_NAME
        self.mirror, self.out_key = mirror, out_key
        self.pieces: list[int] = []
        self.ready = self._reopen()

    def _reopen(self) -> int:
        """Frames already final on disk: those of the record when it matches this job and the
        file holds them (bytes past them, from a write cut short, are dropped); else none, and
        the file starts again from its header."""
        record = read_record(self.dir)
        want = self._record(0)
        if self.mirror is not None and (record is None or record.ready_frames == 0):
            record = self._restore(want)
        if record is not None and record.ready_frames > 0:
            same = asdict(record) | {"ready_frames": 0, "pieces": []} == asdict(want)
            self.pieces = list(record.pieces)
            end = len(self.header) + record.ready_frames * self.channels * 4
            final = self.dir / RESULT_NAME
            if same and not self.path.exists() and record.ready_frames == self.n_frames:
                # published already (a retried finalize): the finished file is the result
                if final.exists() and final.stat().st_size == end:
                    self.path = final
                    return record.ready_frames
            if same and self.path.exists() and self.path.stat().st_size >= end:
                with open(self.path, "r+b") as f:
                    f.truncate(end)
                return record.ready_frames
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as f:
            f.write(self.header)
            f.flush()
            os.fsync(f.fileno())
        self._commit(0)
        return 0

    def _restore(self, want: PrefixRecord) -> PrefixRecord | None:
        """The local file rebuilt from the storage's record and stretches (or result.wav):
        another replica's work, carried on here. None when the storage holds none of it."""
        record = read_stored_record(self.mirror, self.out_key)
        if record is None or asdict(record) | {"ready_frames": 0, "pieces": []} != asdict(want):
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        if record.ready_frames == self.n_frames and not record.pieces:
            self.mirror.get_file(result_key(self.out_key), self.dir / RESULT_NAME)
        else:
            with open(self.path, "wb") as f:
                f.write(self.header)
                lo = 0
                for hi in record.pieces:
                    f.write(self.mirror.get_bytes(piece_key(self.out_key, lo, hi)))
                    lo = hi
                f.flush()
                os.fsync(f.fileno())
        write_atomic(self.dir / RECORD_NAME, record_bytes(record))
        return record

    def _record(self, ready: int) -> PrefixRecord:
        return PrefixRecord(
            ready, self.n_frames, self.channels, len(self.header), self.stems, list(self.pieces)
        )

    def _commit(self, ready: int) -> None:
        self.ready = ready
        data = record_bytes(self._record(ready))
        write_atomic(self.dir / RECORD_NAME, data)
        if self.mirror is not None:
            self.mirror.put_bytes(record_key(self.out_key), data)

    def append(self, blocks) -> None:
        """Write `blocks` ((n_stems, 2, k) float32 each, following on from `ready`), then record
        the new end: the data is synced to disk before the record says it is there."""
        end = self.ready
        with open(self.path, "r+b") as f:
            f.seek(len(self.header) + end * self.channels * 4)
            for block in blocks:
                k = block.shape[-1]
                data = np.ascontiguousarray(block.reshape(self.channels, k).T, "<f4").tobytes()
                f.write(data)
                if self.mirror is not None:
                    self.mirror.put_bytes(piece_key(self.out_key, end, end + k), data)
                    self.pieces.append(end + k)
                end += k
            f.flush()
            os.fsync(f.fileno())
        if end > self.n_frames:
            raise ValueError(f"{end} frames written to a result of {self.n_frames}")
        self._commit(end)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """(n_stems, 2, hi - lo) float32 of final frames [lo, hi)."""
        if not 0 <= lo <= hi <= self.ready:
            raise ValueError(f"frames [{lo}, {hi}) are not all final (ready: {self.ready})")
        with open(self.path, "rb") as f:
            f.seek(len(self.header) + lo * self.channels * 4)
            data = f.read((hi - lo) * self.channels * 4)
        frames = np.frombuffer(data, "<f4").reshape(hi - lo, self.channels)
        return frames.T.astype(np.float32).reshape(len(self.stems), 2, hi - lo)

    def publish(self) -> Path:
        """The finished file under its final name (`result.wav`)."""
        if self.ready != self.n_frames:
            raise ValueError(f"only {self.ready} of {self.n_frames} frames are final")
        final = self.dir / RESULT_NAME
        if self.path != final:
            os.replace(self.path, final)
            self.path = final
        if self.mirror is not None and self.pieces:
            # the whole file, then the record without stretches: a reader in the middle of
            # the stretches finds the same bytes in result.wav
            self.mirror.put_file(result_key(self.out_key), final)
            self.pieces = []
            self._commit(self.n_frames)
            self.mirror.delete_prefix(f"{self.out_key}/{PIECES_DIR}")
        return final


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, sync, rename: a reader sees the old or the new content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
