"""Decoded blocks of any layout and rate in, float32 stereo at 44.1 kHz out, a block at a time.

`StereoSink` takes (frames, channels) float32 blocks as a decoder hands them on, cleans them of
NaN/inf, downmixes them to [L, R] and resamples them with soxr's streaming resampler; what comes
out goes to a `FrameOutput`: `MemoryFrames` keeps it (one (2, n) array at the end) and
`PlanarFileFrames` writes it to a float32 (2, n) file as it comes, so memory stays that of a
block whatever the song's length. Both see the same blocks from the same resampler, so the file
holds exactly the samples the array would.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import soxr

from common.constants import SAMPLE_RATE, WIRE_DTYPE
from common.errors import StorageError

BLOCK_VALUES = 1 << 17  # source samples converted at a time: ~1.5 s of stereo at 44.1 kHz

_M3DB = 1.0 / math.sqrt(2.0)  # -3 dB: ITU-R BS.775 gain of centre and surrounds in a downmix
DEFAULT_LAYOUTS = {  # WAVE/SMPTE order of a file that names no layout
    3: ("FL", "FR", "FC"),
    4: ("FL", "FR", "BL", "BR"),
    5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}
_SIDE_SPEAKERS = ("BL", "SL", "TFL", "TBL", "WL", "SDL", "TSL", "BFL")  # each with its R twin
_CENTRE_SPEAKERS = ("FC", "BC", "TC", "TFC", "TBC", "BFC")
_STEREO_GAINS: dict[str, tuple[float, float]] = {  # speaker -> (gain into L, gain into R)
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FLC": (1.0, 0.0),  # FFmpeg's default downmix takes the inner fronts at full level too
    "FRC": (0.0, 1.0),
    "LFE": (0.0, 0.0),  # dropped, as the ITU downmix does: music carries its bass in L/R
    "LFE2": (0.0, 0.0),
    **{name: (_M3DB, 0.0) for name in _SIDE_SPEAKERS},
    **{name[:-1] + "R": (0.0, _M3DB) for name in _SIDE_SPEAKERS},
    **{name: (_M3DB, _M3DB) for name in _CENTRE_SPEAKERS},
}


def stereo_downmix_matrix(names: Sequence[str]) -> np.ndarray:
    """(2, channels) float32 gains from channels named as FFmpeg names them (FL, FR, FC, LFE,
    BL, ...) to [L, R]: mono is duplicated, stereo kept, 5.1 mixed the ITU way
    (L = FL + 0.707 FC + 0.707 BL, LFE dropped). Unnamed channels take the default layout of
    their count; beyond 8 unnamed channels, even ones go left and odd ones right, averaged."""
    count = len(names)
    if count == 1:
        return np.ones((2, 1), np.float32)
    if count == 2:
        return np.eye(2, dtype=np.float32)
    if not any(name in _STEREO_GAINS for name in names):
        names = DEFAULT_LAYOUTS.get(count, ())
    if not names:
        matrix = np.zeros((2, count), np.float32)
        matrix[0, 0::2] = 1.0 / len(range(0, count, 2))
        matrix[1, 1::2] = 1.0 / len(range(1, count, 2))
        return matrix
    # A speaker we do not know sits somewhere between the two: both sides at -3 dB.
    gains = [_STEREO_GAINS.get(name, (_M3DB, _M3DB)) for name in names]
    return np.asarray(gains, np.float32).T.copy()


class FrameOutput(Protocol):
    """Where converted stereo goes: `write` (k, 2) float32 blocks in track order, then either
    `finish` (the frames written) or `discard` (nothing kept)."""

    frames: int

    def write(self, stereo: np.ndarray) -> None: ...

    def discard(self) -> None: ...


class MemoryFrames:
    """Keeps the blocks; `finish()` joins them into one (2, n) float32 C-contiguous array."""

    def __init__(self) -> None:
        self.frames = 0
        self._blocks: list[np.ndarray] = []

    def write(self, stereo: np.ndarray) -> None:
        # transposed a block at a time: cache-friendly, unlike one big .T at the end
        self._blocks.append(np.ascontiguousarray(stereo.T))
        self.frames += len(stereo)

    def finish(self) -> np.ndarray:
        samples = np.empty((2, self.frames), np.float32)
        start = 0
        for block in self._blocks:
            samples[:, start : start + block.shape[1]] = block
            start += block.shape[1]
        self._blocks = []
        return samples

    def discard(self) -> None:
        self._blocks = []


class PlanarFileFrames:
    """Writes the stereo to `dest` as little-endian float32 (2, n): all of L, then all of R.

    n is known only at the end (a stream's length is a guess until decoded), so L goes to the
    file being made and R to a side file, appended to it by `finish()` (1 MB at a time); the
    file appears under `dest` only complete (renamed into place).
    Disk errors raise `StorageError`."""

    def __init__(self, dest: Path) -> None:
        self.dest = Path(dest)
        self.frames = 0
        self._left_path = self.dest.with_name(f".{self.dest.name}.part")
        self._right_path = self.dest.with_name(f".{self.dest.name}.right.part")
        try:
            self._left = open(self._left_path, "wb")  # noqa: SIM115 - closed by finish/discard
            self._right = open(self._right_path, "w+b")  # noqa: SIM115
        except OSError as e:
            raise StorageError(f"cannot store the decoded audio: {e}") from e

    def write(self, stereo: np.ndarray) -> None:
        try:
            self._left.write(np.ascontiguousarray(stereo[:, 0], WIRE_DTYPE).data)
            self._right.write(np.ascontiguousarray(stereo[:, 1], WIRE_DTYPE).data)
        except OSError as e:
            self.discard()
            raise StorageError(f"cannot store the decoded audio: {e}") from e
        self.frames += len(stereo)

    def finish(self) -> int:
        """Joins L and R into `dest`; the number of frames n."""
        try:
            self._right.seek(0)
            self._left.flush()
            shutil.copyfileobj(self._right, self._left, 1 << 20)
            self._left.close()
            self._right.close()
            os.replace(self._left_path, self.dest)
        except OSError as e:
            raise StorageError(f"cannot store the decoded audio: {e}") from e
        finally:
            self.discard()
        return self.frames

    def discard(self) -> None:
        self._left.close()
        self._right.close()
        self._left_path.unlink(missing_ok=True)
        self._right_path.unlink(missing_ok=True)


class StereoSink:
    """Collects (frames, channels) float32 blocks of one stream and turns them into
    float32 stereo at SAMPLE_RATE in `out`: NaN/inf -> 0, downmix, soxr resampling (HQ). The
    rate and the layout may change mid-stream (chained MP3s); each rate gets its own resampler."""

    def __init__(self, out: FrameOutput) -> None:
        self.out = out
        self.source_seconds = 0.0  # decoded so far, at the source rate
        self.source_rate = 0  # Hz, of the first block
        self.source_channels = 0
        self.nonfinite = 0  # sample values replaced by 0
        self.rate_changes = 0
        self._key: tuple[int, tuple[str, ...]] | None = None
        self._matrix = np.eye(2, dtype=np.float32)
        self._resampler: soxr.ResampleStream | None = None
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0

    def add(self, block: np.ndarray, rate: int, names: tuple[str, ...]) -> None:
        """block: (frames, channels) float32 at `rate` Hz, channels named in `names`."""
        if not len(block):
            return
        if (rate, names) != self._key:
            self._switch(rate, names)
        self.source_seconds += len(block) / rate
        self._pending.append(block)
        self._pending_frames += len(block)
        # Counted in values, not frames: a damaged header may claim a thousand channels.
        if self._pending_frames * len(names) >= BLOCK_VALUES:
            self._convert_pending()

    def flush(self) -> None:
        """Converts what is pending and drains the resampler: `out` then holds every frame."""
        self._convert_pending()
        self._flush_resampler()

    def _switch(self, rate: int, names: tuple[str, ...]) -> None:
        self._convert_pending()  # with the old matrix and resampler
        if self._key is None:
            self.source_rate, self.source_channels = rate, len(names)
        if self._key is None or self._key[0] != rate:
            self.rate_changes += self._key is not None
            self._flush_resampler()
            self._resampler = (
                None
                if rate == SAMPLE_RATE
                else soxr.ResampleStream(rate, SAMPLE_RATE, 2, dtype="float32", quality="HQ")
            )
        self._key = (rate, names)
        self._matrix = stereo_downmix_matrix(names)

    def _convert_pending(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending)  # a copy we own, C-contiguous
        self._pending, self._pending_frames = [], 0
        bad = ~np.isfinite(block)
        if bad.any():  # NaN would smear through the resampler and the separator
            self.nonfinite += int(bad.sum())
            block[bad] = 0.0
        if block.shape[1] != 2:
            block = block @ self._matrix.T
        self._emit(block, last=False)

    def _flush_resampler(self) -> None:
        if self._resampler is not None:
            self._emit(np.zeros((0, 2), np.float32), last=True)

    def _emit(self, stereo: np.ndarray, last: bool) -> None:
        if self._resampler is not None:
            stereo = self._resampler.resample_chunk(stereo, last=last)
        if len(stereo):
            self.out.write(stereo)
