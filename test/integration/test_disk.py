"""Disk in proportion, through the real stack: a finished job keeps its stems once
(result.wav) and its analysis; every download, the ZIP included, is made on request and leaves
nothing behind; the decoded input is gone once the job is done."""

import io
import zipfile

import numpy as np
import pytest
import soundfile as sf

from common.constants import RESULT_FORMATS
from test.songgen import make_song, mixture
from test.stackutil import wait_job

STEMS = ["vocals", "drums", "bass", "other"]
SECONDS = 8.0


def job_dir_bytes(stack, job_id: str) -> tuple[int, list[str]]:
    root = stack.settings.jobs_dir / job_id
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), sorted(str(p.relative_to(root)) for p in files)


@pytest.fixture(scope="module")
def job(client):
    mix = mixture(make_song(seconds=SECONDS, seed=11))
    buf = io.BytesIO()
    sf.write(buf, mix.T, 44100, subtype="PCM_16", format="WAV")
    r = client.post("/api/jobs", files={"file": ("disk.wav", buf.getvalue())})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done" and job["stems"] == STEMS, job
    return job


@pytest.fixture(scope="module")
def stems(client, job) -> dict[str, np.ndarray]:
    """Each stem (n, 2) float32 as the multi-channel result holds it."""
    multi, _ = sf.read(io.BytesIO(client.get(job["links"]["result"]).content), dtype="float32")
    return {s: multi[:, 2 * i : 2 * i + 2] for i, s in enumerate(STEMS)}


def test_the_streamed_zip_holds_the_stems(client, job, stems):
    for fmt, atol in (("wav", 0.0), ("flac", 2e-7 * 4)):  # 24-bit: half a step of 2**-23
        r = client.get(job["links"]["zip"], params={"format": fmt})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert 'filename="disk_stems.zip"' in r.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert zf.testzip() is None
            for stem, expected in stems.items():
                got, rate = sf.read(io.BytesIO(zf.read(f"disk/{stem}.{fmt}")), dtype="float32")
                assert rate == 44100 and got.shape == expected.shape
                np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("fmt", RESULT_FORMATS)
def test_each_stem_answer_says_its_length_up_front(client, job, fmt):
    r = client.get(job["links"]["stems"]["bass"], params={"format": fmt})
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    ext = "mp3" if fmt == "mp3" else ("flac" if fmt.startswith("flac") else "wav")
    assert f'filename="disk_bass.{ext}"' in r.headers["content-disposition"]


def test_a_finished_job_keeps_its_stems_once(client, stack, job, stems):
    """After every format of every stem and a ZIP in each were downloaded: the job's directory
    holds result.wav and the analysis, at most 1.3x the stems as 32-bit float."""
    for stem in STEMS:
        for fmt in RESULT_FORMATS:
            client.get(job["links"]["stems"][stem], params={"format": fmt}).raise_for_status()
    for fmt in RESULT_FORMATS:
        client.get(job["links"]["zip"], params={"format": fmt}).raise_for_status()
    size, names = job_dir_bytes(stack, job["id"])
    float_stems = sum(s.nbytes for s in stems.values())
    assert "input.f32" not in names and "upload.bin" not in names  # needed only while running
    assert not [
        n for n in names if n.endswith(".zip") or n.startswith(("result/formats", "scratch"))
    ]
    assert "result/result.wav" in names and "analysis.json" in names
    assert size <= 1.3 * float_stems, (size / float_stems, names)


def test_the_result_cache_still_answers_without_the_input(client, stack, job, stems):
    """The identical upload is born done from the earlier result (linked, not copied again),
    though that job's input is gone."""
    mix = mixture(make_song(seconds=SECONDS, seed=11))
    buf = io.BytesIO()
    sf.write(buf, mix.T, 44100, subtype="PCM_16", format="WAV")
    again = client.post("/api/jobs", files={"file": ("again.wav", buf.getvalue())}).json()
    assert again["status"] == "done" and again["id"] != job["id"]
    got, _ = sf.read(io.BytesIO(client.get(again["links"]["stems"]["drums"]).content))
    np.testing.assert_array_equal(got.astype(np.float32), stems["drums"])
    size, names = job_dir_bytes(stack, again["id"])
    assert size <= 1.3 * sum(s.nbytes for s in stems.values()), names
    client.delete(f"/api/jobs/{again['id']}")
