"""The cqt service in-process: a key and chroma for a window, key and chords for a track, None
with a reason for silence, 4xx for junk."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from common.interfaces import AnalysisWindow, TrackTonal, TrackTonalRequest, WindowTonal
from common.wire import decode, encode
from transforms.cqt import create_app

SR = 44100


def chords(seconds_each: float = 2.5) -> np.ndarray:
    """C major, F major, G major, C major triads with a bass note: (2, n) float32."""
    t = np.arange(int(seconds_each * SR)) / SR
    parts = []
    for chord in ([48, 64, 67, 72], [53, 65, 69, 72], [55, 62, 67, 71], [48, 64, 67, 72]):
        freqs = [440 * 2 ** ((m - 69) / 12) for m in chord]
        parts.append(sum(np.sin(2 * np.pi * f * t) for f in freqs) * np.exp(-t))
    mono = 0.1 * np.concatenate(parts)
    return np.stack([mono, mono]).astype(np.float32)


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        yield c


def post(client: TestClient, audio: np.ndarray, index: int = 0):
    meta = AnalysisWindow(job_id="j", index=index, start_s=0.0, duration_s=audio.shape[1] / SR)
    body, headers = encode(audio, meta)
    return client.post("/analyse", content=body, headers=headers)


def tonal(response) -> tuple[np.ndarray, WindowTonal]:
    assert response.status_code == 200, response.text
    return decode(response.content, response.headers, WindowTonal)


def test_health_and_a_key(client):
    assert client.get("/health").status_code == 200
    audio = chords()
    frames, estimate = tonal(post(client, audio, index=4))
    assert estimate.index == 4
    assert (estimate.key.tonic, estimate.key.mode) == ("C", "major")
    assert 0.5 < estimate.key.confidence <= 1.0
    assert len(estimate.chroma) == 12 and sum(estimate.chroma) == pytest.approx(1.0, abs=1e-4)
    assert frames.shape == (12, 1 + audio.shape[1] // 2 // 512)


def test_without_warm_up_it_is_healthy_at_once_and_loads_on_first_use(tmp_path):
    """WARM_UP=false: healthy before the warm-up; the first window warms it up; Basic Pitch
    waits for the first /transcribe."""
    with TestClient(create_app(Settings(data_dir=tmp_path, warm_up=False))) as client:
        state = client.app.state
        assert client.get("/health").status_code == 200
        assert not state.warm.done and not state.transcriber.done
        _, estimate = tonal(post(client, chords()))
        assert estimate.key.tonic == "C"
        assert state.warm.done and not state.transcriber.done


def test_silence_has_no_key(client):
    _, estimate = tonal(post(client, np.zeros((2, 10 * SR), np.float32)))
    assert estimate.key is None and "silent" in estimate.key_reason and not any(estimate.chroma)


def test_track_key_and_chords(client):
    audio = chords()
    frames, _ = tonal(post(client, audio))
    body, headers = encode(frames, TrackTonalRequest(n_samples=audio.shape[1]))
    track = TrackTonal.model_validate_json(
        client.post("/track", content=body, headers=headers).content
    )
    assert (track.key.tonic, track.key.mode) == ("C", "major")
    assert [c.chord for c in track.chords if c.end_s - c.start_s > 0.5] == ["C", "F", "G", "C"]
    assert track.chords[-1].end_s == pytest.approx(audio.shape[1] / SR, abs=0.03)

    short, _ = tonal(post(client, audio[:, : 2 * SR]))
    body, headers = encode(short, TrackTonalRequest(n_samples=2 * SR))
    brief = TrackTonal.model_validate_json(
        client.post("/track", content=body, headers=headers).content
    )
    assert brief.key is None and brief.chords is None and "at least" in brief.chords_reason
    body, headers = encode(frames[:5], TrackTonalRequest(n_samples=audio.shape[1]))
    assert client.post("/track", content=body, headers=headers).status_code == 400


def test_a_tiny_window_is_answered(client):
    response = post(client, chords()[:, :100])
    assert response.status_code == 200


@pytest.mark.parametrize(
    "audio",
    [np.zeros((1, 100), np.float32), np.full((2, 10), np.inf, np.float32)],
    ids=["mono", "inf"],
)
def test_bad_audio_is_a_400(client, audio):
    response = post(client, audio)
    assert response.status_code == 400
    assert "error" in response.json()


def test_too_short_reads_shorter_than_the_minimum():
    from common.constants import SAMPLE_RATE
    from transforms.cqt import too_short

    assert too_short(int(3.96 * SAMPLE_RATE), 4.0, "a key") == (
        "3.96 s of audio; a key needs at least 4 s"
    )
