"""Result files in the formats a client asks for, made on first request and kept."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import soundfile as sf

from common.audio import file_extension, media_type, write_audio
from common.errors import NotFound, StorageError
from gateway.jobfiles import JobFiles
from gateway.store import JobRecord


def converted_stem(files: JobFiles, stem: str, fmt: str) -> tuple[Path, str, str]:
    """(path, media type, extension) of `stem` in `fmt`; the fused float WAV for `wav`."""
    source = files.stem_path(stem)
    if not source.exists():
        raise NotFound(f"the stem file {stem} is gone (deleted or expired)")
    ext = file_extension(fmt)
    if fmt == "wav":
        return source, media_type(fmt), ext
    target = files.converted_path(stem, fmt, ext)
    if not target.exists():
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            write_audio(partial, samples.T, fmt, rate)
            os.replace(partial, target)
        except OSError as e:
            raise StorageError(f"cannot write the {fmt} file of {stem}: {e}") from e
    return target, media_type(fmt), ext


def zip_results(files: JobFiles, job: JobRecord, job_json: dict) -> Path:
    """All stems (float WAV), the analysis and the job's JSON in one zip (stored, not deflated:
    audio does not compress and deflating 10 minutes of stems would take seconds)."""
    target = files.result_dir / "download.zip"
    if target.exists():
        return target
    partial = target.with_name(".download.zip.partial")
    base = Path(job.filename).stem or "audio"
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for stem in job.stems:
                zf.write(files.stem_path(stem), f"{base}/{stem}.wav")
            if files.analysis_path.exists():
                zf.write(files.analysis_path, f"{base}/analysis.json")
            zf.writestr(f"{base}/job.json", json.dumps(job_json, indent=1))
        os.replace(partial, target)
    except FileNotFoundError as e:
        raise NotFound(f"a result file is gone (deleted or expired): {e.filename}") from e
    except OSError as e:
        raise StorageError(f"cannot write the zip: {e}") from e
    return target
