"""The predictor takes several chunks in one request; a job sent in batches fuses to the same
result as one sent chunk by chunk (which equals the whole-track dsp separation)."""

import io

import httpx
import pytest
import soundfile as sf

from common.quality import sdr_db
from prediction.dsp import separate_dsp
from test.songgen import make_song, mixture
from test.stackutil import start_stack, wait_job


@pytest.fixture(scope="module")
def batching_stack(tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("bdata"), tmp_path_factory.mktemp("bmodels"), predictor_batch_size=3
    )
    yield stack
    stack.stop()


def test_batched_job_equals_whole_track(batching_stack):
    mix = mixture(make_song(seconds=36.0, seed=9))  # 5 chunks: 4 of 10 s, then a short one
    buf = io.BytesIO()
    sf.write(buf, mix.T, 44100, subtype="FLOAT", format="WAV")
    with httpx.Client(base_url=batching_stack.url("gateway"), timeout=120) as client:
        r = client.post(
            "/api/jobs", files={"file": ("b.wav", buf.getvalue())}, data={"analysis": "false"}
        )
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["status"] == "done", job
        result, _ = sf.read(io.BytesIO(client.get(job["links"]["result"]).content), dtype="float32")
    whole = separate_dsp(mix)
    stems = result.T.reshape(4, 2, -1)
    for i in range(4):
        assert sdr_db(whole[i], stems[i]) > 80.0
    metrics = httpx.get(batching_stack.url("predictor") + "/metrics").text
    count = [
        ln for ln in metrics.splitlines() if ln.startswith("audiosplit_separation_seconds_count")
    ]
    assert count and float(count[0].split()[-1]) < 5  # fewer requests than chunks
