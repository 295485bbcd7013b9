import numpy as np
import pytest

from common.quality import sdr_db, sdr_per_stem


def tone(n: int = 1000) -> np.ndarray:
    t = np.arange(n) / 100
    return np.stack([np.sin(t), np.cos(t)]).astype(np.float32)


def test_known_ratios():
    s = tone()
    assert sdr_db(s, s / 2) == pytest.approx(10 * np.log10(4), abs=1e-6)  # |s|² / |s/2|²
    assert sdr_db(s, np.zeros_like(s)) == pytest.approx(0.0, abs=1e-6)
    assert sdr_db(s, -s) == pytest.approx(10 * np.log10(1 / 4), abs=1e-6)


def test_perfect_estimate_is_large_and_finite():
    s = tone()
    assert np.isfinite(sdr_db(s, s)) and sdr_db(s, s) > 100


def test_silence_gives_no_nan():
    z = np.zeros((2, 50), np.float32)
    assert sdr_db(z, z) == pytest.approx(0.0)
    assert sdr_db(z, tone(50)) < -100
    assert sdr_db(tone(50), z) == pytest.approx(0.0, abs=1e-6)


def test_float64_sums_of_float32_input():
    s = np.full((2, 1_000_000), 0.1, np.float32)
    assert sdr_db(s, s * np.float32(0.9)) == pytest.approx(20.0, abs=1e-3)  # |0.1 / 0.01|²


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        sdr_db(tone(10), tone(11))


def test_per_stem_keeps_the_order():
    refs = np.stack([tone(), tone()])
    ests = np.stack([tone() / 2, tone()])
    out = sdr_per_stem(refs, ests, ["a", "b"])
    assert list(out) == ["a", "b"] and out["a"] == pytest.approx(6.0206, abs=1e-3)
    assert out["b"] > 100
    with pytest.raises(ValueError):
        sdr_per_stem(refs, ests, ["a"])
