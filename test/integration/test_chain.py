"""Chained separation through the whole stack (the shared dsp stack): a chained stem is
replaced by its parts, `<stem>-<part>`, everywhere the stems are (the multi-channel WAV, the
per-stem files, the ZIP), and each part equals the second model run alone on the first stage's
stem downloaded as a float WAV; bad chains and recipes get a 422 naming the problem."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import soundfile as sf

from test.separation_fixtures import real_music
from test.stackutil import TESTDATA, wait_job

SECONDS = 12.0
DSP = ("vocals", "drums", "bass", "other")


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music(SECONDS)
    if track is None:
        pytest.skip(f"real test music not found under {TESTDATA}")
    return np.ascontiguousarray(track[:, : int(SECONDS * 44100)])


def float_wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.T, 44100, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def run_job(client, wav: bytes, **fields) -> dict:
    r = client.post(
        "/api/jobs", files={"file": ("song.wav", wav)}, data={"analysis": "false", **fields}
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"], timeout=300)
    assert job["status"] == "done", job
    return job


def stems_of(client, job: dict) -> np.ndarray:
    """(n_stems, 2, n) float32 from the job's multi-channel WAV."""
    audio, _ = sf.read(io.BytesIO(client.get(job["links"]["result"]).content), dtype="float32")
    return audio.T.reshape(len(job["stems"]), 2, -1)


def test_a_chained_stem_s_parts_equal_the_second_model_alone(client, music):
    wav = float_wav(music)
    chained = run_job(client, wav, model="dsp", chain="vocals>dsp", analysis="true")
    parts = [f"vocals-{s}" for s in DSP]
    assert chained["stems"] == [*parts, "drums", "bass", "other"]
    assert chained["options"]["chain"] == [{"stem": "vocals", "model": "dsp", "parts": parts}]
    assert "then vocals by dsp (chained)" in chained["model_reason"]
    got = stems_of(client, chained)

    first = run_job(client, wav, model="dsp")
    vocals = client.get(f"/api/jobs/{first['id']}/stems/vocals", params={"format": "wav"})
    assert vocals.status_code == 200, vocals.text
    alone = run_job(client, vocals.content, model="dsp")  # the float WAV, as a user would
    expected = np.concatenate([stems_of(client, alone), stems_of(client, first)[1:]])
    error = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"\nchained job vs the second model alone on the first stage's stem: {error:.2e} x peak")
    assert error <= 1e-4

    one = client.get(chained["links"]["stems"]["vocals-bass"], params={"format": "wav"})
    assert one.status_code == 200, one.text
    part, _ = sf.read(io.BytesIO(one.content), dtype="float32")
    assert np.abs(part.T - got[parts.index("vocals-bass")]).max() <= 1e-6
    analysis = client.get(chained["links"]["analysis"]).json()
    assert set(analysis["windows"][0]["stem_activity"]) == set(chained["stems"])
    assert analysis["windows"][0]["stems_present"].keys() >= {"vocals", "drums"}
    assert "vocals" in analysis["track"]["midi"]["stems"]  # the parts' sum, transcribed
    names = zipfile.ZipFile(io.BytesIO(client.get(chained["links"]["zip"]).content)).namelist()
    for stem in chained["stems"]:
        assert any(n.endswith(f"/{stem}.flac") or n == f"{stem}.flac" for n in names), names
    assert not any("vocals.flac" == n.rsplit("/", 1)[-1] for n in names), names


def test_a_repeated_chain_field_and_one_stem_chain_in_order(client, music):
    """`chain` given twice is two links; with `stems=drums` the rest stays one stem."""
    wav = float_wav(music[:, : 4 * 44100])
    r = client.post(
        "/api/jobs",
        files=[
            ("file", ("song.wav", wav)),
            ("chain", (None, "drums>dsp")),
            ("chain", (None, "no_drums>dsp")),
        ],
        data={"analysis": "false", "model": "dsp", "stems": "drums"},
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"], timeout=300)
    assert job["status"] == "done", job
    assert job["stems"] == [f"drums-{s}" for s in DSP] + [f"no_drums-{s}" for s in DSP]
    assert stems_of(client, job).shape[0] == 8


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"chain": "vocals"}, "expected STEM>MODEL"),
        ({"chain": "vocals>nope"}, "unknown model 'nope'"),
        ({"chain": "guitar>dsp"}, "gives no 'guitar' stem"),
        ({"chain": "vocals>dsp,vocals>dsp"}, "each stem is chained once"),
        ({"recipe": "nope"}, "unknown recipe 'nope'"),
        ({"recipe": "karaoke", "chain": "vocals>dsp"}, "a recipe or a chain"),
        ({"chain": "vocals>htdemucs"}, "htdemucs"),  # no weights here, no hub to fetch from
    ],
)
def test_bad_chains_are_refused_naming_the_problem(client, fields, says):
    r = client.post(
        "/api/jobs",
        files={"file": ("song.wav", float_wav(np.zeros((2, 44100), np.float32)))},
        data={"model": "dsp", **fields},
    )
    assert r.status_code in (422, 503), r.text
    assert says in r.json()["error"]["message"], r.json()
