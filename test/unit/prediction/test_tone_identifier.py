"""The tone identifier: without weights it answers `unavailable`; with a real AST architecture
(tiny, random weights, AudioSet's 527 labels) in a Hugging Face cache laid out as a hub download
leaves it, it loads through the same `from_pretrained(..., local_files_only=True)` path and
answers 5 labels and a score per stem family, on the input `ASTFeatureExtractor` makes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from common.constants import AST_MODEL_ID
from common.instruments import STEM_FAMILIES, STEM_LABELS
from common.interfaces import ToneInput, ToneResult
from common.wire import encode
from prediction import tone_identifier
from prediction.tone_identifier import create_app
from test.astutil import audioset_labels, write_tiny_ast
from test.musicgen import progression
from transforms.features import ast_input

LABELS = audioset_labels()


def tone_request(fbank: np.ndarray) -> tuple[bytes, dict[str, str]]:
    meta = ToneInput(job_id="job1", index=3, n_frames=fbank.shape[0], n_mels=fbank.shape[1])
    return encode(fbank, meta)


def log_mel(seed: int = 0) -> np.ndarray:
    """AST's input (1024, 128) of 10.24 s of generated chords, made by ASTFeatureExtractor."""
    chords = [((seed + 5 * i) % 12, "maj" if i % 2 else "min") for i in range(5)]
    return ast_input(progression(chords, seconds_per_chord=2.048, seed=seed))


@pytest.fixture
def empty_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return home


@pytest.fixture(scope="module")
def tiny_hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hf")
    write_tiny_ast(home)
    return home


def settings(tmp_path: Path) -> Settings:
    return Settings(models_dir=tmp_path / "models", data_dir=tmp_path / "data", device="cpu")


def test_without_weights_the_service_is_healthy_and_unavailable(tmp_path, empty_hf_home):
    with TestClient(create_app(settings(tmp_path))) as client:
        assert client.get("/health").status_code == 200
        body, headers = tone_request(log_mel())
        response = client.post("/identify", content=body, headers=headers)
        assert response.status_code == 200
        result = ToneResult.model_validate_json(response.content)
        assert result.status == "unavailable"
        assert result.labels == []
        # the client hears what to do; where the weights go is in the log, said once
        assert result.reason == "AST weights not installed (./run.sh fetch-models ast)"
        assert str(tmp_path) not in result.reason
        info = client.get("/info").json()
        assert info["loaded"] is False and info["reason"] == result.reason


def test_where_the_weights_should_be_is_logged_once(tmp_path, empty_hf_home, caplog):
    caplog.set_level(logging.WARNING, logger="audiosplit.tone")
    tone = tone_identifier.load_tone_model(settings(tmp_path))
    logged = [r.getMessage() for r in caplog.records if r.name == "audiosplit.tone"]
    assert len(logged) == 1 and str(empty_hf_home / "hub") in logged[0]
    assert "fetch-models ast" in logged[0] and str(tmp_path) not in tone.reason


def test_hf_home_defaults_to_the_models_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert tone_identifier.hub_cache_dir(settings(tmp_path)) == (
        tmp_path / "models" / "huggingface" / "hub"
    )


def test_tiny_ast_loads_from_a_hub_cache_and_gives_five_labels(tmp_path, tiny_hf_home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with TestClient(create_app(settings(tmp_path))) as client:
        info = client.get("/info").json()
        assert info["loaded"] is True, info["reason"]
        assert info["n_labels"] == len(LABELS) == 527

        body, headers = tone_request(log_mel())
        result = ToneResult.model_validate_json(
            client.post("/identify", content=body, headers=headers).content
        )
        assert result.status == "ok"
        assert len(result.labels) == 5
        assert {label.label for label in result.labels} <= set(LABELS)
        scores = [label.score for label in result.labels]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)

        assert set(result.stems_present) == set(STEM_FAMILIES)
        assert all(0.0 <= s <= 1.0 for s in result.stems_present.values())

        # The extractor pads every window to the model's 1024 frames; anything else is refused.
        body, headers = tone_request(log_mel()[:300])
        short = client.post("/identify", content=body, headers=headers)
        assert (
            short.status_code == 400 and "ASTFeatureExtractor" in short.json()["error"]["message"]
        )


def test_tiny_ast_matches_a_direct_forward_of_the_extractor_input(
    tmp_path, tiny_hf_home, monkeypatch
):
    import torch
    from transformers import ASTForAudioClassification

    monkeypatch.setenv("HF_HOME", str(tiny_hf_home))
    tone = tone_identifier.load_tone_model(settings(tmp_path))
    fbank = log_mel(1)
    result = tone_identifier.identify(tone, fbank)

    model = ASTForAudioClassification.from_pretrained(
        AST_MODEL_ID, cache_dir=tiny_hf_home / "hub", local_files_only=True
    ).eval()
    x = torch.from_numpy(fbank)[None]
    with torch.inference_mode():
        expected = torch.sigmoid(model(input_values=x).logits[0]).numpy()
    best = np.argsort(-expected)[:5]
    assert [label.label for label in result.labels] == [LABELS[i] for i in best]
    np.testing.assert_allclose([label.score for label in result.labels], expected[best], atol=1e-4)
    # each stem family scores the best of its AudioSet classes
    for family in STEM_FAMILIES:
        ids = [LABELS.index(name) for name in STEM_LABELS[family]]
        assert result.stems_present[family] == pytest.approx(expected[ids].max(), abs=1e-4)


@pytest.mark.parametrize(
    ("shape", "meta_shape"),
    [((1024, 128), (1000, 128)), ((1024,), (1024, 128)), ((10, 128, 1), (10, 128))],
)
def test_bad_bodies_are_4xx(tmp_path, empty_hf_home, shape, meta_shape):
    with TestClient(create_app(settings(tmp_path))) as client:
        fbank = np.zeros(shape, dtype=np.float32)
        meta = ToneInput(index=0, n_frames=meta_shape[0], n_mels=meta_shape[1])
        body, headers = encode(fbank, meta)
        response = client.post("/identify", content=body, headers=headers)
        assert 400 <= response.status_code < 500
        assert "error" in response.json()
        assert client.post("/identify", content=b"abc").status_code == 400
