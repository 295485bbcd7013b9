"""The whole track's BS.1770 integrated loudness, measured window by window.

pyloudnorm measures a signal it holds whole; a 20-minute song is measured here in analysis
windows instead, so memory stays flat. Each window K-weights its audio (pyloudnorm's filters,
run over the real audio before the window so they have settled) and sums the squares of its
own span per 100 ms step of the track; the steps add up across windows exactly, and
`integrated_from_steps` gates the 400 ms blocks as BS.1770-4 (and pyloudnorm) do. The test
shows the result equal to pyloudnorm's on the whole signal.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pyloudnorm
from scipy.signal import lfilter

from common.constants import LOUDNESS_STEP, SAMPLE_RATE

BLOCK_STEPS = 4  # a 400 ms gating block is four 100 ms steps (75 % overlap)
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
K_OFFSET = -0.691  # dB: BS.1770's constant, so a 1 kHz sine reads its level


@lru_cache(maxsize=2)
def k_weighting(sample_rate: int = SAMPLE_RATE) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """pyloudnorm's K-weighting stages (high shelf, then high pass) as (b, a, gain)."""
    meter = pyloudnorm.Meter(sample_rate)
    return [(f.b, f.a, f.passband_gain) for f in meter._filters.values()]


def step_sums(audio: np.ndarray, own_start: int, own_length: int, track_start: int) -> np.ndarray:
    """K-weighted sums of squares over both channels of float32 `(2, m)` audio, per 100 ms step.

    `audio[:, own_start : own_start + own_length]` is the span measured, track samples from
    `track_start`; the audio before it only settles the filters. Returns `(n_steps,)` for the
    track steps `track_start // LOUDNESS_STEP` ... that the span touches (partial sums at its
    ends, which the next window's sums complete).
    """
    x = np.asarray(audio[:, : own_start + own_length], dtype=np.float64)
    for b, a, gain in k_weighting():
        x = gain * lfilter(b, a, x, axis=-1)
    energy = np.square(x[:, own_start:]).sum(axis=0)
    first = track_start // LOUDNESS_STEP
    last = (track_start + own_length - 1) // LOUDNESS_STEP
    edges = np.arange(first, last + 2) * LOUDNESS_STEP - track_start
    edges = np.clip(edges, 0, own_length)
    cumulative = np.concatenate([[0.0], np.cumsum(energy)])
    return cumulative[edges[1:]] - cumulative[edges[:-1]]


def integrated_from_steps(steps: np.ndarray, n_samples: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS) of a track from its `(n_steps,)` 100 ms sums.

    The blocks are those pyloudnorm takes: 400 ms every 100 ms, round((duration - 0.4) / 0.1)
    + 1 of them. None when the track is shorter than one block or all are gated out.
    """
    block = BLOCK_STEPS * LOUDNESS_STEP
    if n_samples < block:
        return None
    n_blocks = int(round((n_samples / SAMPLE_RATE - block / SAMPLE_RATE) / 0.1)) + 1
    padded = np.zeros(n_blocks + BLOCK_STEPS)
    padded[: min(len(steps), len(padded))] = steps[: len(padded)]
    sums = np.convolve(padded, np.ones(BLOCK_STEPS), mode="valid")[:n_blocks]
    z = sums / block  # mean square per channel, summed over the two channels (G = 1 each)
    with np.errstate(divide="ignore"):
        loudness = K_OFFSET + 10.0 * np.log10(z)
    above = z[loudness >= ABSOLUTE_GATE_LUFS]
    if above.size == 0:
        return None
    relative = K_OFFSET + 10.0 * math.log10(float(above.mean())) + RELATIVE_GATE_LU
    gated = z[(loudness > ABSOLUTE_GATE_LUFS) & (loudness > relative)]
    if gated.size == 0:
        return None
    return K_OFFSET + 10.0 * math.log10(float(gated.mean()))
