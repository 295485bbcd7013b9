"""Jobs with their files in object storage (STORAGE_URL=s3://..., a real SeaweedFS server):
the same stems as on local disk, the growing prefix read from the bucket, a fuser replica
killed with -9 mid-job costing no chunk, the S3 server stopped mid-job (waited out while it
comes back within STORAGE_RETRY_S; a clear failure naming the storage when it does not).

Each test runs its own stack of real processes (dsp separator, empty models dir); the
local-disk result they are compared with comes from the stack the integration tests share.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from common.ports import free_port
from common.s3local import LocalS3
from common.storage import S3Storage
from test.integration.test_progressive import assert_starts_of, follow
from test.songgen import make_song, mixture
from test.stackutil import (
    REPO,
    own_stack,
    wait_job,
    wait_process_healthy,
    wav_bytes,
)

SONG_S = 40.0  # 5 chunks of dsp: enough to interrupt between the first and the last
JOB_TIMEOUT_S = 240.0
POLL_S = 0.02


@pytest.fixture(scope="module")
def upload() -> bytes:
    return wav_bytes(mixture(make_song(seconds=SONG_S, seed=31)))


def s3_settings(server: LocalS3, prefix: str, **extra) -> dict:
    return {k.lower(): v for k, v in server.env(prefix).items()} | extra


def submit(client: httpx.Client, data: bytes, **fields) -> dict:
    r = client.post("/api/jobs", files={"file": ("song.wav", data)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()


def result_of(client: httpx.Client, job: dict) -> np.ndarray:
    assert job["status"] == "done", job
    r = client.get(f"/api/jobs/{job['id']}/result")
    assert r.status_code == 200, r.text
    return sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)[0]


def wait_mid_job(client: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] not in ("done", "failed"), f"ended before the fault: {job}"
        if 0 < job["progress"] < 0.8:
            return
        time.sleep(POLL_S)
    pytest.fail(f"job {job_id} made no progress in {JOB_TIMEOUT_S}s")


@pytest.fixture(scope="module")
def on_local_disk(client, upload) -> np.ndarray:
    """(frames, 8): the job's result with the files on local disk (the default), from the
    stack the integration tests share (test/integration/conftest.py)."""
    job = submit(client, upload, analysis="false")
    return result_of(client, wait_job(client, job["id"], timeout=JOB_TIMEOUT_S))


def bucket(server: LocalS3, prefix: str, monkeypatch) -> S3Storage:
    """The test's own view of the bucket (with the server's credentials)."""
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    return S3Storage(server.storage_url(prefix), server.endpoint_url, retry_s=10)


def test_a_job_in_s3_equals_the_job_on_local_disk(
    tmp_path, monkeypatch, s3server, upload, on_local_disk
):
    prefix = "same"
    store = bucket(s3server, prefix, monkeypatch)
    with own_stack(tmp_path, **s3_settings(s3server, prefix)) as stack:
        with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
            job = submit(client, upload)
            seen = follow(client, job["id"], "vocals")  # the prefix, read from the bucket
            done = wait_job(client, job["id"], timeout=JOB_TIMEOUT_S)
            result = result_of(client, done)
            assert np.array_equal(result, on_local_disk)
            assert_starts_of(seen, result, 0)
            keys = store.list_prefix(f"jobs/{job['id']}")
            # durable: the result, its record, the analysis; gone: the input, the stretches
            assert {f"jobs/{job['id']}/result/result.wav", f"jobs/{job['id']}/analysis.json"} <= (
                set(keys)
            ), keys
            assert not [k for k in keys if "/prefix/" in k or k.endswith("input.f32")], keys
            assert store.list_prefix("fuser") == []  # the fuser's chunks went with the job
            # the same song again: born done, its objects copied in the bucket
            again = submit(client, upload)
            assert again["status"] == "done"
            assert np.array_equal(result_of(client, again), on_local_disk)
            r = client.get(f"/api/jobs/{again['id']}/analysis")
            assert r.status_code == 200 and "windows" in r.json()
            assert client.delete(f"/api/jobs/{job['id']}").status_code == 204
            assert store.list_prefix(f"jobs/{job['id']}") == []
            assert np.array_equal(result_of(client, again), on_local_disk)


def start_fuser(env: dict[str, str], port: int, data_dir: Path) -> subprocess.Popen:
    """A second fuser replica with a data dir of its own: it shares only the bucket."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "fuser2.log", "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prediction.channel_fuser:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],  # fmt: skip
            cwd=REPO,
            env={**os.environ, **env, "FUSER_PORT": str(port), "DATA_DIR": str(data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def test_the_fuser_replica_holding_a_job_killed_costs_no_chunk(
    tmp_path, s3server, upload, on_local_disk
):
    """Two fuser replicas on one bucket: kill -9 the one the job's chunks go to; the other
    carries the job on from the bucket (the chunks it never received, the growing result)
    and the stems are those of an undisturbed run."""
    own, extra = free_port(), free_port()
    urls = f"http://127.0.0.1:{own},http://127.0.0.1:{extra}"
    settings = s3_settings(s3server, "replicas", fuser_port=own, fuser_urls=urls)
    with own_stack(tmp_path, **settings) as stack:
        second_dir = tmp_path / "fuser2"
        second = start_fuser(stack.env, extra, second_dir)
        try:
            wait_process_healthy(f"http://127.0.0.1:{extra}", second)
            with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
                job = submit(client, upload, analysis="false")
                wait_mid_job(client, job["id"])
                # the replica holding the job is the one with its files in its own data dir
                first_has = (stack.settings.data_dir / "fuser" / job["id"]).exists()
                if first_has:
                    stack.kill("fuser", signal.SIGKILL)
                else:
                    assert (second_dir / "fuser" / job["id"]).exists()
                    os.killpg(second.pid, signal.SIGKILL)
                killed = time.monotonic()
                done = wait_job(client, job["id"], timeout=JOB_TIMEOUT_S)
                print(
                    f"\nfuser replica {'1' if first_has else '2'} of 2 killed mid-job: the job "
                    f"ended done {time.monotonic() - killed:.1f} s later"
                )
                assert np.array_equal(result_of(client, done), on_local_disk)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=30)


def test_s3_stopped_mid_job_is_waited_out(tmp_path, upload, on_local_disk):
    """The S3 server killed mid-job and started again 5 s later: the fuser's and gateway's
    calls retry (STORAGE_RETRY_S=60) and the job finishes with the same stems."""
    server = LocalS3(tmp_path / "s3")
    server.start()
    try:
        with own_stack(tmp_path, **s3_settings(server, "restart")) as stack:
            with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
                job = submit(client, upload, analysis="false")
                wait_mid_job(client, job["id"])
                stopped = time.monotonic()
                server.stop(kill=True)
                time.sleep(5.0)
                server.start()
                back = time.monotonic()
                done = wait_job(client, job["id"], timeout=JOB_TIMEOUT_S)
                ended = time.monotonic()
                assert np.array_equal(result_of(client, done), on_local_disk)
                print(
                    f"\nS3 away {back - stopped:.1f} s mid-job (5 s stopped + its restart): the "
                    f"job ended done {ended - back:.1f} s after it answered again"
                )
    finally:
        server.stop(kill=True)


def test_s3_gone_past_the_retry_bound_fails_the_job_clearly(tmp_path, upload):
    """The S3 server stopped for good mid-job: the job fails (never hangs) with a message that
    names the object storage."""
    server = LocalS3(tmp_path / "s3")
    server.start()
    try:
        settings = s3_settings(server, "gone", storage_retry_s=3, chunk_retries=1)
        with own_stack(tmp_path, **settings) as stack:
            with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
                job = submit(client, upload, analysis="false")
                wait_mid_job(client, job["id"])
                stopped = time.monotonic()
                server.stop(kill=True)
                ended = wait_job(client, job["id"], timeout=JOB_TIMEOUT_S)
                print(
                    f"\nS3 gone for good (STORAGE_RETRY_S=3): the job ended {ended['status']} "
                    f"{time.monotonic() - stopped:.1f} s later: {ended['error']}"
                )
                assert ended["status"] == "failed", ended
                message = ended["error"]["message"]
                assert "storage" in message and server.endpoint_url in message, ended["error"]
    finally:
        server.stop(kill=True)
