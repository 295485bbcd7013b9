"""The fuser's files in object storage (a real SeaweedFS server): a job carried on by another
replica with no local state gives the bits of one fused in one place, and the growing result
read from the bucket is bit for bit the start of the finished one."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from common.interfaces import EnsembleJob, EnsembleMember
from common.resultstore import open_result_bytes, read_stored_record, result_key
from common.storage import S3Storage
from prediction import fusion
from prediction.fusion import JobAccumulator, combine_members
from test.unit.prediction.test_assembly import grows_with_the_link
from test.unit.prediction.test_prefix import finished, make_job


@pytest.fixture
def bucket(s3server, s3_url, monkeypatch) -> S3Storage:
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return S3Storage(s3_url, s3server.endpoint_url, retry_s=5)


@pytest.mark.parametrize("kind", ["one", "shifts"])
def test_a_second_replica_carries_the_job_on_from_the_bucket(tmp_path, monkeypatch, bucket, kind):
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 700)  # several stretches per step
    job, pieces = make_job(tmp_path, kind)
    whole = finished(tmp_path, job, pieces)  # on local disk, fused at the end
    first = JobAccumulator(tmp_path / "a" / "fuser", job.job_id, bucket)
    first.create(job)
    pieces = sorted(pieces, key=lambda p: p[0].offset)  # track order: every pass advances
    half = len(pieces) // 2
    for chunk, piece in pieces[:half]:
        first.add_chunk(chunk, piece)
    record = read_stored_record(bucket, job.out_key)
    assert record is not None and record.ready_frames == first.status().ready_frames > 0
    with open_result_bytes(bucket, job.out_key, record) as f:  # what a gateway reads
        f.seek(record.data_offset)
        prefix = np.frombuffer(f.read(record.ready_frames * record.channels * 4), "<f4")
    assert np.array_equal(prefix.reshape(-1, record.channels), whole[: record.ready_frames])

    # another replica, nothing on its disk: the spec, chunks and prefix come from the bucket
    second = JobAccumulator(tmp_path / "b" / "fuser", job.job_id, bucket)
    assert second.status().received == sorted(c.index for c, _ in pieces[:half])
    for chunk, piece in pieces[half:]:
        second.add_chunk(chunk, piece)
    result = second.finalize()
    assert result.result_key == result_key(job.out_key)
    with bucket.open(result.result_key) as f:
        data, _ = sf.read(f, dtype="float32", always_2d=True)
    assert np.array_equal(data, whole)
    assert not [k for k in bucket.list_prefix(job.out_key) if "/prefix/" in k]
    # a stretch read after finalize removed them comes from result.wav: the same bits
    with open_result_bytes(bucket, job.out_key, record) as f:
        f.seek(record.data_offset)
        again = np.frombuffer(f.read(record.ready_frames * record.channels * 4), "<f4")
    assert np.array_equal(again, prefix)
    second.delete()
    assert bucket.list_prefix(f"fuser/{job.job_id}") == []


def test_an_ensemble_combines_members_read_in_place_from_the_bucket(tmp_path, bucket):
    """Two members fused into the bucket, combined by the fuser reading their result.wav by
    range GETs: the same bits as the combination of the same members on local disk."""
    job, pieces = make_job(tmp_path, "one")
    results = {}
    for where, store in (("local", None), ("s3", bucket)):
        root = tmp_path / where / "fuser"
        members = []
        for k, scale in enumerate((1.0, 0.5)):
            member = job.model_copy(update={"job_id": f"e-m{k}", "out_key": f"e/members/{k}"})
            acc = JobAccumulator(root, member.job_id, store)
            acc.create(member)
            for chunk, piece in pieces:
                acc.add_chunk(chunk, piece * np.float32(scale))
            fused = acc.finalize()
            members.append(
                EnsembleMember(
                    model=f"m{k}", result_key=fused.result_key, stems=fused.stems, weight=1.0 + k
                )  # fmt: skip
            )
        ensemble = EnsembleJob(
            job_id="e", members=members, stems=members[0].stems, out_key="e", method="median_wave"
        )
        acc = JobAccumulator(root, "e", store)
        out = combine_members(ensemble, acc)
        with acc.store.open(out.result_key) as f:
            results[where] = sf.read(f, dtype="float32", always_2d=True)[0]
    assert np.array_equal(results["s3"], results["local"])
    assert bucket.exists("e/result.wav")


def test_a_chained_job_s_result_grows_from_stretches_read_in_the_bucket(
    tmp_path, monkeypatch, bucket
):
    """The first stage and a growing link in the bucket, assembled by another replica with no
    local copy of either: each prefix of the job's result is the start of the finished one."""
    monkeypatch.setattr(fusion, "BLOCK_FRAMES", 700)  # several stretches per step
    grows_with_the_link(tmp_path, "c", bucket, assembler_root=tmp_path / "other")
