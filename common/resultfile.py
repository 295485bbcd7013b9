"""A job's result file as the fuser grows it and the gateway reads it while the job runs.

The result is a 32-bit float WAV whose header is written by hand, so its layout is fixed and
known: `float_wav_header(...)` bytes, then interleaved little-endian float32 frames (channels =
stems x [L, R]). The fuser writes the header of the finished length first and appends frames as
they become final (`<result dir>/prefix.wav`); `<result dir>/prefix.json` (a `PrefixRecord`,
replaced atomically after the frames are on disk) says how many are. Finished, the file is
renamed `result.wav`, the record stays. The gateway serves any final frame range with a header
of its own. Past the 4 GB RIFF limit the header is RF64 (EBU Tech 3306), as libsndfile's.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from common.constants import SAMPLE_RATE

PREFIX_NAME = "prefix.wav"  # the result while it grows
RECORD_NAME = "prefix.json"
RESULT_NAME = "result.wav"  # the finished result (the same file, renamed)


@dataclass(frozen=True)
class PrefixRecord:
    """`ready_frames` of `n_frames` are final in the WAV's data: `channels` float32 samples a
    frame from byte `data_offset` (stems x [L, R], stems in `stems` order)."""

    ready_frames: int
    n_frames: int
    channels: int
    data_offset: int
    stems: list[str]
    # in object storage only: the end frames of the stretches published so far, each its own
    # object (`common.resultstore`); on local disk the frames are in the growing file
    pieces: list[int] = field(default_factory=list)


def read_record(result_dir: Path) -> PrefixRecord | None:
    """The record, or None when there is none (or it is unreadable: nothing is final then)."""
    try:
        return PrefixRecord(**json.loads((Path(result_dir) / RECORD_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None


_RIFF_LIMIT = 0xFFFF0000  # data bytes beyond which the sizes no longer fit 32 bits
_FLOAT = 3  # WAVE_FORMAT_IEEE_FLOAT
_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_IEEE_FLOAT
_FLOAT_GUID = bytes.fromhex("0300000000001000800000aa00389b71")


def float_wav_header(
    n_frames: int, channels: int, rate: int = SAMPLE_RATE, rf64: bool | None = None
) -> bytes:
    """WAV header for `n_frames` frames of `channels` float32 samples; the data follows it.
    `rf64`: None: RF64 only when the sizes do not fit a RIFF header.

    More than two channels use WAVE_FORMAT_EXTENSIBLE (no speaker positions: a stem per
    channel pair is no surround layout), as the format asks of multi-channel files."""
    if n_frames < 0 or channels < 1:
        raise ValueError(f"bad WAV shape: {n_frames} frames, {channels} channels")
    block_align = 4 * channels
    data_bytes = n_frames * block_align
    if channels > 2:
        fmt = struct.pack(
            "<HHIIHHHHI16s",
            _EXTENSIBLE,
            channels,
            rate,
            rate * block_align,
            block_align,
            32,
            22,
            32,
            0,
            _FLOAT_GUID,
        )
    else:
        fmt = struct.pack(
            "<HHIIHHH", _FLOAT, channels, rate, rate * block_align, block_align, 32, 0
        )
    if rf64 is None:
        rf64 = data_bytes > _RIFF_LIMIT
    fact = b"fact" + struct.pack("<II", 4, min(n_frames, 0xFFFFFFFF))
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + fact
    if not rf64:
        riff_size = 4 + len(chunks) + 8 + data_bytes
        return b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + chunks + data_chunk(data_bytes)
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, 0, data_bytes, n_frames, 0)
    riff_size = 4 + len(ds64) + len(chunks) + 8 + data_bytes
    ds64 = b"ds64" + struct.pack("<IQQQI", 28, riff_size, data_bytes, n_frames, 0)
    return b"RF64" + b"\xff\xff\xff\xff" + b"WAVE" + ds64 + chunks + data_chunk(None)


def data_chunk(data_bytes: int | None) -> bytes:
    """The data chunk's own header; None: its size is in the ds64 chunk (RF64)."""
    return b"data" + struct.pack("<I", 0xFFFFFFFF if data_bytes is None else data_bytes)
