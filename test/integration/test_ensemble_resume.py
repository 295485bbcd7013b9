"""An ensemble job whose whole stack is killed (-9) after its first member finished resumes
without separating that member again: the restarted predictor gets no chunk of it (its
per-model request count, which starts from zero in the new process), only of the member that
was running, and the result is still the weighted average of the members' own jobs. The job
also chains its vocals to a second model (an ensemble as a chain's first stage, resumed): the
parts equal that model alone on the ensemble's vocals."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from gateway.stack import Stack
from test.separation_fixtures import FOUR, SMALL, htdemucs, install_published, real_music
from test.stackutil import TESTDATA, stack_settings, wait_job
from test.stackutil import separate_through_the_stack as separate

MEMBERS = ("dsp", "htdemucs")  # the fast one first: killed while the second one runs
CHAIN = ("vocals", "htdemucs")
WEIGHTS = (1.0, 3.0)
SECONDS = 24.0
POLL_S = 0.05


@pytest.fixture(scope="module")
def music() -> np.ndarray:
    track = real_music(SECONDS)
    if track is None:
        pytest.skip(f"real test music not found under {TESTDATA}")
    return np.ascontiguousarray(track[:, : int(SECONDS * 44100)])


def requests_per_model(stack: Stack) -> dict[str, float]:
    """The predictor's count of /separate requests per model, since it started."""
    metrics = httpx.get(stack.url("predictor") + "/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("audiosplit_separation_seconds_count{"):
            model = line.split('model="', 1)[1].split('"', 1)[0]
            counts[model] = counts.get(model, 0.0) + float(line.split()[-1])
    return counts


def wait_first_member_done(client: httpx.Client, job_id: str, member: Path) -> None:
    """Until the first member's result.wav is there while the job still runs."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            pytest.fail(f"the job ended before it could be interrupted: {job}")
        if (member / "result.wav").is_file():
            return
        time.sleep(POLL_S)
    pytest.fail(f"the first member of {job_id} never finished")


def test_a_resumed_ensemble_skips_the_members_that_had_finished(tmp_path, music):
    settings, env = stack_settings(tmp_path / "data", tmp_path / "models", compile_models="off")
    install_published(settings, "htdemucs", [htdemucs(FOUR, 0, **SMALL)])
    stack = Stack(settings, env)
    try:
        stack.start()
        stack.wait_healthy(timeout=600)
        buf = io.BytesIO()
        sf.write(buf, music.T, 44100, subtype="FLOAT", format="WAV")
        fields = {
            "model": ",".join(MEMBERS),
            "ensemble_weights": ",".join(map(str, WEIGHTS)),
            "analysis": "false",
            "chain": ">".join(CHAIN),
        }
        with httpx.Client(base_url=stack.url("gateway"), timeout=60) as client:
            r = client.post("/api/jobs", files={"file": ("m.wav", buf.getvalue())}, data=fields)
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            members = Path(settings.data_dir) / "jobs" / job_id / "result" / "members"
            wait_first_member_done(client, job_id, members / "0")
            before = requests_per_model(stack)
            assert before.get("dsp", 0) > 0, before
            names = list(stack.procs)
            for name in names:
                os.killpg(stack.procs[name].pid, signal.SIGKILL)
            for name in names:
                stack.kill(name, signal.SIGKILL)  # reaps it
            stack.start()
            stack.wait_healthy(timeout=600)
            job = wait_job(client, job_id, timeout=600)
            assert job["status"] == "done", job
            after = requests_per_model(stack)
            print(f"\npredictor requests before the kill {before}, after the restart {after}")
            assert after.get("dsp", 0) == 0, after  # the finished member was not sent again
            assert after.get("htdemucs", 0) > 0, after  # the one that was running went on
            result, rate = sf.read(
                io.BytesIO(client.get(job["links"]["result"]).content), dtype="float32"
            )
        assert not members.exists()  # removed once combined
        got = result.T.reshape(len(job["stems"]), 2, -1)
        own = [separate(stack, music, model=m) for m in MEMBERS]
        first_stems = own[0][0]["stems"]
        ensemble = sum(
            w * np.stack([stems[one["stems"].index(s)] for s in first_stems])
            for w, (one, stems) in zip(WEIGHTS, own, strict=True)
        ) / sum(WEIGHTS)
        chained = first_stems.index(CHAIN[0])
        part_job, parts = separate(stack, ensemble[chained], model=CHAIN[1])
        assert job["stems"] == [
            *first_stems[:chained],
            *(f"{CHAIN[0]}-{p}" for p in part_job["stems"]),
            *first_stems[chained + 1 :],
        ]
        expected = np.concatenate([ensemble[:chained], parts, ensemble[chained + 1 :]])
        error = np.abs(got - expected).max() / np.abs(expected).max()
        print(f"resumed chained ensemble vs its members' average, chained: {error:.2e} x peak")
        assert error <= 1e-4
    finally:
        stack.stop()
