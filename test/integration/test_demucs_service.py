"""Demucs through the six services: what a job gives back is what Demucs itself gives.

Real Demucs architectures (small size, random weights) are written where a download leaves
them, and the stack runs as real processes on loopback ports. A job with `model=htdemucs`
equals `demucs.api.Separator(shifts=0, overlap=0.25).separate_tensor`; a `quality=render` job
(htdemucs_ft, a bag of four members, one random shift each) equals Demucs given the shift
offsets the job's plan drew. The full-size figures come from `bench/bench_demucs_service.py`.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile as sf

from common.chunks import MAX_SHIFT
from common.config import Settings
from common.interfaces import PlanRequest, PlanResponse
from gateway.modelrun import SHIFT_SEED
from prediction.demucs_separator import offline_hub
from test.separation_fixtures import (
    FOUR,
    SMALL,
    TOLERANCE,
    demucs_reference,
    htdemucs,
    install_published,
    real_music,
    relative_error,
)
from test.stackutil import TESTDATA, separate_through_the_stack, start_stack


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music(20.0)
    if track is None:
        pytest.skip(f"real test music not found under {TESTDATA}")
    return track[:, : 20 * 44100]


@pytest.fixture(scope="module")
def models_settings(tmp_path_factory) -> Settings:
    """htdemucs and the four members of htdemucs_ft, as their downloads would leave them."""
    settings = Settings(_env_file=None, models_dir=tmp_path_factory.mktemp("dmodels"))
    install_published(settings, "htdemucs", [htdemucs(FOUR, 0, **SMALL)])
    install_published(settings, "htdemucs_ft", [htdemucs(FOUR, s, **SMALL) for s in (1, 2, 3, 4)])
    return settings


@pytest.fixture(scope="module")
def demucs_stack(tmp_path_factory, models_settings):
    # eager: test_compiled shows the compiled core gives the eager result
    stack = start_stack(
        tmp_path_factory.mktemp("ddata"), models_settings.models_dir, compile_models="off"
    )
    yield stack
    stack.stop()


def test_htdemucs_job_equals_separate_tensor(demucs_stack, models_settings, music):
    job, stems = separate_through_the_stack(demucs_stack, music, model="htdemucs")
    assert job["model"] == "htdemucs" and job["stems"] == FOUR
    with offline_hub(models_settings):
        reference = demucs_reference(music, "htdemucs")
    error = relative_error(stems, reference)
    print(f"\nhtdemucs job vs separate_tensor: max|diff|/peak {error:.2e}")
    assert error <= TOLERANCE


def test_render_job_runs_the_bag_with_a_shift_per_member_as_demucs_does(
    demucs_stack, models_settings, music
):
    job, stems = separate_through_the_stack(demucs_stack, music, quality="render")
    assert job["model"] == "htdemucs_ft" and job["options"]["shifts"] == 1
    # the offsets the job's plan drew: the plan is a function of the request
    request = PlanRequest(
        model="htdemucs_ft", n_frames=music.shape[1], overlap=0.25, shifts=1, seed=SHIFT_SEED
    )
    r = httpx.post(demucs_stack.url("predictor") + "/plan", json=request.model_dump(), timeout=120)
    plans = PlanResponse.model_validate_json(r.content).plans
    assert [{c.member for c in p.chunks} for p in plans] == [{0}, {1}, {2}, {3}]
    offsets = [MAX_SHIFT - p.lead for p in plans]
    with offline_hub(models_settings):
        reference = demucs_reference(music, "htdemucs_ft", shifts=1, offsets=offsets)
    error = relative_error(stems, reference)
    print(f"\nrender job (bag of 4, shifts=1) vs Demucs with its offsets: {error:.2e}")
    assert error <= TOLERANCE


def test_an_ensemble_is_the_weighted_average_of_its_members(demucs_stack, music):
    """model=htdemucs,dsp with weights 1,2: per stem, (1 x htdemucs + 2 x dsp) / 3 of the
    members' own single-model jobs (the members' stem orders differ: matched by name)."""
    music = music[:, : 12 * 44100]
    ensemble, mixed = separate_through_the_stack(
        demucs_stack, music, model="htdemucs,dsp", ensemble_weights="1,2"
    )
    assert ensemble["options"]["members"] == [
        {"model": "htdemucs", "weight": 1.0, "share": 0.333333},
        {"model": "dsp", "weight": 2.0, "share": 0.666667},
    ]
    assert ensemble["model"] == "htdemucs,dsp" and "weighted average" in ensemble["model_reason"]
    members = [
        separate_through_the_stack(demucs_stack, music, model=m) for m in ("htdemucs", "dsp")
    ]
    expected = np.zeros_like(mixed)
    for (job, stems), weight in zip(members, (1 / 3, 2 / 3), strict=True):
        for i, name in enumerate(ensemble["stems"]):
            expected[i] += weight * stems[job["stems"].index(name)]
    error = np.abs(mixed - expected).max() / np.abs(expected).max()
    print(f"\nensemble vs weighted members: max |diff| / peak = {error:.2e}")
    assert error <= 1e-4


def test_ensemble_members_must_share_the_stems_asked_for(demucs_stack, music):
    buf = io.BytesIO()
    sf.write(buf, music[:, :44100].T, 44100, subtype="FLOAT", format="WAV")
    with httpx.Client(base_url=demucs_stack.url("gateway"), timeout=60) as client:
        for fields, words in [
            ({"model": "htdemucs,nonsense"}, "nonsense"),
            ({"model": "htdemucs,dsp", "ensemble_weights": "1"}, "1 weights for 2 models"),
            ({"model": "htdemucs,umxhq"}, "umxhq"),  # no weights here: named
            ({"model": "htdemucs,dsp", "stems": "guitar"}, "no 'guitar' stem"),
        ]:
            r = client.post("/api/jobs", files={"file": ("a.wav", buf.getvalue())}, data=fields)
            assert r.status_code == 422, (fields, r.text)
            assert words in r.json()["error"]["message"], (fields, r.text)
