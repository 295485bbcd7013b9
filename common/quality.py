"""Separation quality figures: the simple signal-to-distortion ratio used by tests and benches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Added to both energies so that a silent reference gives a finite figure (0 dB against a silent
# estimate) instead of NaN; far below the energy of any audible signal.
EPS = 1e-12


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Simple SDR in dB: 10 log10(|s|² / |s - ŝ|²) over the whole signal, any shape.

    `reference` s and `estimate` ŝ have the same shape, e.g. (2, n) for one stereo stem; sums
    are taken in float64. No scale or filter is allowed (unlike BSS Eval): a gain error costs.
    A perfect estimate gives about 10 log10(|s|² / EPS), not infinity.
    """
    reference = np.asarray(reference)
    estimate = np.asarray(estimate)
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ")
    signal = np.sum(np.square(reference, dtype=np.float64))
    noise = np.sum(np.square(reference.astype(np.float64) - estimate))
    return float(10 * np.log10((signal + EPS) / (noise + EPS)))


def sdr_per_stem(
    references: np.ndarray, estimates: np.ndarray, names: Sequence[str]
) -> dict[str, float]:
    """(S, ...) stacked stems -> {name: sdr_db} for each of the S stems, in order."""
    if len(names) != len(references) or len(references) != len(estimates):
        raise ValueError(
            f"{len(names)} names for {len(references)} references and {len(estimates)} estimates"
        )
    return {name: sdr_db(r, e) for name, r, e in zip(names, references, estimates, strict=True)}
