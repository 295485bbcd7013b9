"""GET /api/jobs/{id}/mix and `audiosplit mix` through the real stack the integration tests
share (dsp separator, one 3 s job for the module): the stretched mix's length, the exact mix
at speed 1, the refusals, the file the command writes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
import soundfile as sf

from test.songgen import make_song, mixture
from test.stackutil import REPO, wait_job, wav_bytes

SONG_S = 3.0
RATE = 44100


@pytest.fixture(scope="module")
def job(client) -> dict:
    song = wav_bytes(mixture(make_song(SONG_S, seed=5)))
    r = client.post("/api/jobs", files={"file": ("practice.wav", song)}, data={"analysis": "false"})
    assert r.status_code == 202, r.text
    done = wait_job(client, r.json()["id"])
    assert done["status"] == "done", done
    return done


@pytest.fixture(scope="module")
def stems(client, job) -> dict[str, np.ndarray]:
    """Each stem (2, n) as the result WAV holds it."""
    result, _ = sf.read(io.BytesIO(client.get(job["links"]["result"]).content), dtype="float32")
    return {s: result[:, 2 * i : 2 * i + 2].T for i, s in enumerate(job["stems"])}


def mix(client, job, **params) -> httpx.Response:
    return client.get(f"/api/jobs/{job['id']}/mix", params=params)


def decoded(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    audio, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    assert rate == RATE and audio.shape[1] == 2
    return audio.T


def test_the_mix_is_stretched_to_its_length_and_exact_at_speed_1(client, job, stems):
    frames = next(iter(stems.values())).shape[1]
    slow = mix(client, job, speed=0.8, semitones=2, gains="drums:-6", format="flac")
    assert slow.headers["content-type"] == "audio/flac"
    assert 'filename="practice_mix.flac"' in slow.headers["content-disposition"]
    assert decoded(slow).shape[1] == round(frames / 0.8)
    assert decoded(mix(client, job, speed=1.25)).shape[1] == round(frames / 1.25)
    assert job["links"]["mix"] == f"/api/jobs/{job['id']}/mix"
    everything = sum(stems.values())
    np.testing.assert_allclose(decoded(mix(client, job)), everything, atol=1e-6, rtol=0)
    karaoke = decoded(mix(client, job, gains="vocals:-inf"))
    np.testing.assert_allclose(karaoke, everything - stems["vocals"], atol=1e-6, rtol=0)
    # asked again: the kept file, byte for byte
    again = mix(client, job, speed="0.80", semitones="2.0", gains="drums:-6.0", format="flac")
    assert again.content == slow.content


@pytest.mark.parametrize(
    "params,words",
    [
        ({"gains": "guitar:-6"}, "no stem 'guitar'"),
        ({"gains": "vocals"}, "is not STEM:VALUE"),
        ({"speed": 2}, "speed"),
        ({"semitones": -13}, "semitones"),
        ({"format": "ogg"}, "format"),
        ({"pan": "bass:3"}, "is not a pan"),
    ],
)
def test_bad_options_are_a_422_naming_the_problem(client, job, params, words):
    r = mix(client, job, **params)
    assert r.status_code == 422 and words in r.json()["error"]["message"], r.text


def test_an_unknown_job_is_a_404(client):
    assert client.get("/api/jobs/nosuchjob000/mix").status_code == 404


def test_the_command_writes_the_mix(stack, job, stems, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIOSPLIT_")}
    cmd = [sys.executable, "-m", "gateway.cli", "mix", job["id"], "--url", stack.url("gateway")]
    cmd += ["--mute", "vocals", "--gain", "drums=-6", "--speed", "0.8", "-o", "slow.wav"]
    done = subprocess.run(
        cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "slow.wav"
    audio, rate = sf.read(tmp_path / "slow.wav", dtype="float32")
    assert rate == RATE and audio.shape == (round(stems["vocals"].shape[1] / 0.8), 2)
    assert not list(tmp_path.glob("*.part"))
    # the gateway's name for it when -o is not given; its refusal as one line, exit 1
    cmd = cmd[:7] + ["--format", "mp3"]
    named = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, text=True)
    assert named.returncode == 0 and (tmp_path / "practice_mix.mp3").stat().st_size > 1000
    refused = subprocess.run(
        [*cmd, "--gain", "guitar=-3"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "no stem 'guitar'" in refused.stderr
    assert "Traceback" not in refused.stderr
