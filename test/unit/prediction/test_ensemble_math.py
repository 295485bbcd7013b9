"""How members' waveforms combine: weighted mean and weighted median per sample."""

from __future__ import annotations

import numpy as np
import pytest

from prediction.ensemble_math import combine, weighted_median


@pytest.fixture
def members() -> np.ndarray:
    """(members, stems, 2, frames) of noise."""
    return np.random.default_rng(0).standard_normal((3, 4, 2, 500))


def test_avg_wave_is_the_weighted_mean(members):
    out = combine("avg_wave", np.array([1.0, 2.0, 1.0]), members)
    expected = (members[0] + 2 * members[1] + members[2]) / 4
    assert out.dtype == np.float32 and out.shape == (4, 2, 500)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_median_wave_with_equal_weights_is_np_median(n):
    values = np.random.default_rng(n).standard_normal((n, 2, 2, 300))
    out = combine("median_wave", np.ones(n), values)
    np.testing.assert_allclose(out, np.median(values, axis=0), atol=1e-6)


def test_a_heavier_member_pulls_the_weighted_median():
    # values 0, 1, 10 with weights 1, 1, 3: the cumulative weight passes one half at 10
    values = np.array([0.0, 1.0, 10.0])[:, None]
    assert weighted_median(np.array([1, 1, 3]) / 5, values)[0] == 10.0
    # weights 2, 1, 1: half is reached exactly at 0 -> mean of 0 and 1
    assert weighted_median(np.array([2, 1, 1]) / 4, values)[0] == 0.5
    # one member of more than half the weight wins wherever it lies
    rng = np.random.default_rng(1)
    block = rng.standard_normal((3, 1000))
    np.testing.assert_array_equal(weighted_median(np.array([0.2, 0.6, 0.2]), block), block[1])


def test_median_resists_one_member_gone_wrong(members):
    wrong = members.copy()
    wrong[2] = 100.0
    median = combine("median_wave", np.ones(3), wrong)
    assert np.abs(median).max() < 10  # the mean would be pulled to ~33
    assert np.abs(combine("avg_wave", np.ones(3), wrong)).min() > 20


def test_bad_calls_say_why(members):
    with pytest.raises(ValueError, match="avg_wave, median_wave"):
        combine("max_wave", np.ones(3), members)
    with pytest.raises(ValueError, match="3 members, 2 weights"):
        combine("avg_wave", np.ones(2), members)
