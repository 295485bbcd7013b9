"""What the gateway tells a client, on the shared stack (empty models dir: dsp runs, AST is
missing): the dsp notice, short reasons, no server path in any body, the upload messages of
issue 18 (a file under another field, a 64-bit WAV, a truncated Ogg)."""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

from test.songgen import make_song, mixture
from test.stackutil import wait_job, wav_bytes

SONG_S = 3.0


def song(seconds: float = SONG_S, seed: int = 18) -> np.ndarray:
    """(2, n) float32 at 44.1 kHz."""
    return mixture(make_song(seconds, seed=seed)).astype(np.float32)


def strings(value) -> list[str]:
    """Every string in a JSON value, keys too."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_no_server_path_reaches_a_client(stack, client):
    settings = stack.settings
    answer = client.post("/api/jobs", files={"file": ("song.wav", wav_bytes(song()))})
    assert answer.status_code == 202, answer.text
    job = wait_job(client, answer.json()["id"])
    assert job["status"] == "done", job["error"]
    bodies = {
        "created": answer.json(),
        "job": job,
        "list": client.get("/api/jobs").json(),
        "models": client.get("/api/models").json(),
        "analysis": client.get(job["links"]["analysis"]).json(),
        "ready": client.get("/ready").json(),
        "unknown job": client.get("/api/jobs/nosuchjob123").json(),
        "named model without weights": client.post(
            "/api/jobs", files={"file": ("a.wav", wav_bytes(song(1.0)))}, data={"model": "umxhq"}
        ).json(),
        "ensemble without weights": client.post(
            "/api/jobs",
            files={"file": ("a.wav", wav_bytes(song(1.0)))},
            data={"model": "htdemucs,dsp"},
        ).json(),
    }
    paths = {str(settings.data_dir), str(settings.models_dir)}
    paths |= {str(settings.data_dir.resolve()), str(settings.models_dir.resolve())}
    for what, body in bodies.items():
        for text in strings(body):
            assert not any(p in text for p in paths), f"{what}: {text}"
    assert "umxhq cannot run here" in bodies["named model without weights"]["error"]["message"]

    # the dsp result says so, once, in the job; AST's absence is the analysis' to say
    assert job["notice"].startswith("Classical-DSP stems") and "2.3 dB" in job["notice"]
    assert job["model_reason"].startswith("model=auto: dsp, because htdemucs's weights")
    assert not any("instrument labels" in w for w in job["warnings"]), job["warnings"]
    tone = bodies["analysis"]["tone_model"]
    assert tone["available"] is False
    assert tone["reason"] == "AST weights not installed (./run.sh fetch-models ast)"
    listed = next(j for j in bodies["list"]["jobs"] if j["id"] == job["id"])
    assert listed["notice"] == job["notice"]


def test_a_file_under_another_field_is_told_where_it_goes(client):
    answer = client.post("/api/jobs", files={"audio": ("song.wav", wav_bytes(song(1.0)))})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "the song goes in form field 'file' (got a file in 'audio')"
    )


def pcm64_wav(samples: np.ndarray) -> bytes:
    """(2, n) in [-1, 1] as a 64-bit integer PCM WAV (what FFmpeg's pcm_s64le writes)."""
    pcm = np.clip(np.round(samples.T.astype(np.float64) * 2.0**63), -(2.0**63), 2.0**63 - 1024)
    data = pcm.astype("<i8").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 2, 44100, 44100 * 16, 16, 64)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_a_64_bit_integer_wav_is_separated(client):
    """Was a 415 quoting PyAV: "ValueError: Conversion from 's64' format ..."."""
    x = song(2.0, seed=64)
    answer = client.post(
        "/api/jobs", files={"file": ("s64.wav", pcm64_wav(x))}, data={"analysis": "false"}
    )
    assert answer.status_code == 202, answer.text
    job = wait_job(client, answer.json()["id"])
    assert job["status"] == "done" and job["warnings"] == [], job
    assert job["duration_s"] == x.shape[1] / 44100
    client.delete(f"/api/jobs/{job['id']}")


def test_a_truncated_ogg_is_warned_about(client):
    buf = io.BytesIO()
    sf.write(buf, song(8.0, seed=7).T, 44100, format="OGG", subtype="VORBIS")
    cut = buf.getvalue()[: len(buf.getvalue()) * 6 // 10]
    answer = client.post("/api/jobs", files={"file": ("cut.ogg", cut)}, data={"analysis": "false"})
    assert answer.status_code == 202, answer.text
    warnings = answer.json()["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("The file looks truncated"), warnings
    client.delete(f"/api/jobs/{answer.json()['id']}")
