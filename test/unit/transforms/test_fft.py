"""The fft service in-process: features, the ToneInput it forwards, its series, the track
endpoint, and how it degrades."""

from __future__ import annotations

import socket

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from common.config import Settings
from common.interfaces import (
    AnalysisWindow,
    ToneInput,
    TrackRhythm,
    TrackRhythmRequest,
    WindowFeatures,
)
from common.wire import decode, encode
from transforms import features
from transforms.fft import create_app

SR = 44100
OK_ANSWER = {"status": "ok", "labels": [{"label": "Music", "score": 0.9}]}


def features_of(response) -> WindowFeatures:
    assert response.status_code == 200, response.text
    return decode(response.content, response.headers, WindowFeatures)[1]


def window_request(audio: np.ndarray, index: int = 2) -> tuple[bytes, dict[str, str]]:
    meta = AnalysisWindow(job_id="job1", index=index, start_s=20.0, duration_s=10.0)
    return encode(audio, meta)


def a440(seconds: float = 10.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    mono = 0.25 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono, mono]).astype(np.float32)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def fake_tone_identifier(seen: list, answer: dict, status: int = 200) -> FastAPI:
    """Stands in for the tone identifier: records each ToneInput with its log-mel."""
    app = FastAPI()

    @app.post("/identify")
    async def identify(request: Request) -> JSONResponse:
        fbank, meta = decode(await request.body(), request.headers, ToneInput)
        seen.append((meta, fbank.copy()))
        return JSONResponse(answer, status_code=status)

    return app


def fft_client(tmp_path, tone_app: FastAPI | None = None) -> TestClient:
    """The fft service, reaching `tone_app` in-process, or a closed port when None."""
    tone_urls = "http://tone" if tone_app else closed_port_url()
    transport = httpx.ASGITransport(app=tone_app) if tone_app else None
    settings = Settings(data_dir=tmp_path, tone_urls=tone_urls)
    return TestClient(create_app(settings, tone_transport=transport))


def test_without_warm_up_it_is_healthy_at_once_and_loads_on_first_use(tmp_path):
    """WARM_UP=false (the tests' stacks): healthy before the warm-up; the first window warms
    it up; BeatNet waits for the first /beats."""
    settings = Settings(data_dir=tmp_path, tone_urls=closed_port_url(), warm_up=False)
    with TestClient(create_app(settings)) as client:
        state = client.app.state
        assert client.get("/health").status_code == 200
        assert not state.warm.done and not state.beats.done
        body, headers = window_request(a440())
        assert features_of(client.post("/analyse", content=body, headers=headers)).index == 2
        assert state.warm.done and not state.beats.done


def test_features_and_the_forwarded_tone_input(tmp_path):
    seen: list = []
    audio = a440()
    with fft_client(tmp_path, fake_tone_identifier(seen, OK_ANSWER)) as client:
        assert client.get("/health").status_code == 200
        body, headers = window_request(audio)
        response = client.post("/analyse", content=body, headers=headers)
    values, result = decode(response.content, response.headers, WindowFeatures)
    assert result.index == 2
    assert result.rms_db == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.01)
    assert result.peak_db == pytest.approx(20 * np.log10(0.25), abs=0.01)
    assert result.loudness_lufs is not None and -20 < result.loudness_lufs < -10
    assert result.spectral_centroid_hz == pytest.approx(440, abs=25)
    assert result.tone.status == "ok" and result.tone.labels[0].label == "Music"
    # onset and accent of every frame of the window, then one loudness sum per 100 ms
    assert result.n_onset == 1 + len(audio[0]) // 2 // 512
    assert result.n_blocks == -(-len(audio[0]) // 4410)
    assert values.shape == (2 * result.n_onset + result.n_blocks,)

    [(meta, fbank)] = seen
    assert (meta.job_id, meta.index, meta.n_frames, meta.n_mels) == ("job1", 2, 1024, 128)
    # what ASTFeatureExtractor makes of the window, mono at 16 kHz
    from transformers import ASTFeatureExtractor

    mono_16k = features.to_mono_16k(audio)
    expected = ASTFeatureExtractor()(mono_16k, sampling_rate=16000, return_tensors="np")
    np.testing.assert_allclose(fbank, expected["input_values"][0], atol=1e-5)


def test_unreachable_tone_identifier_gives_unavailable_not_an_error(tmp_path):
    with fft_client(tmp_path) as client:
        body, headers = window_request(a440(2.0))
        result = features_of(client.post("/analyse", content=body, headers=headers))
    assert result.tone.status == "unavailable"
    assert "could not be reached" in result.tone.reason
    assert result.rms_db > -20


def test_a_refusing_tone_identifier_gives_unavailable_with_its_message(tmp_path):
    refusal = {"error": {"code": "bad_tone_input", "message": "the model takes 64 mel bins"}}
    with fft_client(tmp_path, fake_tone_identifier([], refusal, status=400)) as client:
        body, headers = window_request(a440(2.0))
        tone = features_of(client.post("/analyse", content=body, headers=headers)).tone
    assert tone.status == "unavailable"
    assert "(400)" in tone.reason and "64 mel bins" in tone.reason


def test_an_unreadable_tone_answer_gives_unavailable(tmp_path):
    with fft_client(tmp_path, fake_tone_identifier([], {"labels": "many"})) as client:
        body, headers = window_request(a440(2.0))
        tone = features_of(client.post("/analyse", content=body, headers=headers)).tone
    assert tone.status == "unavailable" and "cannot read" in tone.reason


def test_silence_and_a_tiny_window_still_give_features(tmp_path):
    seen: list = []
    with fft_client(tmp_path, fake_tone_identifier(seen, OK_ANSWER)) as client:
        body, headers = window_request(np.zeros((2, 10 * SR), np.float32))
        silent = features_of(client.post("/analyse", content=body, headers=headers))
        body, headers = window_request(a440(0.01))
        tiny = features_of(client.post("/analyse", content=body, headers=headers))
    assert silent.rms_db == features.DB_FLOOR and silent.loudness_lufs is None
    assert silent.spectral_centroid_hz == 0.0
    assert tiny.loudness_lufs is None
    assert tiny.tone.status == "unavailable" and "25 ms" in tiny.tone.reason
    assert len(seen) == 1  # the tiny window was never forwarded


@pytest.mark.parametrize(
    "audio",
    [np.zeros((1, 1000), np.float32), np.zeros((2, 0), np.float32), np.zeros(10, np.float32)],
    ids=["mono", "empty", "1-d"],
)
def test_bad_audio_is_a_4xx(tmp_path, audio):
    with fft_client(tmp_path) as client:
        body, headers = window_request(audio)
        response = client.post("/analyse", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_audio_shape"


def test_bad_wire_bodies_are_4xx(tmp_path):
    body, headers = window_request(a440(1.0))
    with fft_client(tmp_path) as client:
        truncated = client.post("/analyse", content=body[:-4], headers=headers)
        no_meta = client.post(
            "/analyse", content=body, headers={"x-audiosplit-shape": headers["x-audiosplit-shape"]}
        )
        bad_meta = client.post(
            "/analyse", content=body, headers={**headers, "x-audiosplit-meta": '{"index": "x"}'}
        )
        nan = window_request(np.full((2, 100), np.nan, np.float32))
        not_finite = client.post("/analyse", content=nan[0], headers=nan[1])
    for response in (truncated, no_meta, bad_meta, not_finite):
        assert response.status_code == 400, response.text
        assert set(response.json()["error"]) == {"code", "message"}


def test_a_window_that_does_not_fit_its_body_is_a_400(tmp_path):
    audio = a440(1.0)
    with fft_client(tmp_path) as client:
        for fields in (
            {"context_before": 1000},  # off the frame grid
            {"window_length": 2 * SR},  # longer than the body
            {"own_length": 100, "window_length": 50},
        ):
            meta = AnalysisWindow(index=0, start_s=0.0, duration_s=1.0, **fields)
            body, headers = encode(audio, meta)
            response = client.post("/analyse", content=body, headers=headers)
            assert response.status_code == 400, fields
            assert response.json()["error"]["code"] == "bad_analysis_window"


def test_track_gives_tempo_beats_and_loudness(tmp_path):
    from test.musicgen import drum_pattern
    from transforms import loudness, rhythm

    audio = drum_pattern(100.0, seconds=12.0)
    mono = rhythm.to_analysis_rate(audio)
    onset, accent = rhythm.onset_envelope(mono), rhythm.accent_envelope(mono)
    steps = loudness.step_sums(audio, 0, audio.shape[1], 0)
    meta = TrackRhythmRequest(n_samples=audio.shape[1], n_frames=len(onset), n_blocks=len(steps))
    with fft_client(tmp_path) as client:
        body, headers = encode(np.concatenate([onset, accent, steps]), meta)
        result = TrackRhythm.model_validate_json(
            client.post("/track", content=body, headers=headers).content
        )
        wrong = encode(onset, meta)
        refused = client.post("/track", content=wrong[0], headers=wrong[1])
    assert result.tempo_bpm == pytest.approx(100.0, rel=0.02)
    assert np.diff(result.beats_s).mean() == pytest.approx(0.6, rel=0.02)
    assert result.downbeats_s is None and result.downbeats_reason
    assert result.loudness_lufs == pytest.approx(features.integrated_loudness(audio), abs=1e-3)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_track_series"
