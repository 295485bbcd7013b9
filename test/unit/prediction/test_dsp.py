"""The embedded dsp separator: shapes, edge inputs, exact sums, quality and chunk locality."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import ndimage

from common.chunks import center_trim, chunk_window, overlap_add, plan_chunks
from common.constants import DSP_STEMS, SAMPLE_RATE
from common.quality import sdr_db
from prediction.dsp import istft, median_filter, separate_dsp, stem_masks, stft
from test.songgen import make_song, mixture

FALCON = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "stems" / "falcon69"
SUM_TOLERANCE = 1e-4  # peak |sum of stems - mixture|
MARGIN_DB = 1.0  # how far above the trivial mixture/4 estimate every stem must be
# Chunked vs whole-track separation of a 16 s song, min over stems, as measured: 26.1 dB without
# `origin` (the chunks' STFT frame grids differ), 148 dB (float rounding) with it.
CHUNK_FLOOR_DB = {False: 23.0, True: 100.0}


def stereo(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (2, n)).astype(np.float32)


@pytest.fixture(scope="module")
def song() -> tuple[dict[str, np.ndarray], np.ndarray]:
    stems = make_song(seconds=8.0, seed=0)
    return stems, mixture(stems)


def test_generated_song_is_deterministic_and_below_full_scale():
    a, b = make_song(seconds=2.0, seed=4), make_song(seconds=2.0, seed=4)
    assert list(a) == list(DSP_STEMS)
    assert all(np.array_equal(a[k], b[k]) and a[k].shape == (2, 2 * SAMPLE_RATE) for k in a)
    assert 0.5 < np.abs(mixture(a)).max() < 1.0
    assert not np.array_equal(a["vocals"], make_song(seconds=2.0, seed=5)["vocals"])
    assert make_song(seconds=1.0, sample_rate=8000)["drums"].shape == (2, 8000)


@pytest.mark.parametrize("n", [1, 2, 100, 3071, 4096, 5000, SAMPLE_RATE])
def test_shape_dtype_and_exact_sum_for_any_length(n):
    mix = stereo(n)
    stems = separate_dsp(mix)
    assert stems.shape == (len(DSP_STEMS), 2, n) and stems.dtype == np.float32
    assert np.isfinite(stems).all()
    assert np.abs(stems.sum(axis=0) - mix).max() <= SUM_TOLERANCE


def test_empty_input_gives_empty_stems():
    assert separate_dsp(np.zeros((2, 0), np.float32)).shape == (4, 2, 0)


@pytest.mark.parametrize("n", [1, 3000, 3 * SAMPLE_RATE])
def test_digital_silence_gives_silent_stems(n):
    stems = separate_dsp(np.zeros((2, n), np.float32))
    assert np.isfinite(stems).all() and not stems.any()


@pytest.mark.parametrize("shape", [(1, 100), (100,), (3, 100)])
def test_rejects_what_is_not_stereo(shape):
    with pytest.raises(ValueError, match="stereo"):
        separate_dsp(np.zeros(shape, np.float32))


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000])
def test_other_sample_rates(rate):
    mix = stereo(rate // 2)
    stems = separate_dsp(mix, sample_rate=rate)
    assert stems.shape == (4, 2, rate // 2)
    assert np.abs(stems.sum(axis=0) - mix).max() <= SUM_TOLERANCE


@pytest.mark.parametrize("n, origin", [(1, 0), (777, 0), (20000, 0), (20000, 5), (20000, -88200)])
@pytest.mark.parametrize("n_fft", [256, 4096])
def test_stft_round_trip(n, origin, n_fft):
    x = stereo(n)
    spec = stft(x, n_fft, origin)
    assert spec.dtype == np.complex64 and spec.shape[1] == n_fft // 2 + 1
    np.testing.assert_allclose(istft(spec, n_fft, n, origin), x, atol=2e-6)


@pytest.mark.parametrize("size, axis", [(17, 1), (7, 0), (1, 1)])
def test_median_filter_matches_scipy(size, axis):
    x = np.abs(stereo(300 * 41).reshape(300, 82))
    expected = ndimage.median_filter(x, size=(1, size) if axis else (size, 1), mode="constant")
    np.testing.assert_array_equal(median_filter(x, size, axis, block=64), expected)


def test_masks_are_soft_and_sum_to_one(song):
    _, mix = song
    masks = stem_masks(stft(mix, 4096), SAMPLE_RATE, 4096)
    assert masks.shape[0] == 4 and masks.min() >= 0 and masks.max() <= 1
    np.testing.assert_allclose(masks.sum(axis=0), 1.0, atol=1e-5)


def test_stems_sum_to_the_mixture(song):
    _, mix = song
    assert np.abs(separate_dsp(mix).sum(axis=0) - mix).max() <= SUM_TOLERANCE


def assert_beats_trivial(truth: dict[str, np.ndarray], mix: np.ndarray) -> None:
    stems = separate_dsp(mix)
    for i, name in enumerate(DSP_STEMS):
        sdr, trivial = sdr_db(truth[name], stems[i]), sdr_db(truth[name], mix / 4)
        assert sdr > trivial + MARGIN_DB, f"{name}: {sdr:.2f} dB, mixture/4 gives {trivial:.2f}"


@pytest.mark.parametrize("seed", [0, 1])
def test_beats_the_trivial_estimate_on_a_generated_song(seed):
    truth = make_song(seconds=8.0, seed=seed)
    assert_beats_trivial(truth, mixture(truth))


def test_beats_the_trivial_estimate_on_falcon69():
    if not FALCON.is_dir():
        pytest.skip(f"shared test data is absent ({FALCON})")
    truth = {name: sf.read(FALCON / f"{name}.flac", dtype="float32")[0].T for name in DSP_STEMS}
    mix = sf.read(FALCON / "mixture.flac", dtype="float32")[0].T
    assert_beats_trivial(truth, np.ascontiguousarray(mix))


@pytest.mark.parametrize("aligned", [False, True])
def test_chunked_with_context_agrees_with_whole_track(aligned):
    """Two 10 s halves of a 16 s song, 2 s of real context each side, cross-faded over 2 s."""
    mix = mixture(make_song(seconds=16.0, seed=2))
    whole = separate_dsp(mix)
    context = 2 * SAMPLE_RATE
    plan = plan_chunks(mix.shape[-1], 10 * SAMPLE_RATE, 0.2, lambda length: length + 2 * context)
    assert len(plan.chunks) == 2
    pieces = []
    for chunk in plan.chunks:
        origin = chunk.window_start if aligned else 0
        window_out = separate_dsp(chunk_window(mix, chunk), origin=origin)
        pieces.append((chunk, center_trim(window_out, chunk.length)))
    fused = overlap_add(pieces, plan, (4, 2))
    agreement = [sdr_db(whole[i], fused[i]) for i in range(4)]
    assert min(agreement) >= CHUNK_FLOOR_DB[aligned], agreement
