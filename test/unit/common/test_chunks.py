import random

import numpy as np
import pytest

from common.chunks import (
    center_trim,
    chunk_window,
    fade_chunk_input,
    fade_grid,
    fade_overlap_add,
    fade_window,
    overlap_add,
    plan_chunks,
    plan_passes,
    standardisation,
    triangle_weight,
)


def context(c):
    return lambda n: n + 2 * c


@pytest.mark.parametrize("n", [1, 99, 100, 101, 1000, 12345])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_plan_covers_every_frame_like_demucs(n, overlap):
    segment = 100
    plan = plan_chunks(n, segment, overlap, context(7))
    stride = int((1 - overlap) * segment)
    assert [c.offset for c in plan.chunks] == list(range(0, n, stride))
    covered = np.zeros(n, int)
    for c in plan.chunks:
        assert c.length == min(segment, n - c.offset)
        assert c.window_length == c.length + 14
        assert c.window_start == c.offset - 7
        covered[c.offset : c.offset + c.length] += 1
    assert covered.min() >= 1


def test_window_takes_real_neighbours_and_zeros_outside():
    track = np.arange(2 * 50, dtype=np.float32).reshape(2, 50)
    plan = plan_chunks(50, 20, 0.25, context(5))
    first, last = plan.chunks[0], plan.chunks[-1]
    w = chunk_window(track, first)
    assert np.all(w[:, :5] == 0) and np.array_equal(w[:, 5:], track[:, :25])
    w = chunk_window(track, last)
    inside = 50 - last.window_start
    assert np.array_equal(w[:, :inside], track[:, last.window_start :])
    assert np.all(w[:, inside:] == 0)


def test_window_standardises_only_real_samples():
    from common.interfaces import Normalisation

    track = np.ones((2, 30), np.float32)
    chunk = plan_chunks(30, 30, 0.0, context(4)).chunks[0]
    w = chunk_window(track, chunk, Normalisation(mean=1.0, std=2.0))
    assert np.all(w == 0)  # (1 - 1) / 2 inside, zero padding outside
    w = chunk_window(track, chunk, Normalisation(mean=0.5, std=2.0))
    assert np.allclose(w[:, 4:-4], 0.25) and np.all(w[:, :4] == 0)


def test_center_trim_undoes_window_placement():
    plan = plan_chunks(1000, 300, 0.25, lambda n: n + 11)  # odd padding: 5 left, 6 right
    track = np.random.default_rng(0).standard_normal((2, 1000)).astype(np.float32)
    for c in plan.chunks:
        trimmed = center_trim(chunk_window(track, c), c.length)
        assert np.array_equal(trimmed, track[:, c.offset : c.offset + c.length])


def test_triangle_weight_matches_demucs_formula():
    for segment in (10, 11, 441000):
        w = triangle_weight(segment)
        half = segment // 2
        ref = np.concatenate([np.arange(1, half + 1), np.arange(segment - half, 0, -1)])
        assert w.dtype == np.float32 and w.shape == (segment,)
        np.testing.assert_allclose(w, ref / ref.max(), rtol=1e-7)
        assert w.max() == 1.0 and w.min() > 0


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_identity_model_fuses_back_to_the_track(overlap):
    rng = np.random.default_rng(1)
    track = rng.standard_normal((2, 5003)).astype(np.float32)
    plan = plan_chunks(5003, 700, overlap, context(33))
    pieces = [(c, center_trim(chunk_window(track, c), c.length)[None]) for c in plan.chunks]
    fused = overlap_add(pieces, plan, (1, 2))
    np.testing.assert_allclose(fused[0], track, atol=1e-6)


def test_standardisation_like_separate_tensor():
    rng = np.random.default_rng(2)
    track = (rng.standard_normal((2, 4000)) * 0.3 + 0.1).astype(np.float32)
    norm = standardisation(track)
    mono = track.mean(0)
    assert norm.mean == pytest.approx(float(mono.mean()), rel=1e-6)
    assert norm.std == pytest.approx(float(mono.std(ddof=1)) + 1e-8, rel=1e-6)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError):
        plan_chunks(0, 100, 0.25, context(0))
    with pytest.raises(ValueError):
        plan_chunks(10, 100, 1.0, context(0))
    with pytest.raises(ValueError):
        plan_chunks(10, 100, 0.0, lambda n: n - 1)


def test_passes_of_a_shifted_model_draw_their_leads_from_the_seed():
    plans = plan_passes(10_000, 3000, 0.25, context(50), shifts=3, seed=9, max_shift=400)
    rng = random.Random(9)
    assert [p.lead for p in plans] == [400 - rng.randint(0, 400) for _ in range(3)]
    assert all(p.weights is None and {c.member for c in p.chunks} == {None} for p in plans)
    indices = [c.index for p in plans for c in p.chunks]
    assert indices == list(range(len(indices)))
    assert plan_passes(10_000, 3000, 0.25, context(50), shifts=3, seed=9, max_shift=400) == plans


def test_a_bag_with_shifts_gets_passes_per_member_in_member_order():
    """As `apply_model` runs a bag: member 0's shifts, then member 1's, each member alone."""
    weights = [[1.0, 0.0], [0.5, 2.0]]
    plans = plan_passes(
        10_000, 3000, 0.25, context(50), shifts=2, seed=4, max_shift=400, members=weights
    )
    rng = random.Random(4)
    assert [p.lead for p in plans] == [400 - rng.randint(0, 400) for _ in range(4)]
    assert [{c.member for c in p.chunks} for p in plans] == [{0}, {0}, {1}, {1}]
    assert [p.weights for p in plans] == [weights[0], weights[0], weights[1], weights[1]]
    indices = [c.index for p in plans for c in p.chunks]
    assert indices == list(range(len(indices)))
    # without shifts one pass serves the whole bag; a single model has no members
    (whole,) = plan_passes(10_000, 3000, 0.25, context(50), members=weights)
    assert whole.weights is None and {c.member for c in whole.chunks} == {None}
    single = plan_passes(10_000, 3000, 0.25, context(50), shifts=2, members=[[1.0, 1.0]])
    assert all(p.weights is None for p in single)


# --- MSST's fade grid -----------------------------------------------------------------------


def msst_loop(n: int, chunk: int, num_overlap: int, batch_size: int):
    """MSST's `demix` loop (generic mode), transcribed: per chunk, its start in the padded
    track, its real length and its window."""
    step = chunk // num_overlap
    fade = chunk // 10
    border = chunk - step
    total = n + 2 * border if n > 2 * border and border > 0 else n
    base = fade_window(chunk, fade)
    out, batch, i = [], [], 0
    while i < total:
        batch.append((i, min(chunk, total - i)))
        i += step
        if len(batch) >= batch_size or i >= total:
            window = base.copy()
            if i - step == 0:
                window[:fade] = 1
            elif i >= total:
                window[-fade:] = 1
            out += [(start, length, window) for start, length in batch]
            batch = []
    return out


def test_fade_window_is_msst_windowing_array():
    expected = [0, 0.5, 1, 1, 1, 1, 1, 1, 0.5, 0]
    np.testing.assert_allclose(fade_window(10, 3), expected)


@pytest.mark.parametrize("n", [7, 40, 41, 100, 333])
@pytest.mark.parametrize("num_overlap", [1, 2, 4])
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_fade_grid_follows_msst_loop(n, num_overlap, batch_size):
    grid = fade_grid(n, 20, num_overlap, batch_size)
    loop = msst_loop(n, 20, num_overlap, batch_size)
    assert len(grid.starts) == len(loop)
    for k, (start, length, window) in enumerate(loop):
        assert grid.starts[k] == start - grid.pad and grid.lengths[k] == length
        np.testing.assert_array_equal(grid.weight(k), window)


@pytest.mark.parametrize("n", [9, 60, 257])
def test_chunk_inputs_are_the_reflect_padded_track(n):
    track = np.random.default_rng(n).standard_normal((2, n)).astype(np.float32)
    grid = fade_grid(n, 24, 4)
    padded = np.pad(track, ((0, 0), (grid.pad, grid.pad)), mode="reflect")
    for k in range(len(grid.starts)):
        i = grid.starts[k] + grid.pad
        part = padded[:, i : i + 24]
        mode = "reflect" if part.shape[1] > 12 else "constant"
        expected = np.pad(part, ((0, 0), (0, 24 - part.shape[1])), mode=mode)
        np.testing.assert_array_equal(fade_chunk_input(grid, k, track, 0), expected)
    with pytest.raises(ValueError, match="beyond the region"):
        fade_chunk_input(grid, len(grid.starts) - 1, track[:, : n // 2], 0)


def test_identity_model_fuses_back_to_the_track_on_any_stretch():
    n = 500
    track = np.random.default_rng(1).standard_normal((2, n)).astype(np.float32)
    grid = fade_grid(n, 40, 4)
    outputs = {k: fade_chunk_input(grid, k, track, 0) for k in range(len(grid.starts))}
    np.testing.assert_allclose(fade_overlap_add(grid, outputs, 0, n), track, atol=1e-6)
    np.testing.assert_allclose(
        fade_overlap_add(grid, outputs, 123, 321), track[:, 123:321], atol=1e-6
    )
