"""Result conversion: the rescale factor and the clip warning."""

import numpy as np
import pytest
import soundfile as sf

from gateway.jobfiles import JobFiles
from gateway.results import clip_warning, converted_stem, rescale_gain, set_peak, zip_results
from gateway.store import JobRecord


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


@pytest.fixture
def job_files(tmp_path):
    files = JobFiles(tmp_path, "job00001")
    files.stem_path("a").parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    loud = (rng.standard_normal((1000, 2)) * 0.5).astype(np.float32)
    loud[10, 0] = 2.5
    sf.write(files.stem_path("a"), loud, 44100, subtype="FLOAT")
    sf.write(files.stem_path("b"), loud * 0.1, 44100, subtype="FLOAT")
    job = JobRecord(id="job00001", status="done", created_at=0, updated_at=0, stems=["a", "b"])
    return files, job, loud


def test_peak_of_an_older_job_is_measured_from_its_stems(job_files):
    files, job, loud = job_files
    assert set_peak(files, job) == pytest.approx(2.5)
    job.peak = 9.0
    assert set_peak(files, job) == 9.0  # stored once the job is done


def test_both_clip_modes_are_kept_apart(job_files):
    files, job, loud = job_files
    scaled, _, _ = converted_stem(files, job, "b", "wav24", "rescale")
    cut, _, _ = converted_stem(files, job, "a", "wav24", "clamp")
    assert scaled != cut
    b, _ = sf.read(scaled, dtype="float32")
    np.testing.assert_allclose(b, loud * 0.1 / 2.5, atol=1e-6)  # the set's peak, not b's own
    a, _ = sf.read(cut, dtype="float32")
    np.testing.assert_allclose(a, np.clip(loud, -1, 1), atol=1e-6)


def test_zip_leaves_no_partial_file(job_files):
    files, job, _ = job_files
    path = zip_results(files, job, {"id": job.id}, "flac16", "rescale")
    assert path.name == "download.flac16.rescale.zip"
    assert sorted(p.name for p in files.result_dir.iterdir()) == [path.name, "formats", "stems"]
