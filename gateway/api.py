"""The public REST API: submit, poll, list, delete (the downloads: gateway/downloads.py)."""

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

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from common.audio import decode_audio_to_file
from common.constants import SAMPLE_RATE
from common.errors import NotFound
from gateway.access import check_api_key
from gateway.jobfiles import job_files, link_results
from gateway.messages import public_model, result_notice
from gateway.options import parse_options, resolve_options
from gateway.schemas import (
    Job,
    JobList,
    ModelList,
    error_responses,
    job_submission_body,
)
from gateway.store import STATUSES, JobRecord
from gateway.upload import receive_upload

# The spec's security scheme. `check_api_key` does the checking; this dependency only puts the
# header in the spec (auto_error=False: it refuses nothing itself).
API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    auto_error=False,
    description="Needed only where the gateway has API keys switched on (setting API_KEYS; "
    "off by default, and then every /api route answers without one). /health, /ready, "
    "/metrics, /docs and the page never need it.",
)


def api_router(tag: str) -> APIRouter:
    """A router of /api routes (this module's; gateway/downloads.py's): API key, the 401."""
    return APIRouter(
        prefix="/api",
        tags=[tag],
        dependencies=[Security(API_KEY), Depends(check_api_key)],
        responses=error_responses(401),
        # operation ids = the functions' names: a generated client's `create_job`, `get_stem`
        generate_unique_id_function=lambda route: route.name,
    )


router = api_router("jobs")

T = TypeVar("T")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def job_id_param(
    job_id: Annotated[str, PathParam(description="The job's id, as POST /api/jobs answered it.")],
) -> str:
    """A malformed id names no job: 404 like an unknown one (not a 422 about its shape)."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"no job {job_id[:80]!r}")
    return job_id


JobId = Annotated[str, Depends(job_id_param)]


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


@router.post(
    "/jobs",
    status_code=202,
    summary="Upload a song and start separating it",
    response_model=Job,
    responses={
        202: {
            "description": "Accepted: the job, queued (or born done when the same audio was "
            "separated with the same options before).",
            "headers": {
                "Location": {"description": "The job's URL.", "schema": {"type": "string"}}
            },
        },
        **error_responses(
            400,
            413,
            415,
            422,
            429,
            502,
            503,
            507,
            why={
                422: "A form field is not accepted (invalid_option, unknown_model), the model "
                "asked for by name cannot be had (model_unavailable), or the audio is too short "
                "or too long (audio_rejected).",
                502: "The channel predictor could not be asked which models it has "
                "(upstream_error).",
            },
        ),
    },
    # The body is read by `receive_upload` as a stream (the size cap applies while it
    # arrives), not by FastAPI: the spec's form is the one that parser's options accept.
    openapi_extra=job_submission_body(),
)
async def create_job(request: Request, gw: Gw) -> JSONResponse:
    """The song in the multipart field `file`, options in the other fields. Answers 202 with
    the job once the audio is decoded; poll the job's URL (`Location`) until it is `done`."""
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


# The JSON routes answer a JSONResponse of the dict they build: `response_model` documents it
# without FastAPI's response filtering, so nothing the model lacks is dropped.
@router.get(
    "/jobs",
    summary="List jobs, newest first",
    response_model=JobList,
    responses=error_responses(422, 503),
)
async def list_jobs(
    gw: Gw,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    status: Literal[STATUSES] | None = None,  # type: ignore[valid-type]
) -> JSONResponse:
    jobs = await store_call(gw.store.list, limit=limit, offset=offset, status=status)
    return JSONResponse({"jobs": [job_json(j) for j in jobs]})


@router.get(
    "/jobs/{job_id}",
    summary="A job's status",
    response_model=Job,
    responses=error_responses(404, 503, why={404: "No such job (not_found)."}),
)
async def get_job(job_id: JobId, gw: Gw) -> JSONResponse:
    return JSONResponse(job_json(await store_call(gw.store.get, job_id)))


@router.get(
    "/status/{job_id}",
    summary="Alias of GET /api/jobs/{id}",
    response_model=Job,
    responses=error_responses(404, 503, why={404: "No such job (not_found)."}),
)
async def get_status(job_id: JobId, gw: Gw) -> JSONResponse:
    return await get_job(job_id, gw)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a job and its files",
    responses={
        204: {"description": "Deleted."},
        **error_responses(404, 503, 507, why={404: "No such job (not_found)."}),
    },
)
async def delete_job(job_id: JobId, gw: Gw) -> None:
    await store_call(gw.store.get, job_id)
    await store_call(gw.store.delete, job_id)
    await to_thread.run_sync(job_files(gw.settings, job_id).delete)


@router.get(
    "/models",
    tags=["models"],
    summary="The models and whether their weights are here",
    response_model=ModelList,
    responses=error_responses(
        502, why={502: "The channel predictor could not be asked (upstream_error)."}
    ),
)
async def list_models(gw: Gw) -> JSONResponse:
    infos = await gw.model_infos()
    # reasons without paths
    return JSONResponse({"models": [public_model(i) for i in infos.values()]})


def safe_filename(name: str) -> str:
    """A client's file name, reduced to something safe in a header and on any disk."""
    name = unicodedata.normalize("NFKD", Path(name.replace("\\", "/")).name)
    name = name.encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._ -]+", "", name)
    stem, suffix = Path(name).stem, Path(name).suffix
    name = re.sub(r"\s+", " ", stem).strip(" .")[:100] + suffix[:10]
    return name if Path(name).stem else "audio"
