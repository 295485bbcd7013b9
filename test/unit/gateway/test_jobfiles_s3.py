"""gateway/jobfiles.py with the job files in a real S3 server: the bucket holds the durable
copies, a gateway's data dir only a cache that another gateway (another data dir) does without.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from common.config import Settings
from gateway.jobfiles import (
    STALE_CACHE_S,
    drop_stale_caches,
    job_files,
    link_results,
    load_input,
    save_input,
)
from gateway.store import JobRecord, JobStore


@pytest.fixture
def two_dirs(tmp_path, s3server, s3_url, monkeypatch) -> tuple[Settings, Settings]:
    """The settings of two gateways: data dirs of their own, one bucket prefix."""
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    extra = {"storage_url": s3_url, "s3_endpoint_url": s3server.endpoint_url}
    return tuple(Settings(_env_file=None, data_dir=tmp_path / n, **extra) for n in ("a", "b"))


def test_input_result_and_analysis_reach_the_other_gateway(two_dirs):
    a, b = two_dirs
    track = np.random.default_rng(0).standard_normal((2, 5000)).astype(np.float32)
    here = job_files(a, "job1")
    save_input(here, track)  # the upload decoded on gateway A
    there = job_files(b, "job1")
    assert not there.input_path.exists()
    assert np.array_equal(load_input(there)[:, 0:5000], track)  # fetched into B's cache
    here.store.put_bytes(f"{here.result_key}/result.wav", b"RIFF....")  # as the fuser does
    here.write_json(here.analysis_path, {"track": {}})
    assert there.fetch(there.result_path) and there.result_path.read_bytes() == b"RIFF...."
    assert there.fetch(there.analysis_path)
    assert not there.fetch(there.dir / "nothing.bin")

    copy = job_files(b, "job2")
    assert link_results(there, copy)  # server-side copies, read back through A
    again = job_files(a, "job2")
    assert again.fetch(again.result_path) and again.fetch(again.analysis_path)

    here.delete()  # by A: the objects go; B's cache of job1 goes at its next sweep
    assert here.store.list_prefix(here.key) == []
    assert not link_results(job_files(a, "job1"), job_files(a, "job3"))


def test_the_sweep_drops_caches_of_jobs_deleted_elsewhere(two_dirs, tmp_path):
    _, b = two_dirs
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    try:
        now = time.time()
        store.insert(JobRecord(id="alive", status="done", created_at=now, updated_at=now))
        old = now - STALE_CACHE_S - 60
        for name in ("alive", "deleted", "uploading"):
            job_files(b, name).dir.mkdir(parents=True)
        for name in ("alive", "deleted"):
            os.utime(job_files(b, name).dir, (old, old))
        assert drop_stale_caches(b, store) == ["deleted"]
        assert sorted(p.name for p in b.jobs_dir.iterdir()) == ["alive", "uploading"]
    finally:
        store.close()
