"""One setting rewires everything: `./run.sh up` with only the six `*_PORT` settings moved to
9100-9106 runs a whole job there (page, CLI with GATEWAY_PORT alone, `/ready`), and a decoy on
the default ports that answers every request with 500 is never asked anything."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from common.config import DOWNSTREAM_SERVICES
from gateway.stack import SERVICES
from test.songgen import make_song, mixture
from test.stackutil import REPO, wait_job

# the layout of the defaults (8000, 8001, 8002, 8004, 8005, 8006) moved by 100 + 1000
MOVED = {"GATEWAY_PORT": 9100, "FFT_PORT": 9101, "CQT_PORT": 9102, "TONE_PORT": 9104}
MOVED |= {"PREDICTOR_PORT": 9105, "FUSER_PORT": 9106}
DEFAULT_PORTS = (8000, 8001, 8002, 8004, 8005, 8006)
START_TIMEOUT_S = 300.0
AUDIOSPLIT = REPO / ".venv" / "bin" / "audiosplit"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def clean_env(**extra: str) -> dict[str, str]:
    """This process' environment without any audiosplit setting a developer may have exported
    (the test is about what the port settings alone do), plus `extra`."""
    ours = {f"{s.port_field.upper()}" for s in SERVICES}
    ours |= {f"{name.upper()}_URLS" for name in DOWNSTREAM_SERVICES} | {"AUDIOSPLIT_URL"}
    return {**{k: v for k, v in os.environ.items() if k not in ours}, **extra}


class Decoy(ThreadingHTTPServer):
    """Answers every request with 500 and remembers what was asked."""

    daemon_threads = True

    def __init__(self, port: int):
        self.asked: list[str] = []
        decoy = self

        class Handler(BaseHTTPRequestHandler):
            def _fail(self) -> None:
                decoy.asked.append(f"{self.command} :{port}{self.path}")
                body = b'{"error": "decoy"}'
                self.send_response(500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _fail

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)


@pytest.fixture(scope="module")
def moved_stack(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """`./run.sh up` with the six port settings only; yields the gateway URL and the env."""
    taken = [p for p in (*MOVED.values(), *DEFAULT_PORTS) if listening(p)]
    if taken:
        pytest.skip(f"ports {taken} are in use here; this test needs them free")
    root = tmp_path_factory.mktemp("ports")
    models = root / "models"
    models.mkdir()
    env = clean_env(
        DATA_DIR=str(root / "data"),
        MODELS_DIR=str(models),
        TORCH_HOME=str(models / "torch"),
        HF_HOME=str(models / "huggingface"),
        HF_HUB_OFFLINE="1",
        **{k: str(v) for k, v in MOVED.items()},
    )
    proc = subprocess.Popen(
        [str(REPO / "run.sh"), "up"],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            lines.append(proc.stderr.readline())
            if "ready: http://" in lines[-1]:
                break
        assert "ready: http://127.0.0.1:9100" in lines[-1], "".join(lines)
        yield "http://127.0.0.1:9100", env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def song_file(path: Path, seconds: float, seed: int) -> Path:
    sf.write(path, mixture(make_song(seconds=seconds, seed=seed)).T, 44100, subtype="FLOAT")
    return path


def check_ready(url: str) -> None:
    """`/ready` names exactly the moved services, and every one is ok."""
    ready = httpx.get(url + "/ready", timeout=30).json()
    assert ready["status"] == "ready", ready
    moved_urls = {f"{s.name} http://127.0.0.1:{MOVED[s.port_field.upper()]}" for s in SERVICES}
    assert set(ready["checks"]) == {"loaded"} | (moved_urls - {"gateway http://127.0.0.1:9100"})


def separate_with_the_cli(song: Path, out: Path, env: dict[str, str]) -> None:
    """The CLI finds the gateway from GATEWAY_PORT alone (no AUDIOSPLIT_URL, no --url)."""
    run = subprocess.run(
        [str(AUDIOSPLIT), "separate", str(song), "--model", "dsp", "--out", str(out)],
        env=clean_env(GATEWAY_PORT=env["GATEWAY_PORT"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    stems = sorted(p.name for p in out.rglob("*.wav"))
    assert stems == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"], stems
    frames = {sf.info(p).frames for p in out.rglob("*.wav")}
    assert frames == {sf.info(song).frames}


def test_up_on_moved_ports_runs_a_job_with_nothing_on_the_defaults(moved_stack, tmp_path):
    url, env = moved_stack
    assert not [p for p in DEFAULT_PORTS if listening(p)], "the stack listens on a default port"
    check_ready(url)
    separate_with_the_cli(song_file(tmp_path / "song.wav", 8.0, seed=31), tmp_path / "out", env)
    with httpx.Client(base_url=url, timeout=60) as client:
        job = client.get("/api/jobs").json()["jobs"][0]
        analysis = client.get(f"/api/jobs/{job['id']}/analysis").json()
    assert job["status"] == "done" and job["model"] == "dsp"
    assert analysis["windows"] and analysis["track"]["key"], analysis["track"]


def test_a_decoy_on_the_default_ports_is_never_asked(moved_stack, tmp_path):
    url, env = moved_stack
    decoys = []
    try:
        for port in DEFAULT_PORTS:
            decoys.append(Decoy(port))
            threading.Thread(target=decoys[-1].serve_forever, daemon=True).start()
        check_ready(url)
        song = song_file(tmp_path / "song.wav", 6.5, seed=32)
        with httpx.Client(base_url=url, timeout=60) as client:
            with song.open("rb") as f:
                r = client.post("/api/jobs", files={"file": ("song.wav", f)})
            assert r.status_code == 202, r.text
            job = wait_job(client, r.json()["id"])
            result = client.get(job["links"]["result"])
        assert job["status"] == "done", job
        mix = sf.read(song, dtype="float32")[0]
        stems, _ = sf.read(io.BytesIO(result.content), dtype="float32")
        assert stems.shape == (len(mix), 2 * len(job["stems"]))
        assert np.isfinite(stems).all()
        separate_with_the_cli(song, tmp_path / "out", env)
    finally:
        for decoy in decoys:
            decoy.shutdown()
            decoy.server_close()
    assert [asked for decoy in decoys for asked in decoy.asked] == []
