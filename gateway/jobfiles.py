"""Where a job's files live under the data dir, and reading/writing them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from common.constants import WIRE_DTYPE
from common.errors import NotFound, StorageError
from common.rawfile import RawArrayFile


class JobFiles:
    """`<jobs_dir>/<id>/`: the upload, the decoded input, the results, the analysis."""

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

    def stem_path(self, stem: str) -> Path:
        return self.result_dir / "stems" / f"{stem}.wav"

    def converted_path(self, stem: str, fmt: str, ext: str) -> Path:
        return self.result_dir / "formats" / f"{stem}.{fmt}.{ext}"

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


def link_results(source: JobFiles, target: JobFiles) -> bool:
    """Hard-link (or copy) a finished job's results and analysis into another job's dir.
    False when the source's files are gone; the target is then left empty."""
    if not source.result_path.exists():
        return False
    try:
        target.dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source.result_dir, target.result_dir, copy_function=_link_or_copy)
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
