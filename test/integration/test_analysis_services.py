"""fft, cqt and the tone identifier as real uvicorn processes on loopback ports.

The tone identifier loads a tiny random-weight AST from a Hugging Face cache laid out as a hub
download, so the whole chain fft -> tone identifier runs a real AST forward over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from common.config import REPO_ROOT
from common.constants import SAMPLE_RATE
from common.instruments import STEM_FAMILIES
from common.interfaces import (
    AnalysisWindow,
    TrackTonal,
    TrackTonalRequest,
    WindowFeatures,
    WindowTonal,
)
from common.ports import free_port
from common.rawfile import RawArrayFile
from common.replicas import ReplicaPool
from common.wire import decode, encode
from gateway.analysis import Analyser
from test.astutil import write_tiny_ast

STARTUP_TIMEOUT_S = 90.0  # the tone identifier imports transformers and torch: seconds
SERVICES = {
    "tone": "prediction.tone_identifier:create_app",
    "fft": "transforms.fft:create_app",
    "cqt": "transforms.cqt:create_app",
}


def wait_healthy(urls: dict[str, str], procs: dict[str, subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            if procs[name].poll() is not None:
                log = (logs / f"{name}.log").read_text()[-3000:]
                pytest.fail(f"{name} exited with {procs[name].returncode}:\n{log}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"not healthy after {STARTUP_TIMEOUT_S} s: {sorted(pending)}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("analysis")
    write_tiny_ast(root / "hf")
    ports = {name: free_port() for name in SERVICES}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "HF_HOME": str(root / "hf"),
        "DATA_DIR": str(root / "data"),
        "MODELS_DIR": str(root / "models"),
        "DEVICE": "cpu",
        "TONE_URLS": urls["tone"],
        "FFT_PORT": str(ports["fft"]),
        "CQT_PORT": str(ports["cqt"]),
        "TONE_PORT": str(ports["tone"]),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("HF_HUB_CACHE", None)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, factory in SERVICES.items():
            cmd = [sys.executable, "-m", "uvicorn", "--factory", factory]
            cmd += ["--host", "127.0.0.1", "--port", str(ports[name])]
            with open(root / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        wait_healthy(urls, procs, root)
        yield urls
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def c_major_window(seconds: float = 10.0) -> np.ndarray:
    """I-IV-V-I with a bass note, 2.5 s per chord, plus a little noise: (2, n) float32."""
    t = np.arange(int(seconds / 4 * SAMPLE_RATE)) / SAMPLE_RATE
    parts = []
    for chord in ([48, 64, 67, 72], [53, 65, 69, 72], [55, 62, 67, 71], [48, 64, 67, 72]):
        tones = sum(np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in chord)
        parts.append(tones * np.exp(-t))
    mono = 0.1 * np.concatenate(parts)
    noise = 0.001 * np.random.default_rng(0).standard_normal((2, len(mono)))
    return (np.stack([mono, mono]) + noise).astype(np.float32)


def post_window(url: str, audio: np.ndarray, index: int) -> httpx.Response:
    meta = AnalysisWindow(job_id="itest", index=index, start_s=0.0, duration_s=10.0)
    body, headers = encode(audio, meta)
    return httpx.post(f"{url}/analyse", content=body, headers=headers, timeout=60.0)


def test_fft_forwards_to_the_tone_identifier(services):
    info = httpx.get(f"{services['tone']}/info").json()
    assert info["loaded"] is True, info

    response = post_window(services["fft"], c_major_window(), index=1)
    assert response.status_code == 200, response.text
    _, result = decode(response.content, response.headers, WindowFeatures)
    assert result.index == 1
    assert -40 < result.rms_db < result.peak_db < 0
    assert result.loudness_lufs is not None
    assert 100 < result.spectral_centroid_hz < 2000
    assert result.tone.status == "ok", result.tone.reason
    assert len(result.tone.labels) == 5
    assert set(result.tone.stems_present) == set(STEM_FAMILIES)


def test_cqt_finds_the_key_and_the_chords(services):
    audio = c_major_window()
    response = post_window(services["cqt"], audio, index=1)
    assert response.status_code == 200, response.text
    chroma, estimate = decode(response.content, response.headers, WindowTonal)
    assert (estimate.key.tonic, estimate.key.mode) == ("C", "major")
    assert sum(estimate.chroma) == pytest.approx(1.0, abs=1e-4)
    body, headers = encode(chroma, TrackTonalRequest(n_samples=audio.shape[1]))
    response = httpx.post(f"{services['cqt']}/track", content=body, headers=headers, timeout=60)
    track = TrackTonal.model_validate_json(response.content)
    assert [c.chord for c in track.chords if c.end_s - c.start_s > 1.0] == ["C", "F", "G", "C"]


def test_bad_bodies_are_4xx_over_http(services):
    for name in ("fft", "cqt"):
        for path in ("/analyse", "/track"):
            response = httpx.post(f"{services[name]}{path}", content=b"not audio", timeout=10.0)
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "bad_wire_format"


def test_the_analyser_holds_a_few_windows_not_the_track(services, tmp_path):
    """A job's analysis reads each window when it may send it: its memory is that of the
    windows in flight, not of the song (it once encoded every window up front, holding the
    whole 10-minute track, +225 MB). Python's peak allocation over a 3-minute run through the
    real services stays well under the track's own size."""
    audio = np.tile(c_major_window(), 18)  # (2, 180 s)
    path = tmp_path / "input.f32"
    audio.tofile(path)
    track = RawArrayFile(path, audio.shape)
    track_bytes = audio.nbytes
    del audio

    async def run():
        async with httpx.AsyncClient(timeout=120.0) as client:
            fft = ReplicaPool("fft", [services["fft"]], client, 1)
            cqt = ReplicaPool("cqt", [services["cqt"]], client, 1)
            try:
                return await Analyser(fft, cqt, 10.24).run("itest", track)
            finally:
                await fft.aclose()
                await cqt.aclose()

    tracemalloc.start()
    try:
        analysis = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(analysis.windows) == 18
    assert not analysis.warnings or "instrument labels" not in " ".join(analysis.warnings)
    assert all(not w.get("errors") for w in analysis.windows), analysis.windows[0]
    assert peak < 0.4 * track_bytes, (peak, track_bytes)
