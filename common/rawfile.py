"""A float32 array on disk read a frame range at a time: memory stays that of the range.

(`np.memmap` would do the reading, but every page it touches stays mapped and counts against
the process until the map is dropped: fusing a 10-minute song through maps grew the fuser to
over a gigabyte.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.constants import WIRE_DTYPE


class RawArrayFile:
    """Little-endian float32 `(*lead, n)` in C order at `path`; `f[..., lo:hi]` reads frames."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path = Path(path)
        self.shape = shape
        rows = int(np.prod(shape[:-1]))
        expected = rows * shape[-1] * 4
        size = self.path.stat().st_size
        if size != expected:
            raise ValueError(f"{self.path} holds {size} bytes, shape {shape} needs {expected}")
        self._rows = rows

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple) or key[0] not in (Ellipsis, slice(None)):
            raise TypeError("index a RawArrayFile as f[:, lo:hi] or f[..., lo:hi]")
        lo, hi, step = key[-1].indices(self.shape[-1])
        if step != 1:
            raise TypeError("only contiguous frame ranges can be read")
        return self.read(lo, hi)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """(*lead, hi - lo) float32 of frames [lo, hi)."""
        n, width = self.shape[-1], max(0, hi - lo)
        out = np.empty((self._rows, width), dtype=WIRE_DTYPE)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for row in range(self._rows):
                data = os.pread(fd, width * 4, (row * n + lo) * 4)
                out[row] = np.frombuffer(data, WIRE_DTYPE)
        finally:
            os.close(fd)
        return out.astype(np.float32, copy=False).reshape(*self.shape[:-1], width)

    def blocks(self, frames: int):
        """Yield (lo, block) over the whole array, `frames` at a time."""
        for lo in range(0, self.shape[-1], frames):
            yield lo, self.read(lo, min(self.shape[-1], lo + frames))
