"""Where a job's files live, and reading/writing them.

On local disk (the default) they are `<data dir>/jobs/<id>/`. With object storage
(STORAGE_URL=s3://...) the durable copies are objects `jobs/<id>/...` in the bucket, and the
folder under this gateway's data dir is a cache: the decoded input while a job runs here, a
result or analysis fetched once to be served. So any gateway can run, serve or delete any job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from common.constants import WIRE_DTYPE
from common.errors import NotFound, StorageError
from common.rawfile import RawArrayFile
from common.resultfile import RECORD_NAME
from common.storage import LocalStorage, Storage, storage_for

log = logging.getLogger("audiosplit.jobfiles")


class JobFiles:
    """`<jobs_dir>/<id>/`: the upload, the decoded input, the results, the analysis.

    A finished job keeps `result/result.wav` (every stem, float32) and `analysis.json`; every
    other form of its stems is made from result.wav on request. The decoded input is needed
    only while the job runs or resumes, and is deleted when it is done (`drop_input`)."""

    def __init__(self, jobs_dir: Path, job_id: str, store: Storage | None = None):
        self.dir = Path(jobs_dir) / job_id
        self.store = store if store is not None else LocalStorage(Path(jobs_dir).parent)
        self.key = f"{Path(jobs_dir).name}/{job_id}"  # on local disk: self.dir itself

    @property
    def remote(self) -> bool:
        return self.store.remote

    @property
    def result_key(self) -> str:
        """The storage key of the result folder (the fuser writes there)."""
        return f"{self.key}/result"

    def _key(self, path: Path) -> str:
        return f"{self.key}/{path.relative_to(self.dir).as_posix()}"

    def publish(self, path: Path) -> None:
        """In object storage: put this gateway's file (input, analysis) in the bucket."""
        if self.remote:
            self.store.put_file(self._key(path), path)

    def fetch(self, path: Path) -> bool:
        """The job's file at `path`, fetched from the bucket into the cache if it is not here.
        False when it exists nowhere."""
        if path.exists():
            return True
        if not self.remote:
            return False
        try:
            self.store.get_file(self._key(path), path)
        except FileNotFoundError:
            return False
        return True

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

    @property
    def midi_path(self) -> Path:
        """The stems as one multi-track MIDI file (gateway/music.py)."""
        return self.dir / "stems.mid"

    def write_bytes(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            raise StorageError(f"cannot write {path.name}: {e}") from e
        self.publish(path)

    def write_json(self, path: Path, value) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(value, indent=1))
            os.replace(tmp, path)
        except OSError as e:
            raise StorageError(f"cannot write {path.name}: {e}") from e
        self.publish(path)

    def delete(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.remote:
            self.store.delete_prefix(self.key)

    def delete_results_under(self, sub: str) -> None:
        """A folder of the result (an ensemble's members), here and in the bucket."""
        shutil.rmtree(self.result_dir / sub, ignore_errors=True)
        if self.remote:
            self.store.delete_prefix(f"{self.result_key}/{sub}")


def save_input(files: JobFiles, samples: np.ndarray) -> None:
    try:
        files.dir.mkdir(parents=True, exist_ok=True)
        tmp = files.input_path.with_suffix(".tmp")
        np.ascontiguousarray(samples, dtype=WIRE_DTYPE).tofile(tmp)
        os.replace(tmp, files.input_path)
    except OSError as e:
        raise StorageError(f"cannot store the decoded audio: {e}") from e
    files.publish(files.input_path)


def load_input(files: JobFiles) -> RawArrayFile:
    """(2, n) float32 on disk, read a window at a time (`track[:, lo:hi]`)."""
    if not files.fetch(files.input_path):  # another gateway's job: from the bucket
        raise NotFound(f"the decoded input of this job is gone ({files.input_path})")
    n = files.input_path.stat().st_size // 8
    return RawArrayFile(files.input_path, (2, n))


def drop_input(files: JobFiles) -> None:
    """Deletes the decoded input of a job that is done: its result is all it needs now (a
    done job never runs again, and the result cache reuses results, not inputs). A failure
    only costs disk until the retention sweep: it is logged, never fails the job."""
    try:
        files.input_path.unlink(missing_ok=True)
        if files.remote:
            files.store.delete(files._key(files.input_path))
    except (OSError, StorageError) as e:
        log.warning("cannot delete the decoded input %s: %s", files.input_path, e)


def link_results(source: JobFiles, target: JobFiles) -> bool:
    """Hard-link (or copy) a finished job's result files and analysis into another job's dir:
    result.wav and the files beside it, not the folders and ZIPs in which older jobs kept
    per-stem copies and conversions. False when the source's files are gone; the target is
    then left empty. In object storage the objects are copied in the bucket."""
    if source.remote:
        return copy_objects(source, target)
    if not source.result_path.exists():
        return False
    try:
        target.result_dir.mkdir(parents=True, exist_ok=True)
        for path in source.result_dir.iterdir():
            if path.is_file() and path.suffix != ".zip" and not path.name.startswith("."):
                _link_or_copy(path, target.result_dir / path.name)
        for path in (source.analysis_path, source.midi_path):
            if path.exists():
                _link_or_copy(path, target.dir / path.name)
    except FileNotFoundError:
        target.delete()
        return False
    except OSError as e:
        target.delete()
        raise StorageError(f"cannot reuse the earlier result: {e}") from e
    return True


def copy_objects(source: JobFiles, target: JobFiles) -> bool:
    """link_results in object storage: server-side copies of result.wav, its record and the
    analysis (the bytes never pass through the gateway)."""
    store = source.store
    names = [
        source._key(p)
        for p in (
            source.result_path,
            source.result_dir / RECORD_NAME,
            source.analysis_path,
            source.midi_path,
        )
    ]
    if not store.exists(names[0]):
        return False
    try:
        for key in names:
            if store.exists(key):
                store.copy(key, target.key + key[len(source.key) :])
    except FileNotFoundError:
        target.delete()
        return False
    return True


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def job_files(settings, job_id: str) -> JobFiles:
    """A job's files in the storage the settings name (STORAGE_URL)."""
    return JobFiles(settings.jobs_dir, job_id, storage_for(settings))


STALE_CACHE_S = 3600.0  # a job folder this old with no job row is no upload in progress


def drop_stale_caches(settings, store) -> list[str]:
    """With object storage, this gateway's job folders are caches (a result it served, the
    input of a job it ran): those of jobs deleted or cancelled meanwhile, by any gateway, go.
    Folders younger than STALE_CACHE_S with no job are kept (an upload is written there before
    its job row exists)."""
    if not storage_for(settings).remote or not settings.jobs_dir.is_dir():
        return []
    dropped = []
    for folder in settings.jobs_dir.iterdir():
        try:
            young = time.time() - folder.stat().st_mtime < STALE_CACHE_S
            status = store.get(folder.name).status
        except NotFound:
            status = None  # deleted, or (young) an upload whose row is not written yet
        except OSError:
            continue
        # a cancelled job was cleaned elsewhere while this gateway was down: its cache goes too
        if status == "cancelled" or (status is None and not young):
            shutil.rmtree(folder, ignore_errors=True)
            dropped.append(folder.name)
    return dropped
