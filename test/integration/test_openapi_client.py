"""The spec is enough to use the API: a client generated from the live `/openapi.json` by
`openapi-python-client` (no line of it written here) submits a short WAV with model=dsp, polls
the job until done, and fetches a stem, the result and the analysis through its typed calls.
The audio has the input's frame count, and every JSON answer met on the way holds nothing the
spec does not document."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from test.songgen import make_song, mixture
from test.unit.gateway.test_openapi import strict_validate

PACKAGE = "audiosplit_client"
GENERATOR_CONFIG = {
    # the audio and ZIP answers as bytes (the generator knows octet-stream, not audio/*)
    "content_type_overrides": {
        media: "application/octet-stream"
        for media in ("audio/wav", "audio/flac", "audio/mpeg", "audio/midi", "application/zip")
    },
    "post_hooks": [],  # no formatting of the generated code: it is imported, not read
}
SONG_S = 3.0


@pytest.fixture(scope="module")
def spec(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


@pytest.fixture(scope="module")
def generated(spec, tmp_path_factory):
    """The generated package, imported from a tmp dir (and forgotten after the module)."""
    folder = tmp_path_factory.mktemp("generated")
    (folder / "openapi.json").write_text(json.dumps(spec))
    (folder / "config.json").write_text(json.dumps(GENERATOR_CONFIG))
    cmd = [sys.executable, "-m", "openapi_python_client", "generate", "--meta", "none"]
    cmd += ["--path", str(folder / "openapi.json"), "--config", str(folder / "config.json")]
    cmd += ["--output-path", str(folder / PACKAGE)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # a warning is a part of the spec the generator could not turn into code
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture(scope="module")
def api(generated, stack):
    """The generated client; the API key header is how it would send a key (none is needed
    on this stack: API_KEYS is off)."""
    client = generated.AuthenticatedClient(
        base_url=stack.url("gateway"),
        token="no-key-needed-here",
        auth_header_name="X-API-Key",
        prefix="",
        timeout=httpx.Timeout(120.0),
        raise_on_unexpected_status=True,  # an undocumented status fails the test
    )
    with client:
        yield client


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    return mixture(make_song(seconds=SONG_S, seed=11))


def test_a_generated_client_runs_a_job(api, spec, client, song):
    models, types = module("models"), module("types")
    create_job = module("api.jobs.create_job")
    get_job = module("api.jobs.get_job")
    get_stem = module("api.results.get_stem")
    get_result = module("api.results.get_result")
    get_analysis = module("api.results.get_analysis")

    buf = io.BytesIO()
    sf.write(buf, song.T, 44100, "PCM_16", format="WAV")
    buf.seek(0)
    body = models.JobSubmission(
        file=types.File(payload=buf, file_name="generated client.wav", mime_type="audio/wav"),
        model="dsp",
        quality=models.JobSubmissionQuality.PREVIEW,
        analysis=True,
    )
    answer = create_job.sync_detailed(client=api, body=body)
    assert answer.status_code == 202, answer.content
    job = answer.parsed
    assert isinstance(job, models.Job) and job.model == "dsp"
    assert answer.headers["Location"] == f"/api/jobs/{job.id}"

    deadline = time.monotonic() + 180
    while job.status.value not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job still {job.status.value}"
        time.sleep(0.25)
        job = get_job.sync(job.id, client=api)
        assert isinstance(job, models.Job)
    assert job.status.value == "done", job.error
    assert job.stems == ["vocals", "drums", "bass", "other"]
    assert [(c.stem, c.side.value) for c in job.channels[:2]] == [
        ("vocals", "left"),
        ("vocals", "right"),
    ]

    frames = song.shape[1]
    stem = get_stem.sync_detailed(job.id, "vocals", client=api)
    assert stem.status_code == 200 and stem.headers["X-Audiosplit-Partial"] == "false"
    samples, rate = sf.read(io.BytesIO(stem.content), dtype="float32", always_2d=True)
    assert rate == 44100 and samples.shape == (frames, 2)
    flac = get_stem.sync_detailed(job.id, "drums", client=api, format_=models.GetStemFormat.FLAC)
    assert flac.status_code == 200 and sf.info(io.BytesIO(flac.content)).frames == frames
    result = get_result.sync_detailed(job.id, client=api)
    assert sf.info(io.BytesIO(result.content)).channels == 2 * len(job.stems)
    assert sf.info(io.BytesIO(result.content)).frames == frames

    analysis = get_analysis.sync(job.id, client=api)
    assert isinstance(analysis, models.Analysis) and len(analysis.windows) >= 1
    assert analysis.track.duration_s == pytest.approx(SONG_S, abs=0.01)

    # the JSON as sent, field by field, is the documented one
    for path, schema in (
        (f"/api/jobs/{job.id}", "Job"),
        ("/api/jobs?limit=5", "JobList"),
        (f"/api/jobs/{job.id}/analysis", "Analysis"),
        ("/api/models", "ModelList"),
    ):
        strict_validate(client.get(path).json(), {"$ref": f"#/components/schemas/{schema}"}, spec)


def test_a_generated_client_reads_the_documented_errors(api):
    models = module("models")
    get_job = module("api.jobs.get_job")
    create_job = module("api.jobs.create_job")
    types = module("types")

    missing = get_job.sync_detailed("nosuchjob01", client=api)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.ErrorBody)
    assert missing.parsed.error.code == "not_found"

    not_audio = models.JobSubmission(
        file=types.File(payload=io.BytesIO(b"no audio here"), file_name="notes.txt"), model="dsp"
    )
    refused = create_job.sync_detailed(client=api, body=not_audio)
    assert refused.status_code == 415 and refused.parsed.error.code == "undecodable_audio"
