"""The fuser's assembly of a chained job: each stem copied bit for bit from the fused result
that holds it, in the order asked, with its level per analysis window; results of different
lengths or a stem a result lacks are refused."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from common.errors import BadRequest
from common.interfaces import AssembledStem, AssemblyJob
from prediction import fusion
from prediction.fusion import JobAccumulator, assemble_stems
from test.unit.prediction.test_prefix import make_job


def fused(root, job_id: str, out_key: str, scale: float, n: int = 9001):
    """A fused result of the test job's stems (every stem scaled by `scale`)."""
    job, pieces = make_job(root, "one", n=n, job_id=job_id)
    job = job.model_copy(update={"out_key": out_key})
    acc = JobAccumulator(root / "fuser", job_id)
    acc.create(job)
    for chunk, piece in pieces:
        acc.add_chunk(chunk, piece * np.float32(scale))
    result = acc.finalize()
    data, _ = sf.read(acc.store.local_path(result.result_key), dtype="float32", always_2d=True)
    return result, data.T.reshape(len(result.stems), 2, -1)


def test_stems_are_copied_from_their_results_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 700)  # several blocks
    first, a = fused(tmp_path, "j-s", "j/first", 1.0)
    chain, b = fused(tmp_path, "j-c0", "j/chains/0", 0.5)
    stems = [
        AssembledStem(name="drums", result_key=first.result_key, index=0),
        AssembledStem(name="vocals-x", result_key=chain.result_key, index=1),
        AssembledStem(name="z", result_key=first.result_key, index=2),
        AssembledStem(name="vocals-y", result_key=chain.result_key, index=0),
    ]
    job = AssemblyJob(job_id="j", stems=stems, out_key="j", activity_window=2000, activity_hop=1000)
    acc = JobAccumulator(tmp_path / "fuser", "j")
    out = assemble_stems(job, acc)
    assert out.stems == ["drums", "vocals-x", "z", "vocals-y"]
    data, _ = sf.read(acc.store.local_path(out.result_key), dtype="float32", always_2d=True)
    got = data.T.reshape(4, 2, -1)
    assert np.array_equal(got, np.stack([a[0], b[1], a[2], b[0]]))
    assert out.peak == pytest.approx(float(np.abs(got).max()))
    assert len(out.activity_db) > 0 and len(out.activity_db[0]) == 4


def test_results_of_different_lengths_or_a_missing_stem_are_refused(tmp_path):
    first, _ = fused(tmp_path, "k-s", "k/first", 1.0)
    short, _ = fused(tmp_path, "k-c0", "k/chains/0", 1.0, n=5000)
    acc = JobAccumulator(tmp_path / "fuser", "k")
    both = [
        AssembledStem(name="a", result_key=first.result_key, index=0),
        AssembledStem(name="b", result_key=short.result_key, index=0),
    ]
    with pytest.raises(BadRequest, match="differ in length"):
        assemble_stems(AssemblyJob(job_id="k", stems=both, out_key="k"), acc)
    beyond = [AssembledStem(name="a", result_key=first.result_key, index=len(first.stems))]
    with pytest.raises(BadRequest, match="has no stem"):
        assemble_stems(AssemblyJob(job_id="k", stems=beyond, out_key="k"), acc)
