"""Start the real six-service stack on free loopback ports for a test session."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from common.config import Settings
from common.ports import free_port
from gateway.stack import SERVICES, Stack

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"
APPS_KEY = "page-test-key-5b1d"  # the keys stack's API_KEYS key (test/conftest.py: keys_stack)


def stack_settings(data_dir: Path, models_dir: Path, **extra) -> tuple[Settings, dict[str, str]]:
    """Settings and the environment that carries them to the service processes."""
    env = {
        "DATA_DIR": str(data_dir),
        "MODELS_DIR": str(models_dir),
        "TORCH_HOME": str(models_dir / "torch"),
        "HF_HOME": str(models_dir / "huggingface"),
        "HF_HUB_OFFLINE": "1",
        "BIND_HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
        # fft and cqt load what analysis needs on its first call, not at start: most test
        # stacks run no analysis, and a start then costs ~10 CPU-seconds less (of ~20)
        "WARM_UP": "false",
    }
    for service in SERVICES:
        port = free_port()
        env[service.port_field.upper()] = str(port)
        if service.urls_field:
            env[service.urls_field.upper()] = f"http://127.0.0.1:{port}"
    env.update({k.upper(): str(v) for k, v in extra.items()})
    settings = Settings(
        _env_file=None,
        **{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields},
    )
    return settings, env


def start_stack(data_dir: Path, models_dir: Path, **extra) -> Stack:
    settings, env = stack_settings(data_dir, models_dir, **extra)
    stack = Stack(settings, env)
    stack.start()
    try:
        stack.wait_healthy(timeout=240)
    except BaseException:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def own_stack(tmp_path: Path, models: Path | None = None, **extra) -> Iterator[Stack]:
    """A test's own stack under `tmp_path` (an empty models dir unless given: dsp runs)."""
    if models is None:
        models = tmp_path / "models"
        models.mkdir(parents=True, exist_ok=True)
    stack = start_stack(tmp_path / "data", models, **extra)
    try:
        yield stack
    finally:
        stack.stop()


def wav_bytes(samples: np.ndarray, subtype: str = "FLOAT", fmt: str = "WAV") -> bytes:
    """(2, n) samples at 44.1 kHz as an upload's bytes."""
    buf = io.BytesIO()
    sf.write(buf, samples.T, 44100, subtype=subtype, format=fmt)
    return buf.getvalue()


def dsp_stack(tmp_path_factory, prefix: str) -> Iterator[Stack]:
    """A module fixture's body: the real stack on an empty models dir (no weights: the dsp
    separator runs), stopped after the module."""
    data = tmp_path_factory.mktemp(f"{prefix}_data")
    stack = start_stack(data, tmp_path_factory.mktemp(f"{prefix}_models"))
    yield stack
    stack.stop()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300.0) -> dict:
    """Poll until the job is done or failed; fail the test if it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.25)


def spawn_gateway(port: int, env: dict[str, str]) -> subprocess.Popen:
    """A gateway alone under uvicorn on 127.0.0.1:`port` in its own process group, `env` added
    to this process's environment (wait for it with `wait_process_healthy`)."""
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "gateway.app:create_app"]
    return subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "GATEWAY_PORT": str(port), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_process_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Poll `url`/health until 200; fail at once if the process behind it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the process behind {url} exited with {proc.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def separate_through_the_stack(stack, music: np.ndarray, **fields: str) -> tuple[dict, np.ndarray]:
    buf = io.BytesIO()
    sf.write(buf, music.T, 44100, subtype="FLOAT", format="WAV")
    with httpx.Client(base_url=stack.url("gateway"), timeout=120) as client:
        r = client.post(
            "/api/jobs",
            files={"file": ("music.wav", buf.getvalue())},
            data={"analysis": "false", **fields},
        )
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"], timeout=600)
        assert job["status"] == "done", job
        result, rate = sf.read(
            io.BytesIO(client.get(job["links"]["result"]).content), dtype="float32"
        )
    assert rate == 44100 and result.shape == (music.shape[1], 2 * len(job["stems"]))
    return job, result.T.reshape(len(job["stems"]), 2, -1)
