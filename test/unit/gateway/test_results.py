"""A done job's stems made from result.wav on request: every format, both clip modes, the
streamed ZIP, nothing kept on disk, memory that of a block."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest
import soundfile as sf

from common.audio_encode import write_audio
from common.constants import RESULT_FORMATS
from common.errors import InvalidOption, NotFound, StorageError
from gateway.jobfiles import JobFiles
from gateway.results import clip_warning, rescale_gain, set_peak, stem_answer, zip_answer
from gateway.store import JobRecord

STEMS = ["a", "b"]


def test_rescale_only_where_a_format_cannot_hold_the_peak():
    assert rescale_gain("wav", "rescale", 3.7) == 1.0  # float: never touched
    assert rescale_gain("wav16", "rescale", 3.7) == pytest.approx(1 / 3.7)
    assert rescale_gain("mp3", "rescale", 2.0) == 0.5
    assert rescale_gain("flac", "clamp", 3.7) == 1.0
    assert rescale_gain("wav24", "rescale", 0.9) == 1.0  # fits already: not made louder


def test_clip_warning_only_beyond_full_scale():
    assert clip_warning(0.99) is None
    warning = clip_warning(3.7)
    assert "3.70" in warning and "11.4 dB" in warning and "0.270" in warning


def make_job(tmp_path, frames: int = 150_000, stems=STEMS, peak=None):
    """A done job whose result.wav holds `stems` (a loud one peaking at 2.5, then quieter)."""
    files = JobFiles(tmp_path, "job00001")
    files.result_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    multi = (rng.standard_normal((frames, 2 * len(stems))) * 0.3).astype(np.float32)
    multi[10, 0] = 2.5
    multi[:, 2:] *= 0.1
    sf.write(files.result_path, multi, 44100, subtype="FLOAT")
    (files.dir / "analysis.json").write_text('{"track": {"key": "A minor"}}')
    job = JobRecord(
        id="job00001",
        status="done",
        created_at=0,
        updated_at=1.7e9,
        stems=list(stems),
        peak=peak,
        filename="my song.mp3",
    )
    return files, job, multi


def body(answer) -> bytes:
    data = b"".join(answer.chunks)
    assert len(data) == answer.size  # the Content-Length sent up front
    return data


def files_under(files: JobFiles) -> list[str]:
    return sorted(str(p.relative_to(files.dir)) for p in files.dir.rglob("*") if p.is_file())


def test_peak_of_an_older_job_is_measured_from_result_wav(tmp_path):
    files, job, _ = make_job(tmp_path)
    assert set_peak(files, job) == pytest.approx(2.5)
    job.peak = 9.0
    assert set_peak(files, job) == 9.0  # stored once the job is done


@pytest.mark.parametrize("fmt", RESULT_FORMATS)
@pytest.mark.parametrize("clip", ["rescale", "clamp"])
def test_every_format_is_the_stems_channel_pair_as_write_audio_writes_it(tmp_path, fmt, clip):
    """The reference is write_audio of the stem's two channels with the set's gain: a WAV
    holds the same samples bit for bit, a FLAC or MP3 is the same bytes."""
    files, job, multi = make_job(tmp_path)
    gain = rescale_gain(fmt, clip, 2.5)
    for i, stem in enumerate(STEMS):
        data = body(stem_answer(files, job, stem, fmt, clip))
        ref = tmp_path / f"ref.{fmt}"
        write_audio(ref, multi[:, 2 * i : 2 * i + 2].T, fmt, gain=gain)
        if fmt.startswith("wav"):
            dtype = "float32" if fmt == "wav" else "int32"
            mine, rate = sf.read(io.BytesIO(data), dtype=dtype)
            theirs, _ = sf.read(ref, dtype=dtype)
            assert rate == 44100 and mine.shape == (len(multi), 2)
            np.testing.assert_array_equal(mine, theirs)
        else:
            assert data == ref.read_bytes()
    assert files_under(files) == ["analysis.json", "result/result.wav"]  # nothing kept


def test_rescale_uses_the_sets_peak_and_clamp_cuts(tmp_path):
    files, job, multi = make_job(tmp_path)
    scaled, _ = sf.read(io.BytesIO(body(stem_answer(files, job, "b", "wav24"))), dtype="float32")
    np.testing.assert_allclose(scaled, multi[:, 2:4] / 2.5, atol=2e-7)  # a's peak, not b's own
    cut, _ = sf.read(io.BytesIO(body(stem_answer(files, job, "a", "wav24", "clamp"))))
    np.testing.assert_allclose(cut, np.clip(multi[:, :2], -1, 1), atol=2e-7)
    loud, _ = sf.read(io.BytesIO(body(stem_answer(files, job, "a", "wav"))), dtype="float32")
    np.testing.assert_array_equal(loud, multi[:, :2])  # float keeps 2.5


def test_older_jobs_per_stem_files_are_not_read(tmp_path):
    """A job from before result.wav was the only copy still has stems/*.wav: the answer comes
    from result.wav all the same (here the old copy was made different to tell them apart)."""
    files, job, multi = make_job(tmp_path)
    (files.result_dir / "stems").mkdir()
    sf.write(files.result_dir / "stems" / "b.wav", multi[:, :2] * 0, 44100, subtype="FLOAT")
    got, _ = sf.read(io.BytesIO(body(stem_answer(files, job, "b", "wav"))), dtype="float32")
    np.testing.assert_array_equal(got, multi[:, 2:4])


def test_from_a_frame_on(tmp_path):
    files, job, multi = make_job(tmp_path)
    got, _ = sf.read(io.BytesIO(body(stem_answer(files, job, "b", "wav", start=70_001))))
    np.testing.assert_array_equal(got.astype(np.float32), multi[70_001:, 2:4])
    assert sf.info(io.BytesIO(body(stem_answer(files, job, "a", "wav", start=150_000)))).frames == 0
    with pytest.raises(InvalidOption, match="past the end"):
        stem_answer(files, job, "a", "wav", start=150_001)


def test_a_missing_or_mismatched_result_is_a_clear_error(tmp_path):
    files, job, _ = make_job(tmp_path)
    with pytest.raises(NotFound, match="no stem 'c'"):
        stem_answer(files, job, "c", "wav")
    job.stems = ["a", "b", "c"]
    with pytest.raises(StorageError, match="holds 4 channels"):
        stem_answer(files, job, "a", "flac")
    files.result_path.unlink()
    for make in (lambda: stem_answer(files, job, "a", "wav"), lambda: zip_answer(files, job, {})):
        with pytest.raises(NotFound, match="gone"):
            make()


@pytest.mark.parametrize("fmt", ["flac", "wav", "mp3"])
def test_the_zip_holds_each_stem_as_its_own_answer(tmp_path, fmt):
    files, job, multi = make_job(tmp_path)
    data = b"".join(zip_answer(files, job, {"id": job.id}, fmt, "rescale"))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None  # every CRC right
        ext = "wav" if fmt == "wav" else fmt
        assert zf.namelist() == [
            f"my song/a.{ext}",
            f"my song/b.{ext}",
            "my song/analysis.json",
        ] + ["my song/job.json"]
        for i, stem in enumerate(STEMS):
            info = zf.getinfo(f"my song/{stem}.{ext}")
            assert info.compress_type == zipfile.ZIP_STORED
            assert zf.read(info) == body(stem_answer(files, job, stem, fmt))
            if fmt == "flac":  # and decodes to the stem, rescaled by the set's peak
                got, _ = sf.read(io.BytesIO(zf.read(info)), dtype="float32")
                np.testing.assert_allclose(got, multi[:, 2 * i : 2 * i + 2] / 2.5, atol=2e-7)
        assert json.loads(zf.read("my song/job.json")) == {"id": job.id}
        assert json.loads(zf.read("my song/analysis.json"))["track"]["key"] == "A minor"
    assert files_under(files) == ["analysis.json", "result/result.wav"]  # not cached


def test_a_zip_abandoned_half_way_leaves_nothing(tmp_path):
    files, job, _ = make_job(tmp_path)
    chunks = zip_answer(files, job, {}, "flac16")
    next(chunks)  # the first stem is encoded and on its way
    chunks.close()  # the client went away
    assert files_under(files) == ["analysis.json", "result/result.wav"]


def test_memory_stays_that_of_a_block(tmp_path):
    """60 s of 4 stems is 85 MB of float32: a stem in any format and the ZIP are made with a
    few blocks (~2 MB) in memory at a time."""
    files, job, _ = make_job(tmp_path, frames=60 * 44100, stems=["a", "b", "c", "d"], peak=2.5)
    peaks = {}
    for name, chunks in {
        "wav16": lambda: stem_answer(files, job, "c", "wav16").chunks,
        "flac": lambda: stem_answer(files, job, "d", "flac").chunks,
        "zip": lambda: zip_answer(files, job, {}, "wav"),
    }.items():
        tracemalloc.start()
        try:
            for _ in chunks():
                pass
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert max(peaks.values()) < 12_000_000, peaks
