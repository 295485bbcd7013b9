"""The public REST API: submit, poll, download, list, delete."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import quote

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from common.audio import decode_audio_to_file
from common.constants import CLIP_MODES, RESULT_FORMATS, SAMPLE_RATE
from common.errors import Conflict, InvalidOption, NotFound
from gateway.access import check_api_key
from gateway.jobfiles import job_files, link_results
from gateway.messages import public_model, result_notice
from gateway.options import parse_options, resolve_options
from gateway.partial import done_piece, progress_headers, wav_range
from gateway.results import Answer, stem_answer, zip_answer
from gateway.store import JobRecord
from gateway.upload import receive_upload

router = APIRouter(prefix="/api", tags=["jobs"], dependencies=[Depends(check_api_key)])

T = TypeVar("T")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def job_id_param(job_id: Annotated[str, PathParam(description="job id")]) -> str:
    """A malformed id names no job: 404 like an unknown one (not a 422 about its shape)."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"no job {job_id[:80]!r}")
    return job_id


JobId = Annotated[str, Depends(job_id_param)]
Format = Annotated[
    Literal[RESULT_FORMATS],  # type: ignore[valid-type]
    Query(
        description="wav: 32-bit float (never clipped); wav16, wav24: PCM; flac: 24-bit, "
        "flac16: 16-bit; mp3: 320 kbit/s"
    ),
]
Clip = Annotated[
    Literal[CLIP_MODES],  # type: ignore[valid-type]
    Query(
        description="for all formats but wav, samples beyond full scale: rescale (the whole "
        "set scaled so its loudest sample fits, as Demucs does) or clamp"
    ),
]
STEM_NAME = re.compile(r"[a-z0-9_]{1,32}")


def stem_param(stem: Annotated[str, PathParam(description="stem name")]) -> str:
    if not STEM_NAME.fullmatch(stem):
        raise NotFound(f"no stem {stem[:80]!r}")
    return stem


StemName = Annotated[str, Depends(stem_param)]


def get_gateway(request: Request):
    return request.app.state.gateway


Gw = Annotated[object, Depends(get_gateway)]


async def store_call(call: Callable[..., T], *args, **kwargs) -> T:
    """A job store call in a worker thread: during a database outage it retries for up to
    DB_RETRY_S, and /health and every other request must not wait with it."""
    return await to_thread.run_sync(functools.partial(call, *args, **kwargs))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def job_json(job: JobRecord, now: float | None = None) -> dict:
    base = f"/api/jobs/{job.id}"
    links = {"self": base}
    if job.options.get("resolved", {}).get("analysis", True):
        links["analysis"] = f"{base}/analysis"
    if job.status == "done" or (job.status != "failed" and job.ready_s > 0):
        links["result"] = f"{base}/result"  # while it runs: the final prefix (format=wav)
        links["stems"] = {s: f"{base}/stems/{s}" for s in job.stems}
    if job.status == "done":
        links["zip"] = f"{base}/download.zip"
    return {
        "id": job.id,
        "status": job.status,
        "progress": round(job.progress, 4),
        "stage": job.stage,
        "model": job.model,
        "model_reason": job.model_reason,
        "notice": result_notice(job.model),  # one sentence about the whole result, or None
        "stems": job.stems,
        "channels": channel_layout(job.stems),
        "eta_s": eta_s(job, time.time() if now is None else now),
        "peak": job.peak,
        "error": job.error,
        "warnings": job.warnings,
        "notes": job.notes,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "duration_s": job.duration_s,
        "ready_s": job.duration_s if job.status == "done" else round(job.ready_s, 3),
        "filename": job.filename,
        "options": {
            k: v
            for k, v in job.options.get("resolved", {}).items()
            if k not in ("model", "model_reason", "stems")
        },
        "links": links,
    }


def channel_layout(stems: list[str]) -> list[dict]:
    """The multi-channel WAV's channels: every stem's left then right, in `stems` order."""
    return [
        {"channel": 2 * i + k, "stem": stem, "side": side}
        for i, stem in enumerate(stems)
        for k, side in enumerate(("left", "right"))
    ]


def eta_s(job: JobRecord, now: float) -> float | None:
    """Seconds left, from the pace so far (None until there is a pace to go by)."""
    if job.status not in ("queued", "running") or job.progress < 0.02:
        return None
    elapsed = max(0.0, now - job.created_at)
    return round(elapsed * (1.0 - job.progress) / job.progress, 1)


@router.post("/jobs", status_code=202, summary="Upload a song and start separating it")
async def create_job(request: Request, gw: Gw) -> JSONResponse:
    """multipart/form-data: `file` (the audio) and optional fields `model`, `quality`, `stems`,
    `shifts`, `overlap`, `analysis`. Answers 202 with the job once the audio is decoded."""
    settings = gw.settings
    client = request.client.host if request.client else "unknown"
    await to_thread.run_sync(gw.rate_limiter.check, client)
    job_id = secrets.token_urlsafe(16)
    files = job_files(settings, job_id)
    files.dir.mkdir(parents=True, exist_ok=True)
    try:
        upload = await receive_upload(request, files.upload_path, settings.max_upload_bytes)
        options = parse_options(upload.fields, settings.default_model)
        resolved = resolve_options(options, await gw.model_infos())
        key = cache_key(upload.sha256, resolved.to_dict())
        cached = await store_call(gw.store.find_done, key)
        if cached is not None:
            job = await to_thread.run_sync(reuse_result, gw, cached, job_id, upload.filename)
            if job is not None:
                files.upload_path.unlink(missing_ok=True)
                return JSONResponse(job_json(job), status_code=202, headers=location(job_id))
        async with gw.decode_limiter:  # a block at a time, straight into the job's input
            decoded = await to_thread.run_sync(
                lambda: decode_audio_to_file(
                    files.upload_path,
                    files.input_path,
                    min_duration_s=settings.min_duration_s,
                    max_duration_s=settings.max_duration_s,
                )
            )
    except BaseException:
        files.delete()
        raise
    files.upload_path.unlink(missing_ok=True)  # the decoded input is what the job runs on
    try:  # in object storage: where any gateway can fetch it to run the job
        await to_thread.run_sync(files.publish, files.input_path)
    except BaseException:
        files.delete()
        raise
    now = time.time()
    job = JobRecord(
        id=job_id,
        status="queued",
        stage="queued",
        created_at=now,
        updated_at=now,
        model=resolved.model,
        model_reason=resolved.model_reason,
        stems=resolved.stems,
        warnings=list(decoded.warnings),
        options={"requested": options.__dict__, "resolved": resolved.to_dict()},
        filename=safe_filename(upload.filename),
        content_hash=key,
        n_frames=decoded.n_frames,
        duration_s=round(decoded.n_frames / SAMPLE_RATE, 3),
    )
    await store_call(gw.store.insert, job)
    await gw.runner.submit(job_id)
    return JSONResponse(job_json(job), status_code=202, headers=location(job_id))


def location(job_id: str) -> dict[str, str]:
    return {"Location": f"/api/jobs/{job_id}"}


def cache_key(upload_sha256: str, resolved: dict) -> str:
    """Same audio bytes + same model and options -> same stems."""
    options = json.dumps(resolved, sort_keys=True)
    return hashlib.sha256(f"{upload_sha256}|{options}".encode()).hexdigest()


def reuse_result(gw, cached: JobRecord, job_id: str, filename: str) -> JobRecord | None:
    """A new job, born done, holding links to an identical earlier job's files (None when
    those files are gone)."""
    source = job_files(gw.settings, cached.id)
    target = job_files(gw.settings, job_id)
    if not link_results(source, target):
        return None
    now = time.time()
    job = JobRecord(
        **{
            **cached.__dict__,
            "id": job_id,
            "created_at": now,
            "updated_at": now,
            "filename": safe_filename(filename),
            "stage": "done",
            "notes": [f"result reused from the identical earlier job {cached.id}"],
        }
    )
    gw.store.insert(job)
    return job


@router.get("/jobs", summary="List jobs, newest first")
async def list_jobs(
    gw: Gw,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    status: Literal["queued", "running", "done", "failed"] | None = None,
) -> dict:
    jobs = await store_call(gw.store.list, limit=limit, offset=offset, status=status)
    return {"jobs": [job_json(j) for j in jobs]}


@router.get("/jobs/{job_id}", summary="A job's status")
async def get_job(job_id: JobId, gw: Gw) -> dict:
    return job_json(await store_call(gw.store.get, job_id))


@router.get("/status/{job_id}", summary="Alias of GET /api/jobs/{id}")
async def get_status(job_id: JobId, gw: Gw) -> dict:
    return job_json(await store_call(gw.store.get, job_id))


@router.delete("/jobs/{job_id}", status_code=204, summary="Delete a job and its files")
async def delete_job(job_id: JobId, gw: Gw) -> None:
    await store_call(gw.store.get, job_id)
    await store_call(gw.store.delete, job_id)
    await to_thread.run_sync(job_files(gw.settings, job_id).delete)


async def done_job(gw, job_id: str) -> JobRecord:
    job = await store_call(gw.store.get, job_id)
    if job.status != "done":
        raise Conflict(f"job {job_id} is {job.status}, its results are not ready", code="not_ready")
    return job


FromFrame = Annotated[
    int,
    Query(
        ge=0,
        le=2**40,
        description="only frames [from_frame, ready) of the result (44.1 kHz frames), e.g. "
        "the part of a running job's prefix a player does not have yet; float WAV only",
    ),
]


@router.get(
    "/jobs/{job_id}/result",
    summary="All stems as one multi-channel 32-bit float WAV (while the job runs: the final "
    "prefix so far)",
)
async def get_result(job_id: JobId, gw: Gw, from_frame: FromFrame = 0) -> Response:
    job = await store_call(gw.store.get, job_id)
    files = job_files(gw.settings, job_id)
    name = f"{stem_of(job.filename)}_stems.wav"
    if job.status != "done" or from_frame:
        return await to_thread.run_sync(wav_range, files, job, None, from_frame, name)
    await to_thread.run_sync(files.fetch, files.result_path)  # into the cache, once
    response = file_response(files.result_path, name, "audio/wav")
    response.headers.update(progress_headers(done_piece(job, 0)))
    return response


@router.get("/result/{job_id}", summary="Alias of GET /api/jobs/{id}/result")
async def get_result_alias(job_id: JobId, gw: Gw, from_frame: FromFrame = 0) -> Response:
    return await get_result(job_id, gw, from_frame)


@router.get("/jobs/{job_id}/stems/{stem}", summary="One stem")
async def get_stem(
    job_id: JobId,
    stem: StemName,
    gw: Gw,
    format: Format = "wav",
    clip: Clip = "rescale",
    from_frame: FromFrame = 0,
) -> Response:
    job = await store_call(gw.store.get, job_id)
    if stem not in job.stems:
        raise NotFound(f"job {job_id} has no stem {stem!r}; its stems: {', '.join(job.stems)}")
    files = job_files(gw.settings, job_id)
    if job.status != "done" or from_frame:  # a frame range: the running job's prefix
        if format != "wav" and job.status == "done":
            raise InvalidOption("from_frame works with format=wav (32-bit float) only")
        if format != "wav":
            raise Conflict(
                f"job {job_id} is {job.status}: format={format} is available when the job is "
                "done (while it runs, format=wav gives the final part so far)",
                code="not_ready",
            )
        name = f"{stem_of(job.filename)}_{stem}.wav"
        return await to_thread.run_sync(wav_range, files, job, stem, from_frame, name)
    # made from result.wav while it is sent (a FLAC or MP3 is encoded first), never kept
    answer = await to_thread.run_sync(stem_answer, files, job, stem, format, clip)
    name = f"{stem_of(job.filename)}_{stem}.{answer.ext}"
    return streamed(answer, name, progress_headers(done_piece(job, 0)))


@router.get(
    "/jobs/{job_id}/download.zip",
    summary="All stems (24-bit FLAC unless `format` says otherwise) and the analysis, zipped",
)
async def download_zip(
    job_id: JobId, gw: Gw, format: Format = "flac", clip: Clip = "rescale"
) -> StreamingResponse:
    """Streamed as it is zipped (its length is known only at the end), never stored."""
    job = await done_job(gw, job_id)
    files = job_files(gw.settings, job_id)
    chunks = await to_thread.run_sync(zip_answer, files, job, job_json(job), format, clip)
    disposition = attachment(f"{stem_of(job.filename)}_stems.zip")
    return StreamingResponse(
        chunks, media_type="application/zip", headers={"Content-Disposition": disposition}
    )


@router.get(
    "/jobs/{job_id}/analysis",
    summary="What is playing where: the track's key, tempo, beats, chords, loudness; per window "
    "labels, stems present, stem levels, key",
)
async def get_analysis(job_id: JobId, gw: Gw) -> FileResponse:
    job = await store_call(gw.store.get, job_id)
    files = job_files(gw.settings, job_id)
    path = files.analysis_path
    if not job.options.get("resolved", {}).get("analysis", True):
        raise NotFound(
            f"job {job_id} ran without analysis (analysis=false was asked); submit the song "
            "again with analysis=true to get one",
            code="no_analysis",
        )
    if not await to_thread.run_sync(files.fetch, path):
        why = "it failed" if job.status == "failed" else "it is written when the job is done"
        raise NotFound(f"job {job_id} is {job.status}: no analysis yet ({why})", code="not_ready")
    return FileResponse(path, media_type="application/json")


@router.get("/models", tags=["models"], summary="The models and whether their weights are here")
async def list_models(gw: Gw) -> dict:
    infos = await gw.model_infos()
    return {"models": [public_model(i) for i in infos.values()]}  # reasons without paths


def streamed(answer: Answer, filename: str, headers: dict[str, str]) -> StreamingResponse:
    """An answer made while it is sent, with its length known up front (players and progress
    bars want it) and the download name a FileResponse would give."""
    headers = {
        **headers,
        "Content-Length": str(answer.size),
        "Content-Disposition": attachment(filename),
    }
    return StreamingResponse(answer.chunks, media_type=answer.media_type, headers=headers)


def attachment(filename: str) -> str:
    """Content-Disposition as Starlette's FileResponse writes it."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


def file_response(path: Path, filename: str, media_type: str) -> FileResponse:
    if not path.exists():
        raise NotFound("the result file is gone (deleted or expired)")
    return FileResponse(path, media_type=media_type, filename=filename)


def safe_filename(name: str) -> str:
    """A client's file name, reduced to something safe in a header and on any disk."""
    name = unicodedata.normalize("NFKD", Path(name.replace("\\", "/")).name)
    name = name.encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._ -]+", "", name)
    stem, suffix = Path(name).stem, Path(name).suffix
    name = re.sub(r"\s+", " ", stem).strip(" .")[:100] + suffix[:10]
    return name if Path(name).stem else "audio"


def stem_of(filename: str) -> str:
    return (Path(filename).stem or "audio").replace(" ", "_")
