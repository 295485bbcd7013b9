import numpy as np
import pytest
import soundfile as sf

import prediction.fusion as fusion
from common.chunks import center_trim, chunk_window, overlap_add, plan_chunks
from common.errors import BadRequest, Conflict
from common.interfaces import FuseJob, Normalisation
from prediction.fusion import JobAccumulator

STEMS = ["vocals", "drums", "bass", "other"]


def fake_stems(window: np.ndarray) -> np.ndarray:
    """A deterministic stand-in separator: 4 different functions of the window."""
    return np.stack([window * 0.5, window**2, -window, np.roll(window, 3, axis=-1)])


def make_job(tmp_path, n=9001, segment=1500, overlap=0.25, stem=None, norm=None):
    plan = plan_chunks(n, segment, overlap, lambda k: k + 200)
    job = FuseJob(
        job_id="job1",
        plans=[plan],
        model_stems=STEMS,
        stem=stem,
        norm=norm or Normalisation(),
        out_key="out",
    )
    track = np.random.default_rng(0).standard_normal((2, n)).astype(np.float32)
    pieces = [(c, center_trim(fake_stems(chunk_window(track, c)), c.length)) for c in plan.chunks]
    return job, pieces


@pytest.mark.parametrize("block", [64, 1000, 1 << 18])
def test_fused_files_equal_in_memory_overlap_add(tmp_path, monkeypatch, block):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", block)
    job, pieces = make_job(tmp_path)
    acc = JobAccumulator(tmp_path / "fuser", "job1")
    acc.create(job)
    for chunk, piece in reversed(pieces):  # arrival order does not matter
        acc.add_chunk(chunk, piece)
    result = acc.finalize()
    expected = overlap_add(pieces, job.plans[0], (4, 2))
    multi, rate = sf.read(acc.store.local_path(result.result_key), dtype="float32")
    assert rate == 44100 and multi.shape == (9001, 8)
    np.testing.assert_array_equal(multi.T.reshape(4, 2, -1), expected)
    # each result is kept once: no per-stem copies beside the multi-channel WAV
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["prefix.json", "result.wav"]
    assert result.peak == pytest.approx(float(np.abs(expected).max()))


def test_retried_chunk_is_not_added_twice(tmp_path):
    job, pieces = make_job(tmp_path)
    acc = JobAccumulator(tmp_path / "fuser", "job1")
    acc.create(job)
    acc.create(job)  # a retried PUT of the same job is fine
    for chunk, piece in pieces + pieces[:2]:
        acc.add_chunk(chunk, piece)
    assert acc.status().received == list(range(len(pieces)))
    multi, _ = sf.read(acc.store.local_path(acc.finalize().result_key), dtype="float32")
    np.testing.assert_array_equal(
        multi.T.reshape(4, 2, -1), overlap_add(pieces, job.plans[0], (4, 2))
    )


def test_one_stem_and_its_complement_after_denormalising(tmp_path):
    norm = Normalisation(mean=0.1, std=2.0)
    job, pieces = make_job(tmp_path, stem="vocals", norm=norm)
    acc = JobAccumulator(tmp_path / "fuser", "job1")
    acc.create(job)
    for chunk, piece in pieces:
        acc.add_chunk(chunk, piece)
    result = acc.finalize()
    assert result.stems == ["vocals", "no_vocals"]
    full = overlap_add(pieces, job.plans[0], (4, 2)) * np.float32(2.0) + np.float32(0.1)
    multi, _ = sf.read(acc.store.local_path(result.result_key), dtype="float32")
    got = multi.T.reshape(2, 2, -1)
    np.testing.assert_allclose(got[0], full[0], atol=1e-6)
    np.testing.assert_allclose(got[1], full[1] + full[2] + full[3], atol=1e-5)


def test_missing_chunks_and_wrong_pieces_are_refused(tmp_path):
    job, pieces = make_job(tmp_path)
    acc = JobAccumulator(tmp_path / "fuser", "job1")
    acc.create(job)
    acc.add_chunk(*pieces[0])
    with pytest.raises(Conflict, match="misses chunks"):
        acc.finalize()
    chunk, piece = pieces[1]
    with pytest.raises(BadRequest, match="shape"):
        acc.add_chunk(chunk, piece[:, :, :-1])
    with pytest.raises(BadRequest, match="NaN"):
        acc.add_chunk(chunk, piece * np.nan)
    with pytest.raises(BadRequest, match="not part"):
        acc.add_chunk(chunk.model_copy(update={"offset": 1}), piece)
    other, _ = make_job(tmp_path, n=500)
    with pytest.raises(Conflict):
        acc.create(other)


def test_shift_passes_are_trimmed_and_averaged(tmp_path):
    """Two passes on the track delayed by random leads, as apply_model(shifts=2) runs them."""
    from common.chunks import plan_passes

    n = 7000
    track = np.random.default_rng(5).standard_normal((2, n)).astype(np.float32)
    plans = plan_passes(n, 1500, 0.25, lambda k: k + 100, shifts=2, seed=7, max_shift=300)
    assert [p.lead > 0 for p in plans] and plans[1].chunks[0].index == len(plans[0].chunks)
    job = FuseJob(job_id="s", plans=plans, model_stems=STEMS, out_key="o")
    acc = JobAccumulator(tmp_path / "fuser", "s")
    acc.create(job)
    expected = np.zeros((4, 2, n), np.float32)
    for plan in plans:
        pieces = [
            (c, center_trim(fake_stems(chunk_window(track, c, lead=plan.lead)), c.length))
            for c in plan.chunks
        ]
        for chunk, piece in pieces:
            acc.add_chunk(chunk, piece)
        expected += overlap_add(pieces, plan, (4, 2))[..., plan.lead :]
    expected /= 2
    multi, _ = sf.read(acc.store.local_path(acc.finalize().result_key), dtype="float32")
    np.testing.assert_allclose(multi.T.reshape(4, 2, -1), expected, atol=1e-6)


def test_weighted_passes_are_averaged_per_stem(tmp_path):
    """A bag's members on passes of their own: per stem, sum of weight * pass / sum of weights."""
    from common.chunks import plan_passes

    n = 5000
    track = np.random.default_rng(6).standard_normal((2, n)).astype(np.float32)
    weights = [[1.0, 0.5, 0.0, 2.0], [0.5, 1.0, 3.0, 2.0]]
    plans = plan_passes(
        n, 1500, 0.25, lambda k: k + 100, shifts=1, seed=2, max_shift=300, members=weights
    )
    job = FuseJob(job_id="w", plans=plans, model_stems=STEMS, out_key="o")
    acc = JobAccumulator(tmp_path / "fuser", "w")
    acc.create(job)
    fused = []
    for k, plan in enumerate(plans):
        member = 1.0 + k  # each member a different function of the window
        pieces = [
            (c, center_trim(member * fake_stems(chunk_window(track, c, lead=plan.lead)), c.length))
            for c in plan.chunks
        ]
        for chunk, piece in pieces:
            acc.add_chunk(chunk, piece)
        fused.append(overlap_add(pieces, plan, (4, 2))[..., plan.lead :])
    w = np.array(weights, np.float32)[:, :, None, None]
    expected = (w[0] * fused[0] + w[1] * fused[1]) / (w[0] + w[1])
    multi, _ = sf.read(acc.store.local_path(acc.finalize().result_key), dtype="float32")
    np.testing.assert_allclose(multi.T.reshape(4, 2, -1), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], "not 4 finite numbers"),
        ([[1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], "not 4 finite numbers"),
        ([[1.0, float("nan"), 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], "not 4 finite numbers"),
        ([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0]], "no weight at all"),
    ],
)
def test_pass_weights_that_cannot_be_averaged_are_refused(tmp_path, weights, problem):
    from common.chunks import plan_passes

    plans = plan_passes(3000, 1500, 0.25, lambda k: k, shifts=1, seed=1, members=weights)
    job = FuseJob(job_id="b", plans=plans, model_stems=STEMS, out_key="o")
    with pytest.raises(BadRequest, match=problem):
        JobAccumulator(tmp_path / "fuser", "b").create(job)


@pytest.mark.parametrize(("block", "window", "hop"), [(64, 2000, 2000), (1000, 2000, 700)])
def test_stem_activity_is_each_stems_rms_per_analysis_window(
    tmp_path, monkeypatch, block, window, hop
):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", block)
    job, pieces = make_job(tmp_path)
    job = job.model_copy(update={"activity_window": window, "activity_hop": hop})
    acc = JobAccumulator(tmp_path / "fuser", "job1")
    acc.create(job)
    for chunk, piece in pieces:
        acc.add_chunk(chunk, piece)
    result = acc.finalize()
    stems = overlap_add(pieces, job.plans[0], (4, 2)).astype(np.float64)
    starts = range(0, 9001, hop)
    assert len(result.activity_db) == len(starts)
    for levels, start in zip(result.activity_db, starts, strict=True):
        piece = stems[..., start : start + window]
        expected = 10 * np.log10(np.mean(np.square(piece), axis=(1, 2)))
        np.testing.assert_allclose(levels, expected, atol=0.01)
    # no windows asked: none measured
    assert make_job(tmp_path / "b")[0].activity_window == 0
