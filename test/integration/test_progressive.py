"""Progressive results through the real services: while a job runs, its final prefix (and the
`from_frame` pieces a player asks for) is bit for bit the start of the finished result; 409
before anything is final; and a fuser killed with -9 mid-job leaves the job to finish with the
same bits.

The jobs run on one stack of real processes (loopback ports) for the module, one job and one
chunk at a time: a second job waits queued, and the polls see each chunk land. dsp jobs name
their model; the htdemucs job runs a small random-weight architecture installed where a
download puts it, with two shifted passes, so the prefix must wait for every pass of a region.
Each test deletes its jobs: the same song with the same options would be reused from the cache.
"""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from common.config import Settings
from gateway.stack import Stack
from test.separation_fixtures import FOUR, SMALL, htdemucs, install_published
from test.songgen import make_song, mixture
from test.stackutil import own_stack, wait_job, wav_bytes

SONG_S = 120.0  # dsp: 16 chunks of 10 s, long enough to poll between them
POLL_S = 0.05


@pytest.fixture(scope="module")
def upload() -> bytes:
    return wav_bytes(mixture(make_song(seconds=SONG_S, seed=21)))


@pytest.fixture(scope="module")
def short_upload() -> bytes:
    return wav_bytes(mixture(make_song(seconds=30.0, seed=22)))


def submit(client: httpx.Client, data: bytes, **fields) -> dict:
    r = client.post("/api/jobs", files={"file": ("song.wav", data)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()


def read_wav(r: httpx.Response) -> np.ndarray:
    assert r.status_code == 200, r.text
    data, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    assert rate == 44100
    assert int(r.headers["X-Audiosplit-Ready-Frames"]) >= data.shape[0]
    return data


@dataclass
class Seen:
    """What a player polling a running job got: whole prefixes of /result, and the pieces of
    one stem fetched with `from_frame` = the frames it already had."""

    prefixes: list[np.ndarray] = field(default_factory=list)
    pieces: list[tuple[int, np.ndarray]] = field(default_factory=list)
    partial_answers: int = 0
    running_with_links: int = 0


def follow(client: httpx.Client, job_id: str, stem: str, on_ready=None, timeout=600.0) -> Seen:
    """Poll the job until it ends; each time its `ready_s` grows, fetch the prefix and the new
    part of `stem`. `on_ready(seen)` runs after each fetch (to kill something mid-job)."""
    seen, last, have, progress = Seen(), 0.0, 0, 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return seen
        # what a player shows only moves forward
        assert job["ready_s"] >= last, f"ready_s went back from {last} to {job['ready_s']}"
        assert job["progress"] >= progress, f"progress went back to {job['progress']}"
        progress = job["progress"]
        if job["ready_s"] > last:
            last = job["ready_s"]
            assert job["stems"] and "stems" in job["links"] and "result" in job["links"], job
            seen.running_with_links += 1
            r = client.get(job["links"]["result"])
            if r.status_code == 200:  # 409 only if the job ended meanwhile and failed
                seen.prefixes.append(read_wav(r))
                seen.partial_answers += r.headers["X-Audiosplit-Partial"] == "true"
            r = client.get(job["links"]["stems"][stem], params={"from_frame": have})
            if r.status_code == 200:
                assert int(r.headers["X-Audiosplit-From-Frame"]) == have
                piece = read_wav(r)
                seen.pieces.append((have, piece))
                have += piece.shape[0]
            elif r.status_code == 422 and (
                client.get(f"/api/jobs/{job_id}").json()["status"] == "done"
                or have >= round(job["ready_s"] * 44100)
            ):
                # `have` was the end already: the job ended between the poll and this fetch,
                # or its whole result is final while it still runs (the analysis of the stems)
                pass
            else:
                assert r.status_code == 409 and r.json()["error"]["code"] == "not_ready", r.text
            if on_ready is not None:
                on_ready(seen)
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} did not end in {timeout}s")


def finished(client: httpx.Client, job_id: str) -> tuple[dict, np.ndarray]:
    job = wait_job(client, job_id, timeout=600)
    assert job["status"] == "done", job
    r = client.get(job["links"]["result"])
    assert r.headers["X-Audiosplit-Partial"] == "false"
    result = read_wav(r)
    assert result.shape[0] == int(r.headers["X-Audiosplit-Ready-Frames"])
    return job, result


def assert_starts_of(seen: Seen, result: np.ndarray, stem_index: int) -> None:
    """Every prefix and every piece is exactly the finished result where it says it is."""
    for prefix in seen.prefixes:
        assert np.array_equal(prefix, result[: prefix.shape[0]])
    have = 0
    for start, piece in seen.pieces:
        assert start == have  # contiguous: a player appends them as they come
        pair = result[start : start + piece.shape[0], 2 * stem_index : 2 * stem_index + 2]
        assert np.array_equal(piece, pair)
        have += piece.shape[0]


@pytest.fixture(scope="module")
def small_htdemucs(tmp_path_factory) -> Path:
    settings = Settings(_env_file=None, models_dir=tmp_path_factory.mktemp("pmodels"))
    install_published(settings, "htdemucs", [htdemucs(FOUR, 0, **SMALL)])
    return Path(settings.models_dir)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, small_htdemucs) -> Iterator[Stack]:
    """The module's stack: one job and one chunk at a time, the small htdemucs installed."""
    with own_stack(
        tmp_path_factory.mktemp("progressive"),
        models=small_htdemucs,
        chunk_concurrency=1,
        job_concurrency=1,
        compile_models="off",
    ) as stack:
        yield stack


@pytest.fixture
def client(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("gateway"), timeout=120) as client:
        yield client


def delete(client: httpx.Client, *job_ids: str) -> None:
    """Deletes ended jobs: the next test's job with the same song is not a reused result."""
    for job_id in job_ids:
        assert client.delete(f"/api/jobs/{job_id}").status_code == 204


@pytest.mark.parametrize(
    ("fields", "stem"),
    [({}, "bass"), ({"chain": "vocals>dsp"}, "vocals-bass")],
    ids=["dsp", "chained"],
)
def test_the_prefix_and_pieces_are_the_start_of_the_result(client, upload, fields, stem):
    """dsp; and dsp then vocals>dsp, where nothing is final while the first stage runs, then
    the result (its stems, vocals replaced by the link's parts) grows as the link's chunks are
    fused."""
    job = submit(client, upload, analysis="false", model="dsp", **fields)
    seen = follow(client, job["id"], stem)
    done, result = finished(client, job["id"])
    delete(client, job["id"])
    label = f"dsp then {fields['chain']}" if fields else "dsp"
    print(
        f"\n{label}, {SONG_S:.0f} s: {len(seen.prefixes)} prefixes, "
        f"{len(seen.pieces)} pieces of {stem} while running ({seen.partial_answers} partial)"
    )
    assert len(seen.prefixes) >= 3 and seen.partial_answers >= 2 and len(seen.pieces) >= 2
    assert_starts_of(seen, result, done["stems"].index(stem))
    assert done["ready_s"] == done["duration_s"]
    if fields:
        parts = [f"vocals-{s}" for s in FOUR]
        assert sorted(done["stems"]) == sorted([*parts, "drums", "bass", "other"])


def test_before_anything_is_final_and_bad_ranges(client, upload, short_upload):
    """One job at a time: the second job waits queued behind the first, nothing of it final."""
    first = submit(client, upload, analysis="false", model="dsp")
    second = submit(client, short_upload, analysis="false", model="dsp", stems="bass")
    base = f"/api/jobs/{second['id']}"
    job = client.get(base).json()
    assert job["status"] == "queued" and job["ready_s"] == 0
    assert "result" not in job["links"] and "stems" not in job["links"]
    for path, params in [
        ("/result", {}),
        ("/stems/bass", {}),
        ("/stems/bass", {"format": "mp3"}),
        ("/stems/no_bass", {"from_frame": 1000}),
    ]:
        r = client.get(base + path, params=params)
        assert r.status_code == 409, (path, params, r.text)
        assert r.json()["error"]["code"] == "not_ready"
    assert client.get(base + "/stems/drums").status_code == 404
    assert client.get(base + "/result", params={"from_frame": -1}).status_code == 422
    n = second["duration_s"] * 44100
    r = client.get(base + "/result", params={"from_frame": int(round(n)) + 5})
    assert r.status_code == 422, r.text
    # once done: whole results and pieces, the headers say which
    done, result = finished(client, second["id"])
    n = result.shape[0]
    r = client.get(base + "/stems/no_bass", params={"from_frame": n - 100})
    piece = read_wav(r)
    assert np.array_equal(piece, result[n - 100 :, 2:4])
    assert r.headers["X-Audiosplit-Partial"] == "true"  # a piece is not the whole
    assert r.headers["X-Audiosplit-From-Frame"] == str(n - 100)
    assert float(r.headers["X-Audiosplit-Ready-S"]) == pytest.approx(n / 44100)
    r = client.get(base + "/stems/bass", params={"format": "flac"})
    assert r.status_code == 200 and r.headers["X-Audiosplit-Partial"] == "false"
    assert client.get(base + "/result", params={"from_frame": n}).status_code == 422
    r = client.get(base + "/stems/bass", params={"format": "mp3", "from_frame": 10})
    assert r.status_code == 422
    wait_job(client, first["id"], timeout=600)
    delete(client, first["id"], second["id"])


def test_htdemucs_shifted_passes_prefix_is_the_start_of_the_result(client, short_upload):
    job = submit(client, short_upload, analysis="false", model="htdemucs", shifts="2")
    seen = follow(client, job["id"], "vocals")
    done, result = finished(client, job["id"])
    delete(client, job["id"])
    print(f"\nhtdemucs, 2 shifts: {len(seen.prefixes)} prefixes, {len(seen.pieces)} pieces")
    assert done["options"]["shifts"] == 2 and done["model"] == "htdemucs"
    assert seen.partial_answers >= 1 and len(seen.pieces) >= 1
    assert_starts_of(seen, result, done["stems"].index("vocals"))


def test_fuser_killed_mid_job_finishes_with_the_same_result(stack, client, upload):
    """The same song, once undisturbed and once with the fuser killed with -9 (and started
    again, as a supervisor does) after part of the result was final. Last in the module: the
    stack it leaves has a restarted fuser."""
    killed: list[int] = []
    calm_id = submit(client, upload, analysis="false", model="dsp")["id"]
    _, calm = finished(client, calm_id)
    delete(client, calm_id)

    def kill_once(seen: Seen) -> None:
        if not killed and seen.prefixes:
            killed.append(seen.prefixes[-1].shape[0])
            stack.kill("fuser", signal.SIGKILL)
            stack.start(("fuser",))

    job = submit(client, upload, analysis="false", model="dsp")
    seen = follow(client, job["id"], "vocals", on_ready=kill_once)
    done, result = finished(client, job["id"])
    assert "reused" not in " ".join(done["notes"])
    assert killed and 0 < killed[0] < result.shape[0], killed
    print(f"\nfuser killed with {killed[0] / 44100:.1f} s final; {len(seen.prefixes)} prefixes")
    assert np.array_equal(result, calm)
    assert_starts_of(seen, result, done["stems"].index("vocals"))
