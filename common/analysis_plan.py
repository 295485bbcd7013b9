"""Where a track's analysis windows lie: the one plan the gateway and the fuser share."""

from __future__ import annotations

from common.constants import ANALYSIS_FRAME_HOP, ANALYSIS_WINDOW, SAMPLE_RATE


def hop_samples(hop_s: float) -> int:
    """The analysis hop in samples, rounded down to the frame grid (at least one frame, at
    most a window)."""
    frames = max(1, int(hop_s * SAMPLE_RATE) // ANALYSIS_FRAME_HOP)
    return min(ANALYSIS_WINDOW, frames * ANALYSIS_FRAME_HOP)


def track_frames(n_samples: int) -> int:
    """Frames of the analysis grid over n samples at 44.1 kHz: librosa's centred frames at
    22.05 kHz, `1 + ceil(n / 2) // 512`."""
    return 1 + -(-n_samples // 2) // (ANALYSIS_FRAME_HOP // 2)


def window_bounds(n_samples: int, hop: int, window: int = ANALYSIS_WINDOW) -> list[tuple[int, int]]:
    """`[start, stop)` of every analysis window of a track of `n_samples`: one every `hop`
    samples, each `window` long or cut at the track's end."""
    return [(start, min(n_samples, start + window)) for start in range(0, n_samples, hop)]
