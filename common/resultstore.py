"""A job's growing result in object storage, as the fuser publishes it and a gateway reads it.

On local disk the fuser appends to `<result>/prefix.wav` and the gateway reads that file up to
the record (`common.resultfile`). In a bucket an object cannot grow, so each block of frames
that becomes final is published as an object of its own, `<result>/prefix/<lo>-<hi>.f32`
(the bytes it has in the WAV's data, interleaved float32), before the record object
`<result>/prefix.json` says so (its `pieces`: the stretches' end frames). Finished, the whole
file is `<result>/result.wav`, and the stretches are removed; the record stays. A reader
(`open_result_bytes`) sees the bytes of the WAV as one file either way: a stretch removed under
it is read from result.wav instead, at the same offset, with the same bits.
"""

from __future__ import annotations

import bisect
import io
import json
from dataclasses import asdict
from typing import BinaryIO

from common.resultfile import PREFIX_NAME, RECORD_NAME, RESULT_NAME, PrefixRecord
from common.storage import READ_BUFFER, SeekableReader, Storage

PIECES_DIR = "prefix"


def piece_key(out_key: str, lo: int, hi: int) -> str:
    return f"{out_key}/{PIECES_DIR}/{lo:012d}-{hi:012d}.f32"


def record_key(out_key: str) -> str:
    return f"{out_key}/{RECORD_NAME}"


def result_key(out_key: str) -> str:
    return f"{out_key}/{RESULT_NAME}"


def read_stored_record(store: Storage, out_key: str) -> PrefixRecord | None:
    """The record in the storage (None: none, or unreadable: nothing is final then)."""
    try:
        return PrefixRecord(**json.loads(store.get_bytes(record_key(out_key))))
    except (OSError, ValueError, TypeError):
        return None


def record_bytes(record: PrefixRecord) -> bytes:
    return json.dumps(asdict(record)).encode()


def open_result_bytes(store: Storage, out_key: str, record: PrefixRecord | None) -> BinaryIO:
    """The result WAV's bytes, seekable: result.wav once published; while the job runs the
    growing file (local disk) or the header and the published stretches (object storage)."""
    names = (RESULT_NAME,) if record is None else (PREFIX_NAME, RESULT_NAME)
    if store.remote and record is not None and record.pieces:
        raw = StretchReader(store, out_key, record)
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)
    for name in names:
        try:
            return store.open(f"{out_key}/{name}")
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"{out_key}/{RESULT_NAME}")


class StretchReader(SeekableReader):
    """The WAV's bytes [data_offset, data_offset + pieces[-1] frames) from the stretch objects
    (the header is never read through it: a reader writes its own)."""

    def __init__(self, store: Storage, out_key: str, record: PrefixRecord):
        self.store, self.out_key, self.record = store, out_key, record
        self.frame_bytes = 4 * record.channels
        self.starts = [0, *record.pieces[:-1]]
        super().__init__(record.data_offset + record.pieces[-1] * self.frame_bytes)
        self.finished = False  # the stretches are gone: result.wav holds the same bytes

    def readinto(self, buffer) -> int:
        if self.pos >= self.length or self.pos < self.record.data_offset:
            return 0
        n = min(len(buffer), self.length - self.pos)
        data = self._read(self.pos, n)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def _read(self, pos: int, n: int) -> bytes:
        if not self.finished:
            frame = (pos - self.record.data_offset) // self.frame_bytes
            i = bisect.bisect_right(self.starts, frame) - 1
            lo, hi = self.starts[i], self.record.pieces[i]
            within = pos - self.record.data_offset - lo * self.frame_bytes
            take = min(n, (hi - lo) * self.frame_bytes - within)
            try:
                return self.store.read_range(piece_key(self.out_key, lo, hi), within, take)
            except FileNotFoundError:
                self.finished = True
        return self.store.read_range(result_key(self.out_key), pos, n)
