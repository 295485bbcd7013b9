"""Result files in the formats a client asks for, made on first request and kept."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import soundfile as sf

from common.audio import file_extension, media_type, write_audio
from common.audio_encode import FLOAT_FORMATS
from common.errors import NotFound, StorageError
from gateway.jobfiles import JobFiles
from gateway.store import JobRecord

_READ_BLOCK = 1 << 18  # frames per block when measuring a stem's peak: ~6 s, 2 MB


def rescale_gain(fmt: str, clip: str, peak: float) -> float:
    """The factor a format's samples are multiplied by before the clamp to ±1.0: with
    `rescale`, the one that brings the whole set's loudest sample to full scale."""
    if fmt in FLOAT_FORMATS or clip != "rescale" or peak <= 1.0:
        return 1.0
    return 1.0 / peak


def clip_warning(peak: float) -> str | None:
    """What a job says when its stems peak beyond full scale (None when they do not)."""
    if peak <= 1.0:
        return None
    return (
        f"the stems peak at {peak:.2f} ({20 * math.log10(peak):.1f} dB above full "
        "scale): the float WAVs keep every value; wav16, wav24, flac, flac16 and mp3 are scaled "
        f"by {1 / peak:.3f} so the loudest sample fits (clip=rescale, the default), or cut at "
        "full scale with clip=clamp"
    )


def set_peak(files: JobFiles, job: JobRecord) -> float:
    """The job's peak over all stems: stored when the job finished; measured from the stem
    files for a job from before it was stored."""
    if job.peak is not None:
        return job.peak
    peak = 0.0
    for stem in job.stems:
        path = files.stem_path(stem)
        if not path.exists():
            raise NotFound(f"the stem file {stem} is gone (deleted or expired)")
        for block in sf.blocks(str(path), blocksize=_READ_BLOCK, dtype="float32"):
            peak = max(peak, float(abs(block).max(initial=0.0)))
    return peak


def converted_stem(
    files: JobFiles, job: JobRecord, stem: str, fmt: str, clip: str = "rescale"
) -> tuple[Path, str, str]:
    """(path, media type, extension) of `stem` in `fmt`; the fused float WAV for `wav`."""
    source = files.stem_path(stem)
    if not source.exists():
        raise NotFound(f"the stem file {stem} is gone (deleted or expired)")
    ext = file_extension(fmt)
    if fmt in FLOAT_FORMATS:
        return source, media_type(fmt), ext
    target = files.converted_path(stem, f"{fmt}.{clip}", ext)
    if not target.exists():
        gain = rescale_gain(fmt, clip, set_peak(files, job))
        samples, rate = sf.read(source, dtype="float32", always_2d=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_audio(target, samples.T, fmt, rate, gain=gain)  # renames into place itself
    return target, media_type(fmt), ext


def zip_results(
    files: JobFiles, job: JobRecord, job_json: dict, fmt: str = "flac", clip: str = "rescale"
) -> Path:
    """Every stem in `fmt` (FLAC unless asked: lossless and 2.4x smaller than float WAV), the
    analysis and the job's JSON in one zip. Audio is stored as it is: FLAC and MP3 are
    compressed already, and deflating WAV was measured not worth it (a 10-minute job: float
    stems 7.5 % smaller in 44 s, 16-bit 10 % in 22 s); the JSON is deflated."""
    target = files.result_dir / f"download.{fmt}.{clip}.zip"
    if target.exists():
        return target
    partial = target.with_name(f".{target.name}.partial")
    base = Path(job.filename).stem or "audio"
    ext = file_extension(fmt)
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, True, 1) as zf:
            for stem in job.stems:
                path, _, _ = converted_stem(files, job, stem, fmt, clip)
                zf.write(path, f"{base}/{stem}.{ext}", compress_type=zipfile.ZIP_STORED)
            if files.analysis_path.exists():
                zf.write(files.analysis_path, f"{base}/analysis.json")
            zf.writestr(f"{base}/job.json", json.dumps(job_json, indent=1))
        os.replace(partial, target)
    except FileNotFoundError as e:
        raise NotFound(f"a result file is gone (deleted or expired): {e.filename}") from e
    except OSError as e:
        raise StorageError(f"cannot write the zip: {e}") from e
    finally:
        partial.unlink(missing_ok=True)
    return target
