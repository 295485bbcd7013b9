"""What every separator offers the channel predictor, and the embedded `dsp` one.

A separator maps a batch of context-padded windows to stems of the same length:
`(batch, 2, window)` -> `(batch, n_stems, 2, window)` float32. The predictor centre-trims the
result to each chunk; the job plans the windows with `padded_length` (see `common.chunks`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from common.constants import DSP_STEMS, SAMPLE_RATE
from common.interfaces import ChunkSpec, SeparatorInfo

DSP_SEGMENT_S = 10.0  # seconds of centre per chunk
# Real neighbouring audio on each side: the masks look ~0.3 s away, so with 1 s of context and
# STFT frames aligned to the track (see `separate_chunks`) chunks equal the whole-track result.
DSP_CONTEXT_S = 1.0
DSP_OVERLAP = 0.25


class Separator(ABC):
    info: SeparatorInfo
    device: str = "cpu"
    # How many requests may run at once in one process: numpy code runs one per core,
    # a torch model already uses every core (and a GPU one batch at a time).
    concurrency: int = 1

    def preferred_batch(self) -> int:
        """Windows per request this separator runs fastest with on its device."""
        return 1

    @abstractmethod
    def padded_length(self, length: int) -> int:
        """Frames of window the model needs for a chunk of `length` frames."""

    @abstractmethod
    def separate(self, windows: np.ndarray) -> np.ndarray:
        """(batch, 2, window) float32 -> (batch, n_stems, 2, window) float32."""

    def separate_with_warnings(self, windows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """`separate`, plus warnings for the job (e.g. a device fallback)."""
        return self.separate(windows), []

    def member_weights(self) -> list[list[float]]:
        """The per-stem weights of each member of a bag of models; [] for a single model."""
        return []

    def separate_chunks(
        self, windows: np.ndarray, chunks: list[ChunkSpec]
    ) -> tuple[np.ndarray, list[str]]:
        """What the predictor calls: the windows with the chunks they belong to, for
        separators whose result depends on where a window sits in the track."""
        return self.separate_with_warnings(windows)


class DspSeparator(Separator):
    """Classical signal processing (see `prediction.dsp`); needs no weights."""

    def __init__(self, cores: int, batch_size: int = 1):
        self.concurrency = max(1, cores)
        self.batch_size = max(1, batch_size)
        self.info = dsp_info()

    def preferred_batch(self) -> int:
        return self.batch_size

    def padded_length(self, length: int) -> int:
        return length + 2 * int(DSP_CONTEXT_S * SAMPLE_RATE)

    def separate(self, windows: np.ndarray) -> np.ndarray:
        from prediction.dsp import separate_dsp

        return np.stack([separate_dsp(w, SAMPLE_RATE) for w in windows])

    def separate_chunks(
        self, windows: np.ndarray, chunks: list[ChunkSpec]
    ) -> tuple[np.ndarray, list[str]]:
        from prediction.dsp import separate_dsp

        # origin: the window's place in the track, so its STFT frames fall on the whole
        # track's frame grid and overlapping chunks compute the same values.
        stems = [
            separate_dsp(w, SAMPLE_RATE, origin=c.window_start)
            for w, c in zip(windows, chunks, strict=True)
        ]
        return np.stack(stems), []


def dsp_info() -> SeparatorInfo:
    return SeparatorInfo(
        name="dsp",
        family="dsp",
        stems=list(DSP_STEMS),
        available=True,
        reason="embedded signal-processing separator: needs no weights",
        segment=int(DSP_SEGMENT_S * SAMPLE_RATE),
        overlap=DSP_OVERLAP,
        normalise=False,
    )
