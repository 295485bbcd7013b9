"""How an ensemble's members' waveforms become one: small pure functions, arrays in and out.

`avg_wave` is the weighted mean per sample, `median_wave` the weighted median per sample (UVR
and MSST offer both; MSST found `avg_wave` never worse, the median resists one member that goes
wrong on a passage). With equal weights the weighted median is `np.median` (the mean of the two
middle values for an even count).
"""

from __future__ import annotations

import numpy as np

from common.interfaces import ENSEMBLE_METHODS as METHODS

HALF_TOLERANCE = 1e-9  # cumulative weight this close to one half counts as exactly half


def combine(method: str, weights: np.ndarray, members: np.ndarray) -> np.ndarray:
    """members (n_members, n_stems, 2, frames), weights (n_members,) > 0
    -> (n_stems, 2, frames) float32."""
    weights = np.asarray(weights, dtype=np.float64)
    if members.shape[0] != weights.shape[0]:
        raise ValueError(f"{members.shape[0]} members, {weights.shape[0]} weights")
    weights = weights / weights.sum()
    if method == "avg_wave":
        out = np.tensordot(weights, members.astype(np.float64, copy=False), axes=1)
    elif method == "median_wave":
        out = weighted_median(weights, members)
    else:
        raise ValueError(f"unknown ensemble method {method!r}; choose from {', '.join(METHODS)}")
    return out.astype(np.float32)


def weighted_median(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per element along axis 0: the value where the sorted members' cumulative weight reaches
    one half; where it reaches exactly one half, the mean of that value and the next (so equal
    weights give `np.median`). weights (n,) summing to 1, values (n, ...) -> (...)."""
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0).astype(np.float64, copy=False)
    cumulative = np.cumsum(weights[order], axis=0)
    k = np.argmax(cumulative >= 0.5 - HALF_TOLERANCE, axis=0)[None]
    low = np.take_along_axis(ordered, k, axis=0)[0]
    high = np.take_along_axis(ordered, np.minimum(k + 1, len(weights) - 1), axis=0)[0]
    at_half = np.abs(np.take_along_axis(cumulative, k, axis=0)[0] - 0.5) <= HALF_TOLERANCE
    return np.where(at_half, (low + high) / 2, low)
