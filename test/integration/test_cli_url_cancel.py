"""`audiosplit separate URL`, `audiosplit cancel` and Ctrl-C's cancel hint, as a user runs
them: subprocesses against a stack of real processes (dsp separator) that may fetch from
loopback (ALLOW_PRIVATE_URLS), and a loopback HTTP server holding the songs."""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from common.ports import free_port
from test.integration.test_cli import CLI_TIMEOUT_S, RATE, STEMS, assert_clean, audiosplit, cli_env
from test.songgen import make_song, mixture
from test.stackutil import REPO, own_stack

SONG_S = 4.0  # seconds: one chunk of dsp
LONG_S = 120.0  # seconds: a job still running when it is cancelled
RUNNING_TIMEOUT_S = 60.0


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    """`song.wav` for the link, `local.wav` for a file beside it, long ones to cancel."""
    folder = tmp_path_factory.mktemp("served")
    sf.write(folder / "song.wav", mixture(make_song(SONG_S, seed=4)).T, RATE, "PCM_16")
    sf.write(folder / "local.wav", mixture(make_song(SONG_S, seed=5)).T, RATE, "PCM_16")
    ten = mixture(make_song(10.0, seed=6))
    for seed, name in enumerate(("long.wav", "long-interrupted.wav")):
        long = np.tile(ten, int(LONG_S / 10)) * (0.9 - 0.1 * seed)  # two songs, not one result
        sf.write(folder / name, long.T, RATE, "PCM_16")
    return folder


@pytest.fixture(scope="module")
def served(songs) -> str:
    server = ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(QuietFiles, directory=str(songs))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def url(tmp_path_factory) -> str:
    with own_stack(tmp_path_factory.mktemp("url_cancel"), allow_private_urls="true") as stack:
        yield stack.url("gateway")


@pytest.fixture(scope="module")
def links_work(url, served) -> None:
    """Fail, saying why, where this gateway does not take `url=`, or not from loopback."""
    r = httpx.post(f"{url}/api/jobs", files={"url": (None, f"{served}/nothing.wav")}, timeout=60)
    error = r.json().get("error", {}) if r.headers.get("content-type") == "application/json" else {}
    if r.status_code == 400 and "`url`" not in error.get("message", ""):
        pytest.fail(f"this gateway does not take url=: {error}")
    if error.get("code") == "url_refused" and "loopback" in error.get("message", ""):
        pytest.fail(f"this gateway refuses loopback links despite ALLOW_PRIVATE_URLS: {error}")


def wait_running(client: httpx.Client, job_id: str) -> None:
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    while (job := client.get(f"/api/jobs/{job_id}").json())["status"] != "running":
        assert job["status"] == "queued" and time.monotonic() < deadline, job
        time.sleep(0.1)


def test_separate_a_link_and_a_file_in_one_run(url, served, links_work, songs, tmp_path):
    (tmp_path / "local.wav").symlink_to(songs / "local.wav")
    result = audiosplit("separate", f"{served}/song.wav", "local.wav", "--url", url, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert "stems in ./song/" in result.stdout and "stems in ./local/" in result.stdout
    assert re.search(r"^127\.0\.0\.1:\d+/song\.wav: job \S+, model dsp$", result.stdout, re.M)
    for folder in ("song", "local"):
        for stem in STEMS:
            info = sf.info(tmp_path / folder / f"{stem}.wav")
            assert (info.frames, info.channels) == (SONG_S * RATE, 2)


def test_a_link_the_gateway_cannot_fetch_is_refused_with_its_message(
    url, served, links_work, tmp_path
):
    result = audiosplit("separate", f"{served}/nothing-here.wav", "--url", url, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_clean(result)
    refused = [line for line in result.stdout.splitlines() if "refused" in line]
    assert refused[0].startswith(f"{served[7:]}/nothing-here.wav: refused (422): "), refused
    assert "404" in refused[0]


def test_cancel_turns_a_running_job_cancelled(url, songs, tmp_path):
    with httpx.Client(base_url=url, timeout=120) as client:
        with open(songs / "long.wav", "rb") as f:
            r = client.post(
                "/api/jobs", files={"file": ("long.wav", f)}, data={"analysis": "false"}
            )
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        wait_running(client, job_id)
        result = audiosplit("cancel", job_id, "--url", url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"cancelled {job_id}\n"
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and "cancel" not in job["links"]
    result = audiosplit("list", "--status", "cancelled", "--url", url, cwd=tmp_path)
    assert result.returncode == 0 and job_id in result.stdout
    result = audiosplit("cancel", "x" * 22, "--url", url, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr == f"audiosplit: no job {'x' * 22}\n"


def test_cancel_of_a_finished_job_says_why_not(url, songs, tmp_path):
    with httpx.Client(base_url=url, timeout=120) as client:
        with open(songs / "local.wav", "rb") as f:
            r = client.post(
                "/api/jobs", files={"file": ("local.wav", f)}, data={"analysis": "false"}
            )
        job_id = r.json()["id"]
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while client.get(f"/api/jobs/{job_id}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    result = audiosplit("cancel", job_id, "--url", url, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"audiosplit: job {job_id} is done"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_ctrl_c_says_how_to_cancel_and_exits_130(url, songs, tmp_path):
    (tmp_path / "long.wav").symlink_to(songs / "long-interrupted.wav")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "separate", "long.wav", "--url", url],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,  # no terminal: no question, the command instead
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + RUNNING_TIMEOUT_S
            while not (
                running := [
                    j["id"]
                    for j in client.get("/api/jobs", params={"status": "running"}).json()["jobs"]
                    if j["filename"] == "long.wav"
                ]
            ):
                assert time.monotonic() < deadline and proc.poll() is None, "no job started"
                time.sleep(0.1)
            time.sleep(1.0)  # the CLI has the job's id and is polling it
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 130, out + err
            assert "Traceback" not in err
            job_id = running[0]
            hint = f"to cancel them: audiosplit cancel {job_id} --url {url}"
            assert hint in err.splitlines(), err
            assert f"unfinished jobs stay in the gateway: audiosplit status {job_id}" in err
            assert client.get(f"/api/jobs/{job_id}").json()["status"] == "running"
            result = audiosplit(*hint.removeprefix("to cancel them: audiosplit ").split(), cwd=REPO)
            assert result.returncode == 0 and result.stdout == f"cancelled {job_id}\n"
            assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"
    finally:
        proc.kill()
