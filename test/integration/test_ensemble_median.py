"""`ensemble_method=median_wave`: an ensemble job is, per stem and sample, the median of its
members' own single-model jobs (three members, equal weights: `np.median`)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile as sf

from common.config import Settings
from test.separation_fixtures import FOUR, SMALL, htdemucs, install_published, real_music
from test.stackutil import TESTDATA, start_stack
from test.stackutil import separate_through_the_stack as separate

MEMBERS = ("htdemucs", "htdemucs_ft", "dsp")


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music(8.0)
    if track is None:
        pytest.skip(f"real test music not found under {TESTDATA}")
    return track[:, : 8 * 44100]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = Settings(_env_file=None, models_dir=tmp_path_factory.mktemp("mmodels"))
    install_published(settings, "htdemucs", [htdemucs(FOUR, 0, **SMALL)])
    install_published(settings, "htdemucs_ft", [htdemucs(FOUR, s, **SMALL) for s in (1, 2, 3, 4)])
    stack = start_stack(tmp_path_factory.mktemp("mdata"), settings.models_dir, compile_models="off")
    yield stack
    stack.stop()


def test_a_median_ensemble_is_the_median_of_its_members(stack, music):
    job, median = separate(stack, music, model=",".join(MEMBERS), ensemble_method="median_wave")
    assert job["options"]["ensemble_method"] == "median_wave"
    assert "weighted median" in job["model_reason"], job["model_reason"]
    members = [separate(stack, music, model=m) for m in MEMBERS]
    by_name = np.stack(
        [[stems[one["stems"].index(s)] for s in job["stems"]] for one, stems in members]
    )
    expected = np.median(by_name, axis=0)
    error = np.abs(median - expected).max() / np.abs(expected).max()
    mean_error = np.abs(by_name.mean(axis=0) - expected).max() / np.abs(expected).max()
    print(f"\nmedian ensemble vs np.median of members: max |diff| / peak = {error:.2e}")
    assert error <= 1e-4
    assert mean_error > 1e-2  # the members differ: the median is not their mean here


def test_the_method_must_be_known(stack, music):
    buf = io.BytesIO()
    sf.write(buf, music[:, :44100].T, 44100, subtype="FLOAT", format="WAV")
    with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
        for fields, words in [
            ({"model": "htdemucs,dsp", "ensemble_method": "max_wave"}, "avg_wave, median_wave"),
            ({"model": "htdemucs", "ensemble_method": "median_wave"}, "need an ensemble"),
        ]:
            r = client.post("/api/jobs", files={"file": ("a.wav", buf.getvalue())}, data=fields)
            assert r.status_code == 422, (fields, r.text)
            assert words in r.json()["error"]["message"], (fields, r.text)
