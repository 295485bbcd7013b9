"""The fuser's final prefix: how far a result is final, and that what it writes early is bit for
bit the start of the finished result, whatever order the chunks come in, concurrently, or
across a fuser killed in the middle of a write."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

import prediction.fusion as fusion
from common.chunks import center_trim, chunk_window, plan_chunks, plan_passes
from common.interfaces import FuseJob, Normalisation
from common.resultfile import PREFIX_NAME, RECORD_NAME, read_record
from prediction.fusion import JobAccumulator
from prediction.prefix import ready_frames

STEMS = ["vocals", "drums", "bass", "other"]
SEGMENT = 1500


def fake_stems(window: np.ndarray, member: float = 1.0) -> np.ndarray:
    """A deterministic stand-in separator: 4 different functions of the window."""
    return member * np.stack([window * 0.5, window**2, -window, np.roll(window, 3, axis=-1)])


def brute_ready(plans, received: set[int]) -> int:
    """The definition, frame by frame: a frame is final when every chunk covering it (in track
    frames, in every pass) is received; the prefix ends at the first frame that is not."""
    n = plans[0].n_frames - plans[0].lead
    final = np.ones(n, dtype=bool)
    for plan in plans:
        for c in plan.chunks:
            if c.index not in received:
                final[max(0, c.offset - plan.lead) : max(0, c.offset + c.length - plan.lead)] = 0
    return n if final.all() else int(np.argmin(final))


def passes(kind: str, n: int):
    """Plans of a pass kind: one pass, shifted passes, a bag's members with their own shifts."""
    pad = lambda k: k + 200  # noqa: E731
    if kind == "one":
        return [plan_chunks(n, SEGMENT, 0.25, pad)]
    if kind == "shifts":
        return plan_passes(n, SEGMENT, 0.25, pad, shifts=2, seed=7, max_shift=300)
    weights = [[1.0, 0.5, 0.0, 2.0], [0.5, 1.0, 3.0, 2.0]]
    return plan_passes(
        n, SEGMENT, 0.25, pad, shifts=2, seed=3, max_shift=300, members=weights
    )  # 4 passes: 2 members x 2 shifts


@pytest.mark.parametrize("kind", ["one", "shifts", "bag"])
@pytest.mark.parametrize("n", [9001, 1000, SEGMENT, 1126])  # short last chunk; one chunk
def test_ready_frames_is_the_first_frame_some_missing_chunk_covers(kind, n):
    plans = passes(kind, n)
    indices = [c.index for p in plans for c in p.chunks]
    rng = np.random.default_rng(n)
    assert ready_frames(plans, set()) == 0
    assert ready_frames(plans, set(indices)) == n
    for _ in range(200):
        received = {i for i in indices if rng.random() < 0.7}
        assert ready_frames(plans, received) == brute_ready(plans, received), received
    # in track order, every pass of a region before the next: the prefix only grows
    order = sorted(((c.offset - p.lead, k, c.index) for k, p in enumerate(plans) for c in p.chunks))
    received, last = set(), 0
    for *_, index in order:
        received.add(index)
        now = ready_frames(plans, received)
        assert now >= last
        last = now
    assert last == n


def test_one_chunk_song_is_final_only_with_its_chunk_in_every_pass():
    plans = passes("shifts", 800)
    assert [len(p.chunks) for p in plans] == [1, 1]
    assert ready_frames(plans, {plans[0].chunks[0].index}) == 0
    assert ready_frames(plans, {plans[1].chunks[0].index}) == 0
    assert ready_frames(plans, {p.chunks[0].index for p in plans}) == 800


def make_job(tmp_path, kind: str, n: int = 9001, stem=None, job_id="p"):
    plans = passes(kind, n)
    job = FuseJob(
        job_id=job_id,
        plans=plans,
        model_stems=STEMS,
        stem=stem,
        norm=Normalisation(mean=0.1, std=2.0),
        out_key=f"{job_id}/out",
        activity_window=2000,
        activity_hop=1000,
    )
    track = np.random.default_rng(1).standard_normal((2, n)).astype(np.float32)
    pieces = []
    for k, plan in enumerate(plans):
        for c in plan.chunks:
            window = chunk_window(track, c, lead=plan.lead)
            pieces.append((c, center_trim(fake_stems(window, 1.0 + k), c.length)))
    return job, pieces


def finished(tmp_path, job, pieces) -> np.ndarray:
    """The result of the same job fused all at the end (every chunk in before any fusing)."""
    acc = JobAccumulator(tmp_path / "whole" / "fuser", job.job_id)
    job = job.model_copy(update={"out_key": "out"})
    acc.create(job)
    for chunk, piece in pieces:  # the last chunk first: nothing is final before the end
        acc.chunk_path(chunk.index).write_bytes(np.ascontiguousarray(piece).tobytes())
    result = acc.finalize()
    data, rate = sf.read(acc.store.local_path(result.result_key), dtype="float32", always_2d=True)
    assert rate == 44100
    return data


def prefix_data(out_dir) -> np.ndarray:
    """The final frames the record vouches for, read straight from the growing file."""
    record = read_record(out_dir)
    raw = (out_dir / PREFIX_NAME).read_bytes()[record.data_offset :]
    frames = np.frombuffer(raw, "<f4")[: record.ready_frames * record.channels]
    return frames.reshape(-1, record.channels)


@pytest.mark.parametrize(("kind", "stem"), [("one", None), ("shifts", "vocals"), ("bag", None)])
def test_prefix_is_bit_for_bit_the_start_of_the_finished_result(tmp_path, monkeypatch, kind, stem):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 700)  # several blocks per step
    job, pieces = make_job(tmp_path, kind, stem=stem)
    whole = finished(tmp_path, job, pieces)
    acc = JobAccumulator(tmp_path / "fuser", job.job_id)
    acc.create(job)
    out = tmp_path / job.job_id / "out"
    order = np.random.default_rng(4).permutation(len(pieces))
    received: set[int] = set()
    grew = 0
    for i in order:
        chunk, piece = pieces[i]
        acc.add_chunk(chunk, piece)
        received.add(chunk.index)
        status = acc.status()
        assert status.ready_frames == brute_ready(job.plans, received)
        prefix = prefix_data(out)
        assert prefix.shape[0] == status.ready_frames
        assert np.array_equal(prefix, whole[: prefix.shape[0]])
        grew += status.ready_frames > 0
    assert grew > 1  # it did grow in steps, not only at the end
    result = acc.finalize()
    data, _ = sf.read(acc.store.local_path(result.result_key), dtype="float32", always_2d=True)
    assert np.array_equal(data, whole)
    assert result.n_frames == 9001 and result.peak == float(np.abs(whole).max())
    assert not (out / PREFIX_NAME).exists() and read_record(out).ready_frames == 9001


def test_concurrent_chunk_puts_of_one_job(tmp_path, monkeypatch):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 500)
    job, pieces = make_job(tmp_path, "shifts")
    whole = finished(tmp_path, job, pieces)
    acc = JobAccumulator(tmp_path / "fuser", job.job_id)
    acc.create(job)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda cp: acc.add_chunk(*cp), pieces))
    assert acc.status().ready_frames == 9001
    data, _ = sf.read(
        acc.store.local_path(acc.finalize().result_key), dtype="float32", always_2d=True
    )
    assert np.array_equal(data, whole)


@pytest.mark.parametrize("damage", ["torn_write", "no_record", "short_file", "bad_record"])
def test_a_fuser_killed_mid_write_resumes_to_the_same_result(tmp_path, damage):
    """The fuser's state after a kill -9 at some point of `add_chunk`: bytes written past the
    record, or no record yet, or a file shorter than its record; a new fuser process (a new
    accumulator on the same dirs) goes on from what it can trust and ends with the same bits."""
    job, pieces = make_job(tmp_path, "bag")
    whole = finished(tmp_path, job, pieces)
    out = tmp_path / job.job_id / "out"
    acc = JobAccumulator(tmp_path / "fuser", job.job_id)
    acc.create(job)
    lead = {c.index: p.lead for p in job.plans for c in p.chunks}
    pieces.sort(key=lambda cp: cp[0].offset - lead[cp[0].index])  # track order, as sent
    half = len(pieces) // 2
    for chunk, piece in pieces[:half]:
        acc.add_chunk(chunk, piece)
    ready = acc.status().ready_frames
    assert 0 < ready < 9001
    path, record = out / PREFIX_NAME, out / RECORD_NAME
    if damage == "torn_write":
        with open(path, "ab") as f:
            f.write(b"\x7f" * 1234)  # half a block, never recorded
    elif damage == "no_record":
        record.unlink()
    elif damage == "short_file":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 8)
    else:
        record.write_text("{not json")
    again = JobAccumulator(tmp_path / "fuser", job.job_id)
    again.create(job)  # the resumed job's PUT: fuses what is final at once
    # what the record vouches for is kept; what it cannot vouch for is fused again from the
    # chunks: either way, as far as the chunks make final
    assert again.status().ready_frames == ready
    assert np.array_equal(prefix_data(out), whole[:ready])
    for chunk, piece in pieces[half:]:
        again.add_chunk(chunk, piece)
    data, _ = sf.read(
        again.store.local_path(again.finalize().result_key), dtype="float32", always_2d=True
    )
    assert np.array_equal(data, whole)
    # a retried finalize after publishing gives the same result, without fusing again
    published = out / "result.wav"
    stamp = published.stat().st_mtime_ns
    assert again.finalize().peak == float(np.abs(whole).max())
    assert published.stat().st_mtime_ns == stamp
