"""Where a job's files live under the data dir, and reading/writing them."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from common.constants import WIRE_DTYPE
from common.errors import NotFound, StorageError
from common.rawfile import RawArrayFile

log = logging.getLogger("audiosplit.jobfiles")


class JobFiles:
    """`<jobs_dir>/<id>/`: the upload, the decoded input, the results, the analysis.

    A finished job keeps `result/result.wav` (every stem, float32) and `analysis.json`; every
    other form of its stems is made from result.wav on request. The decoded input is needed
    only while the job runs or resumes, and is deleted when it is done (`drop_input`)."""

    def __init__(self, jobs_dir: Path, job_id: str):
        self.dir = Path(jobs_dir) / job_id

    @property
    def upload_path(self) -> Path:
        return self.dir / "upload.bin"

    @property
    def input_path(self) -> Path:
        """float32 (2, n) little-endian, the decoded 44.1 kHz stereo input."""
        return self.dir / "input.f32"

    @property
    def result_dir(self) -> Path:
        return self.dir / "result"

    @property
    def result_path(self) -> Path:
        return self.result_dir / "result.wav"

    @property
    def scratch_dir(self) -> Path:
        """Files made for one answer (a stem encoded to FLAC or MP3), unlinked once opened."""
        return self.dir / "scratch"

    @property
    def analysis_path(self) -> Path:
        return self.dir / "analysis.json"

    def write_json(self, path: Path, value) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(value, indent=1))
            os.replace(tmp, path)
        except OSError as e:
            raise StorageError(f"cannot write {path.name}: {e}") from e

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def save_input(files: JobFiles, samples: np.ndarray) -> None:
    try:
        files.dir.mkdir(parents=True, exist_ok=True)
        tmp = files.input_path.with_suffix(".tmp")
        np.ascontiguousarray(samples, dtype=WIRE_DTYPE).tofile(tmp)
        os.replace(tmp, files.input_path)
    except OSError as e:
        raise StorageError(f"cannot store the decoded audio: {e}") from e


def load_input(files: JobFiles) -> RawArrayFile:
    """(2, n) float32 on disk, read a window at a time (`track[:, lo:hi]`)."""
    if not files.input_path.exists():
        raise NotFound(f"the decoded input of this job is gone ({files.input_path})")
    n = files.input_path.stat().st_size // 8
    return RawArrayFile(files.input_path, (2, n))


def drop_input(files: JobFiles) -> None:
    """Deletes the decoded input of a job that is done: its result is all it needs now (a
    done job never runs again, and the result cache reuses results, not inputs). A failure
    only costs disk until the retention sweep: it is logged, never fails the job."""
    try:
        files.input_path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot delete the decoded input %s: %s", files.input_path, e)


def link_results(source: JobFiles, target: JobFiles) -> bool:
    """Hard-link (or copy) a finished job's result files and analysis into another job's dir:
    result.wav and the files beside it, not the folders and ZIPs in which older jobs kept
    per-stem copies and conversions. False when the source's files are gone; the target is
    then left empty."""
    if not source.result_path.exists():
        return False
    try:
        target.result_dir.mkdir(parents=True, exist_ok=True)
        for path in source.result_dir.iterdir():
            if path.is_file() and path.suffix != ".zip" and not path.name.startswith("."):
                _link_or_copy(path, target.result_dir / path.name)
        if source.analysis_path.exists():
            _link_or_copy(source.analysis_path, target.analysis_path)
    except FileNotFoundError:
        target.delete()
        return False
    except OSError as e:
        target.delete()
        raise StorageError(f"cannot reuse the earlier result: {e}") from e
    return True


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
