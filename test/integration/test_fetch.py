"""First use fetches: weights missing here are downloaded through the library's own download.

A loopback HTTP server stands in for the hubs (HF_ENDPOINT for huggingface_hub, DEMUCS_ROOT_URL
and DEMUCS_REMOTE_ROOT for Demucs' legacy torch.hub repo): it serves a small random-weight
htdemucs, a corrupt htdemucs_6s (bytes that do not match the SHA-256 prefix in the name) and an
hdemucs_mmi that never answers, and counts requests. Nothing here reaches the real network.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from common.config import Settings
from gateway.stack import free_port
from test.separation_fixtures import FOUR, SMALL, htdemucs, package
from test.stackutil import start_stack, wait_job

GOOD, CORRUPT, HANGS = "955717e8", "5c90dfd2", "75fc33f5"  # htdemucs, htdemucs_6s, hdemucs_mmi
FETCH_TIMEOUT_S = 3


class FakeHub:
    """`GET /demucs/t/<file>` serves `files`; everything else (the HF hub's URLs) is 404."""

    def __init__(self, port: int, files: dict[str, bytes], hanging: set[str]):
        self.port, self.files, self.hanging = port, files, hanging
        self.requests: Counter[str] = Counter()
        self.server: ThreadingHTTPServer | None = None
        self.release = threading.Event()

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.requests[f"HEAD {self.path}"] += 1
                self.send_response(404 if self.path != "/" else 200)
                self.end_headers()

            def do_GET(self) -> None:
                hub.requests[f"GET {self.path}"] += 1
                name = self.path.rsplit("/", 1)[-1]
                if name in hub.hanging:
                    hub.release.wait(60)  # until the test ends: the client must time out
                    return
                body = hub.files.get(name) if self.path.startswith("/demucs/t/") else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def downloads(self, sig: str) -> int:
        return sum(n for key, n in self.requests.items() if key.startswith(f"GET /demucs/t/{sig}"))


def th_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(package(model), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The fake hub (not started: the first test runs offline) and its remote root folder."""
    import demucs.pretrained

    root = tmp_path_factory.mktemp("remote")
    for yaml in Path(demucs.pretrained.REMOTE_ROOT).glob("*.yaml"):
        shutil.copy(yaml, root)
    good = th_bytes(htdemucs(FOUR, seed=0, **SMALL))
    corrupt_claims = hashlib.sha256(good).hexdigest()[:8]  # the name claims good's hash
    names = {
        GOOD: f"{GOOD}-{hashlib.sha256(good).hexdigest()[:8]}.th",
        CORRUPT: f"{CORRUPT}-{corrupt_claims}.th",
        HANGS: f"{HANGS}-0badf00d.th",
    }
    lines = [
        line
        for line in (Path(demucs.pretrained.REMOTE_ROOT) / "files.txt").read_text().splitlines()
        if line.split("-", 1)[0] not in names
    ]
    (root / "files.txt").write_text("\n".join([*lines, "root: t/", *names.values()]) + "\n")
    files = {names[GOOD]: good, names[CORRUPT]: good[:-1000] + b"x" * 1000}
    fake = FakeHub(free_port(), files, hanging={names[HANGS]})
    fake.names, fake.remote_root = names, root
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fetch_models")


@pytest.fixture(scope="module")
def client(hub, models_dir, tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("fetch_data"),
        models_dir,
        auto_fetch="true",  # the test session's default is off (test/conftest.py)
        hf_hub_offline="0",
        hf_endpoint=f"http://127.0.0.1:{hub.port}",
        demucs_root_url=f"http://127.0.0.1:{hub.port}/demucs/",
        demucs_remote_root=str(hub.remote_root),
        fetch_timeout_s=FETCH_TIMEOUT_S,
        network_check_ttl_s=1,
        compile_models="off",
    )
    with httpx.Client(base_url=stack.url("gateway"), timeout=120) as c:
        yield c
    stack.stop()


@pytest.fixture(scope="module")
def upload() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    noise = (0.1 * rng.standard_normal((4 * 44100, 2))).astype("float32")
    sf.write(buf, noise, 44100, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def submit(client: httpx.Client, upload: bytes, **fields) -> dict:
    r = client.post("/api/jobs", files={"file": ("song.wav", upload)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()


def test_offline_auto_falls_back_to_dsp_at_once(client, upload, hub):
    start = time.perf_counter()
    job = submit(client, upload)
    assert time.perf_counter() - start < 10  # no ~25 s of hub retries
    assert job["model"] == "dsp"
    assert "no network" in job["model_reason"], job["model_reason"]
    assert wait_job(client, job["id"], timeout=120)["status"] == "done"
    hub.start()  # the hubs come up: the next tests fetch
    time.sleep(11)  # the gateway's model list (10 s) and the predictor's network check (1 s)


def test_first_job_fetches_once_and_later_jobs_find_the_file(client, upload, hub, models_dir):
    jobs = [submit(client, upload, model="htdemucs") for _ in range(2)]
    stages = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        states = [client.get(f"/api/jobs/{j['id']}").json() for j in jobs]
        stages |= {s["stage"] for s in states}
        if all(s["status"] in ("done", "failed") for s in states):
            break
        time.sleep(0.1)
    assert [s["status"] for s in states] == ["done", "done"], states
    assert all(s["model"] == "htdemucs" for s in states)
    assert "downloading model" in stages, stages
    assert hub.downloads(GOOD) == 1, hub.requests  # two jobs, one download
    landed = models_dir / "torch" / "hub" / "checkpoints" / hub.names[GOOD]
    assert landed.is_file()
    again = wait_job(client, submit(client, upload, model="htdemucs")["id"], timeout=120)
    assert again["status"] == "done" and hub.downloads(GOOD) == 1


def test_corrupt_download_fails_the_job_and_keeps_nothing(client, upload, hub, models_dir):
    job = wait_job(client, submit(client, upload, model="htdemucs_6s")["id"], timeout=120)
    assert job["status"] == "failed", job
    message = job["error"]["message"]
    assert "htdemucs_6s" in message and "fetch-models htdemucs_6s" in message, message
    assert "hash" in message.lower(), message
    checkpoints = models_dir / "torch" / "hub" / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(CORRUPT)]


def test_a_stalled_download_fails_with_a_timeout(client, upload, hub, models_dir):
    start = time.perf_counter()
    job = wait_job(client, submit(client, upload, model="hdemucs_mmi")["id"], timeout=60)
    assert job["status"] == "failed", job
    assert f"no data for {FETCH_TIMEOUT_S} s" in job["error"]["message"], job["error"]
    assert time.perf_counter() - start < 40
    checkpoints = models_dir / "torch" / "hub" / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(HANGS)]


def test_auto_fetch_off_asks_no_hub(hub, tmp_path, monkeypatch):
    """In process: the predictor with AUTO_FETCH=false neither offers nor fetches."""
    import demucs.pretrained
    from fastapi.testclient import TestClient

    from gateway.options import JobOptions, resolve_options
    from prediction.channel_predictor import create_app

    if hub.server is None:
        hub.start()
    # the predictor points Demucs' module globals at the fake hub: restore them after
    monkeypatch.setattr(demucs.pretrained, "ROOT_URL", demucs.pretrained.ROOT_URL)
    monkeypatch.setattr(demucs.pretrained, "REMOTE_ROOT", demucs.pretrained.REMOTE_ROOT)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    settings = Settings(
        _env_file=None,
        models_dir=tmp_path,
        auto_fetch=False,
        hf_endpoint=f"http://127.0.0.1:{hub.port}",
        demucs_root_url=f"http://127.0.0.1:{hub.port}/demucs/",
        demucs_remote_root=str(hub.remote_root),
    )
    before = sum(hub.requests.values())
    with TestClient(create_app(settings)) as predictor:
        infos = {i["name"]: i for i in predictor.get("/models").json()}
        assert not infos["htdemucs"]["fetchable"]
        assert "AUTO_FETCH=false" in infos["htdemucs"]["reason"]
        r = predictor.post("/models/htdemucs/fetch")
        assert r.status_code == 422, r.text
    from common.interfaces import SeparatorInfo

    resolved = resolve_options(
        JobOptions(), {n: SeparatorInfo.model_validate(i) for n, i in infos.items()}
    )
    assert resolved.model == "dsp"
    assert sum(hub.requests.values()) == before
