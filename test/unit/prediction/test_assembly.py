"""The fuser's assembly of a chained job: each stem copied bit for bit from the fused result
that holds it, in the order asked, with its level per analysis window; while a link still
fuses, the job's result grows to what is final in every result, and is the start of the
finished one; results of another length or a stem a result lacks are refused, and so is
publishing before every link is done."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from common.errors import BadRequest, Conflict
from common.interfaces import AssembledStem, AssemblyJob
from prediction import fusion
from prediction.assembly import assemble_stems, extend_assembly
from prediction.fusion import JobAccumulator
from test.unit.prediction.test_prefix import make_job

N = 9001


def fused(root, job_id: str, out_key: str, scale: float, n: int = N, store=None):
    """A fused result of the test job's stems (every stem scaled by `scale`)."""
    acc, pieces = fusing(root, job_id, out_key, scale, n, store)
    for chunk, piece in pieces:
        acc.add_chunk(chunk, piece)
    result = acc.finalize()
    with acc.store.open(result.result_key) as f:
        data, _ = sf.read(f, dtype="float32", always_2d=True)
    return result, data.T.reshape(len(result.stems), 2, -1)


def fusing(root, job_id: str, out_key: str, scale: float, n: int = N, store=None):
    """The test job recorded with the fuser, its chunks' stems (scaled) not sent yet."""
    job, pieces = make_job(root, "one", n=n, job_id=job_id)
    acc = JobAccumulator(root / "fuser", job_id, store)
    acc.create(job.model_copy(update={"out_key": out_key}))
    return acc, [(chunk, piece * np.float32(scale)) for chunk, piece in pieces]


def read_result(acc: JobAccumulator, key: str, n_stems: int) -> np.ndarray:
    with acc.store.open(key) as f:
        data, _ = sf.read(f, dtype="float32", always_2d=True)
    return data.T.reshape(n_stems, 2, -1)


STEMS = [
    ("drums", "first", 0),
    ("vocals-x", "chain", 1),
    ("z", "first", 2),
    ("vocals-y", "chain", 0),
]


def assembly(job_id: str, n: int = N) -> AssemblyJob:
    keys = {"first": f"{job_id}/first", "chain": f"{job_id}/chains/0"}
    stems = [AssembledStem(name=name, out_key=keys[k], index=i) for name, k, i in STEMS]
    return AssemblyJob(
        job_id=job_id,
        stems=stems,
        n_frames=n,
        out_key=job_id,
        activity_window=2000,
        activity_hop=1000,
    )


def test_stems_are_copied_from_their_results_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 700)  # several blocks
    _, a = fused(tmp_path, "j-s", "j/first", 1.0)
    _, b = fused(tmp_path, "j-c0", "j/chains/0", 0.5)
    acc = JobAccumulator(tmp_path / "fuser", "j")
    out = assemble_stems(assembly("j"), acc)
    assert out.stems == ["drums", "vocals-x", "z", "vocals-y"]
    got = read_result(acc, out.result_key, 4)
    assert np.array_equal(got, np.stack([a[0], b[1], a[2], b[0]]))
    assert out.peak == pytest.approx(float(np.abs(got).max()))
    assert len(out.activity_db) > 0 and len(out.activity_db[0]) == 4


def test_the_result_grows_with_the_link_and_is_the_start_of_the_finished_one(tmp_path, monkeypatch):
    """The first stage finished, the link's chunks arriving one by one: after each, the job's
    result is extended to what the link has final, and each prefix is the finished result's
    start."""
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 700)
    grows_with_the_link(tmp_path, "g", None)


def grows_with_the_link(root, job_id: str, store, assembler_root=None) -> None:
    """The growing assembly's checks, the fuser's files in `store` (None: local disk); the
    assembly made by the fuser at `assembler_root` (default: the one fusing the link)."""
    fused(root, f"{job_id}-s", f"{job_id}/first", 1.0, store=store)
    link, pieces = fusing(root, f"{job_id}-c0", f"{job_id}/chains/0", 0.5, store=store)
    acc = JobAccumulator((assembler_root or root) / "fuser", job_id, store)
    job = assembly(job_id)
    assert extend_assembly(job, acc).ready == 0  # the link has no record yet: nothing final
    prefixes = []
    for chunk, piece in sorted(pieces, key=lambda p: p[0].offset):
        link.add_chunk(chunk, piece)
        grow = extend_assembly(job, acc)
        assert grow.ready == link.status().ready_frames
        prefixes.append(grow.read(0, grow.ready))
    link.finalize()
    out = assemble_stems(job, acc)
    whole = read_result(acc, out.result_key, 4)
    assert 0 < prefixes[0].shape[-1] < N and len({p.shape[-1] for p in prefixes}) > 2
    for prefix in prefixes:
        assert np.array_equal(prefix, whole[..., : prefix.shape[-1]])


def test_publishing_before_a_link_is_done_is_refused(tmp_path):
    fused(tmp_path, "h-s", "h/first", 1.0)
    link, pieces = fusing(tmp_path, "h-c0", "h/chains/0", 0.5)
    for chunk, piece in pieces[:2]:
        link.add_chunk(chunk, piece)
    with pytest.raises(Conflict, match="a link has not finished"):
        assemble_stems(assembly("h"), JobAccumulator(tmp_path / "fuser", "h"))


def test_results_of_another_length_or_a_missing_stem_are_refused(tmp_path):
    first, _ = fused(tmp_path, "k-s", "k/first", 1.0)
    fused(tmp_path, "k-c0", "k/chains/0", 1.0, n=5000)
    acc = JobAccumulator(tmp_path / "fuser", "k")
    with pytest.raises(BadRequest, match="differ in length"):
        assemble_stems(assembly("k"), acc)
    beyond = [AssembledStem(name="a", out_key="k/first", index=len(first.stems))]
    with pytest.raises(BadRequest, match="has no stem"):
        assemble_stems(AssemblyJob(job_id="k", stems=beyond, n_frames=N, out_key="k"), acc)
