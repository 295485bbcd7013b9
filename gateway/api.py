"""The public REST API: submit, poll, list, delete (the downloads: gateway/downloads.py)."""

from __future__ import annotations

import asyncio
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
from urllib.parse import urlencode

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from common.audio import decode_audio_to_file
from common.constants import SAMPLE_RATE
from common.errors import Conflict, InvalidOption, NotFound
from gateway.access import Caller, authenticate, check_quota, keys_on, may_see
from gateway.cancel import cancel, clean_up, wait_until_stopped
from gateway.fetching import link_filename
from gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.idempotency import check_key, request_hash
from gateway.idempotency import claim as claim_idempotency
from gateway.idempotency import release as release_idempotency
from gateway.idempotency import settle as settle_idempotency
from gateway.jobfiles import job_files, link_results
from gateway.messages import public_model, result_notice
from gateway.options import parse_options, resolve_options
from gateway.schemas import (
    Job,
    JobList,
    ModelList,
    Usage,
    error_responses,
    job_submission_body,
)
from gateway.store import RUNNABLE, STATUSES, JobRecord
from gateway.tenants import DAY_S, Tenant, record_usage, tenant_by_name, usage_window
from gateway.upload import receive_upload
from gateway.webhooks import webhook_state, webhook_states

# The spec's security scheme. `authenticate` does the checking; this dependency only puts the
# header in the spec (auto_error=False: it refuses nothing itself).
API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    auto_error=False,
    description="Needed where the gateway has keys switched on (AUTH=keys, or API_KEYS set; "
    "off by default, and then every /api route answers without one). Each key is a tenant: "
    "it sees only its own jobs. /health, /ready, /metrics, /docs and the page never need it.",
)


def api_router(tag: str) -> APIRouter:
    """A router of /api routes (this module's; gateway/downloads.py's): API key, the 401."""
    return APIRouter(
        prefix="/api",
        tags=[tag],
        dependencies=[Security(API_KEY), Depends(authenticate)],
        responses=error_responses(401),
        # operation ids = the functions' names: a generated client's `create_job`, `get_stem`
        generate_unique_id_function=lambda route: route.name,
    )


router = api_router("jobs")

T = TypeVar("T")
JOB_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def new_job_id() -> str:
    """128 random bits, URL-safe, never opening with '-': one id in 64 did, and a command
    line reads `audiosplit status -m9dT…` as an option (a CI run failed on one)."""
    while (job_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return job_id


async def job_id_param(
    job_id: Annotated[str, PathParam(description="The job's id, as POST /api/jobs answered it.")],
    request: Request,
    tenant: Caller,
) -> str:
    """A malformed id names no job: 404 like an unknown one (not a 422 about its shape); so
    does another tenant's job, word for word: nothing tells a caller that it exists."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFound(f"no job {job_id[:80]!r}")
    if not tenant.admin:
        job = await store_call(request.app.state.gateway.store.get, job_id)
        if not may_see(tenant, job):
            raise NotFound(f"no job {job_id!r}")
        request.state.job = job  # a status poll answers this read, not a second one
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


def job_json(job: JobRecord, now: float | None = None, webhook: dict | None = None) -> dict:
    base = f"/api/jobs/{job.id}"
    links = {"self": base}
    if job.options.get("resolved", {}).get("analysis", True):
        links["analysis"] = f"{base}/analysis"
    if job.status == "done" or (job.status != "failed" and job.ready_s > 0):
        links["result"] = f"{base}/result"  # while it runs: the final prefix (format=wav)
        links["stems"] = {s: f"{base}/stems/{s}" for s in job.stems}
    if job.status == "done":
        links["zip"] = f"{base}/download.zip"
    if job.status in ("queued", "running"):
        links["cancel"] = f"{base}/cancel"
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
        "source_url": job.source_url,
        "title": job.title,
        "webhook": (
            {k: webhook[k] for k in ("url", "status", "attempts", "last_error")}
            if webhook
            else (
                {"url": job.callback_url, "status": "waiting", "attempts": 0, "last_error": None}
                if job.callback_url
                else None
            )
        ),
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
            409,
            413,
            415,
            422,
            429,
            502,
            503,
            507,
            why={
                409: "A request with this Idempotency-Key is still being worked on "
                "(idempotency_in_progress): retry in a few seconds for its job.",
                422: "A form field is not accepted (invalid_option, unknown_model), the model "
                "asked for by name cannot be had (model_unavailable), the audio is too short "
                "or too long (audio_rejected), a link is refused (url_refused, url_rejected), "
                "the Idempotency-Key was used for another request (idempotency_mismatch), or "
                "the song is longer than the key's whole daily quota (quota_exceeded).",
                429: "Too many submissions a minute (rate_limited), or the key's daily minutes "
                "are used up (quota_exceeded); `Retry-After` says when to try again.",
                502: "The channel predictor could not be asked which models it has "
                "(upstream_error).",
            },
        ),
    },
    # The body is read by `receive_upload` as a stream (the size cap applies while it
    # arrives), not by FastAPI: the spec's form is the one that parser's options accept.
    openapi_extra=job_submission_body(),
)
async def create_job(request: Request, gw: Gw, tenant: Caller) -> JSONResponse:
    """The song in the multipart field `file` (or a link to it in `url`), options in the
    other fields. Answers 202 with the job once the audio is decoded (a link: once it is
    checked; it is fetched in the job's stage `fetching`); poll the job's URL (`Location`)
    until it is `done`, or give a `callback_url` to be called when it ends."""
    settings = gw.settings
    await to_thread.run_sync(gw.rate_limiter.check, *rate_client(request, tenant, settings))
    idempotency_key = request.headers.get(IDEMPOTENCY_HEADER)
    if idempotency_key is not None:
        check_key(idempotency_key)
    job_id = new_job_id()
    files = job_files(settings, job_id)
    files.dir.mkdir(parents=True, exist_ok=True)
    claimed = False
    try:
        upload = await receive_upload(request, files.upload_path, settings.max_upload_bytes)
        url = upload.fields.pop("url", "").strip() or None
        callback = upload.fields.pop("callback_url", "").strip() or tenant.webhook_url
        options = parse_options(upload.fields, settings.default_model)
        if url is not None:
            url = await gw.importer.check(url, "url")
        if callback is not None:
            callback = await gw.importer.check(callback, "callback_url")
        if idempotency_key is not None:
            asked = request_hash(url or upload.sha256, {**options.__dict__, "cb": callback})
            made = await store_call(
                claim_idempotency,
                gw.store,
                tenant.id,
                idempotency_key,
                asked,
                settings.idempotency_hours * 3600,
            )
            if made is not None:  # the same request again: its job, nothing processed twice
                files.delete()
                job = await store_call(gw.store.get, made)
                headers = {**location(made), "Idempotent-Replayed": "true"}
                return JSONResponse(job_json(job), status_code=202, headers=headers)
            claimed = True
        resolved = resolve_options(options, await gw.model_infos())
        new = JobRecord(
            id=job_id,
            status="queued",
            stage="queued",
            created_at=time.time(),
            updated_at=time.time(),
            model=resolved.model,
            model_reason=resolved.model_reason,
            stems=resolved.stems,
            options={"requested": options.__dict__, "resolved": resolved.to_dict()},
            tenant=tenant.id,
            callback_url=callback,
        )
        if url is not None:
            job = await accept_url(gw, tenant, new, url)
        else:
            job = await accept_upload(gw, tenant, new, upload, files)
        if claimed:
            await store_call(settle_idempotency, gw.store, tenant.id, idempotency_key, job.id)
    except BaseException:
        files.delete()
        if claimed:
            await store_call(release_idempotency, gw.store, tenant.id, idempotency_key)
        raise
    return JSONResponse(job_json(job), status_code=202, headers=location(job_id))


def rate_client(request: Request, tenant: Tenant, settings) -> tuple[str, str]:
    """Whose submissions the rate limit counts: the tenant's with keys on, else the address's."""
    if keys_on(settings):
        return f"tenant:{tenant.id}", "this key"
    return (request.client.host if request.client else "unknown"), "this client"


async def accept_upload(gw, tenant: Tenant, job: JobRecord, upload, files) -> JobRecord:
    """An uploaded song: reuse an identical earlier result, or decode it into the job's input
    and queue the job. Counted against the tenant's quota either way."""
    settings = gw.settings
    key = cache_key(upload.sha256, job.options["resolved"])
    job.filename = safe_filename(upload.filename)
    job.content_hash = key
    cached = await store_call(gw.store.find_done, key)
    if cached is not None:
        await store_call(check_quota, gw.store, tenant, cached.duration_s)
        reused = await to_thread.run_sync(reuse_result, gw, cached, job)
        if reused is not None:
            files.upload_path.unlink(missing_ok=True)
            return reused
    async with gw.decode_limiter:  # a block at a time, straight into the job's input
        decoded = await to_thread.run_sync(
            lambda: decode_audio_to_file(
                files.upload_path,
                files.input_path,
                min_duration_s=settings.min_duration_s,
                max_duration_s=settings.max_duration_s,
            )
        )
    files.upload_path.unlink(missing_ok=True)  # the decoded input is what the job runs on
    job.n_frames = decoded.n_frames
    job.duration_s = round(decoded.n_frames / SAMPLE_RATE, 3)
    job.warnings = list(decoded.warnings)
    await store_call(check_quota, gw.store, tenant, job.duration_s)
    # in object storage: where any gateway can fetch it to run the job
    await to_thread.run_sync(files.publish, files.input_path)
    await store_call(record_usage, gw.store, tenant.id, job.id, job.duration_s)
    job.rank = await store_call(gw.store.backlog, tenant.id)
    await store_call(gw.store.insert, job)
    await gw.runner.submit(job.id)
    return job


async def accept_url(gw, tenant: Tenant, job: JobRecord, url: str) -> JobRecord:
    """A link: what is there is probed now (a page with no audio, a playlist, a song over the
    duration or size cap: refused before anything is fetched); the job fetches it in stage
    `fetching`, and its minutes count once it is decoded."""
    probe = await gw.importer.probe(url)
    if probe.duration_s is not None:
        await store_call(check_quota, gw.store, tenant, probe.duration_s)
    job.stage = "fetching"
    job.source_url = url
    job.title = probe.title
    job.filename = safe_filename(link_filename(probe))
    job.duration_s = round(probe.duration_s or 0.0, 3)
    job.rank = await store_call(gw.store.backlog, tenant.id)
    await store_call(gw.store.insert, job)
    await gw.runner.submit(job.id)
    return job


def location(job_id: str) -> dict[str, str]:
    return {"Location": f"/api/jobs/{job_id}"}


def cache_key(upload_sha256: str, resolved: dict) -> str:
    """Same audio bytes + same model and options -> same stems."""
    options = json.dumps(resolved, sort_keys=True)
    return hashlib.sha256(f"{upload_sha256}|{options}".encode()).hexdigest()


def reuse_result(gw, cached: JobRecord, job: JobRecord) -> JobRecord | None:
    """`job`, born done, holding links to an identical earlier job's files (None when those
    files are gone). The earlier job may be another tenant's: then nothing in the new job
    names it (its id stays out of the note), and the files are the new job's own links, so
    deleting either job leaves the other's intact."""
    source = job_files(gw.settings, cached.id)
    target = job_files(gw.settings, job.id)
    if not link_results(source, target):
        return None
    done = JobRecord(
        **{
            **cached.__dict__,
            **{k: getattr(job, k) for k in ("id", "created_at", "updated_at", "filename")},
            **{k: getattr(job, k) for k in ("tenant", "callback_url", "options")},
            "stage": "done",
            "warnings": list(cached.warnings),
            "notes": [
                f"result reused from the identical earlier job {cached.id}"
                if cached.tenant == job.tenant
                else "result reused from an identical earlier job"
            ],
            "source_url": None,
            "title": None,
        }
    )
    gw.store.insert_ended(done, gw.on_job_end)
    record_usage(gw.store, job.tenant, job.id, done.duration_s)
    return done


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
    tenant: Caller,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    status: Literal[STATUSES] | None = None,  # type: ignore[valid-type]
    of: Annotated[
        str | None,
        Query(alias="tenant", description="Admin keys only: that tenant's jobs (its name)."),
    ] = None,
) -> JSONResponse:
    """The caller's jobs (an admin key: everyone's, or one tenant's), a page at a time:
    `total` counts them all, `next` is the next page's URL (null on the last)."""
    whose = await store_call(visible_tenant, gw, tenant, of)
    jobs, total = await asyncio.gather(
        store_call(gw.store.list, limit=limit, offset=offset, status=status, tenant=whose),
        store_call(gw.store.count, status=status, tenant=whose),
    )
    states = await store_call(webhook_states, gw.store, [j.id for j in jobs if j.callback_url])
    following = None
    if offset + len(jobs) < total:
        query = {"limit": limit, "offset": offset + len(jobs), "status": status, "tenant": of}
        following = "/api/jobs?" + urlencode({k: v for k, v in query.items() if v is not None})
    return JSONResponse(
        {
            "jobs": [job_json(j, webhook=states.get(j.id)) for j in jobs],
            "total": total,
            "next": following,
        }
    )


def visible_tenant(gw, tenant: Tenant, of: str | None) -> str | None:
    """Whose jobs a listing shows: the caller's own; an admin's: all, or the named tenant's."""
    if not tenant.admin:
        if of is not None:
            raise InvalidOption("only an admin key lists another tenant's jobs (`tenant=`)")
        return tenant.id
    if of is None:
        return None
    found = tenant_by_name(gw.store, of)
    if found is None:
        raise InvalidOption(f"no tenant named {of[:80]!r} (`audiosplit keys list`)")
    return found.id


async def job_answer(gw, job_id: str, job: JobRecord | None = None) -> dict:
    """A job's JSON with what only a single job's answer carries: its webhook's state, and
    for a queued job its place in the queue and a wait from recent jobs' times. `job`: the
    row as the owner check just read it (with keys on), else it is read here."""
    if job is None:
        job = await store_call(gw.store.get, job_id)
    webhook = await store_call(webhook_state, gw.store, job_id) if job.callback_url else None
    answer = job_json(job, webhook=webhook)
    if job.status == "queued" and job.stage != "fetching":
        place = await store_call(gw.store.queue_place, job)
        typical = await store_call(gw.store.recent_run_s)
        answer["queue_position"] = place
        if typical is not None:
            workers = max(1, gw.settings.job_concurrency)
            answer["eta_s"] = round(typical * (1 + (place - 1) / workers), 1)
    return answer


@router.get(
    "/jobs/{job_id}",
    summary="A job's status",
    response_model=Job,
    responses=error_responses(404, 503, why={404: "No such job (not_found)."}),
)
async def get_job(job_id: JobId, gw: Gw, request: Request) -> JSONResponse:
    return JSONResponse(await job_answer(gw, job_id, getattr(request.state, "job", None)))


@router.get(
    "/status/{job_id}",
    summary="Alias of GET /api/jobs/{id}",
    response_model=Job,
    responses=error_responses(404, 503, why={404: "No such job (not_found)."}),
)
async def get_status(job_id: JobId, gw: Gw, request: Request) -> JSONResponse:
    return await get_job(job_id, gw, request)


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a queued or running job",
    response_model=Job,
    responses=error_responses(
        404,
        409,
        503,
        why={
            404: "No such job (not_found).",
            409: "The job has ended already: done or failed (not_cancellable).",
        },
    ),
)
async def cancel_job(job_id: JobId, gw: Gw) -> JSONResponse:
    """The job turns `cancelled` at once: no further chunk is sent, the work on it stops and
    its files are deleted; its webhook (if any) is called. Cancelling a cancelled job
    answers it again."""
    job = await cancel(gw, job_id)
    if job is None:
        job = await store_call(gw.store.get, job_id)
        if job.status != "cancelled":
            raise Conflict(
                f"job {job_id} is {job.status}: only a queued or running job can be cancelled "
                "(DELETE removes an ended job)",
                code="not_cancellable",
            )
    return JSONResponse(await job_answer(gw, job_id))


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
    """A queued or running job is cancelled first; then its files go everywhere (this
    gateway, the fuser, the bucket) and the job with them."""
    job = await store_call(gw.store.get, job_id)
    if job.status in RUNNABLE:
        await cancel(gw, job_id)
        await wait_until_stopped(gw, job_id)
    await clean_up(gw, job_id)
    await store_call(gw.store.delete, job_id)
    await to_thread.run_sync(job_files(gw.settings, job_id).delete)  # after a late write


@router.get(
    "/usage",
    tags=["usage"],
    summary="The caller's use and limits",
    response_model=Usage,
    responses=error_responses(503),
)
async def get_usage(gw: Gw, tenant: Caller) -> JSONResponse:
    """Audio minutes accepted in the last 24 h against the daily quota, jobs running and
    queued against the limit of jobs at once."""
    used, accepted = await store_call(usage_window, gw.store, tenant.id)
    limit_s = tenant.minutes_per_day * 60.0 if tenant.minutes_per_day is not None else None
    running, queued = await asyncio.gather(
        store_call(gw.store.count, status="running", tenant=tenant.id),
        store_call(gw.store.count, status="queued", tenant=tenant.id),
    )
    frees_in = None
    if accepted:
        frees_in = round(DAY_S - accepted[0][0], 1)
    return JSONResponse(
        {
            "tenant": tenant.name,
            "admin": tenant.admin,
            "minutes_today": round(used / 60.0, 2),
            "minutes_per_day": tenant.minutes_per_day,
            "minutes_left": None if limit_s is None else round(max(0.0, limit_s - used) / 60.0, 2),
            "next_minutes_free_in_s": frees_in,
            "running": running,
            "queued": queued,
            "concurrent": tenant.concurrent,
        }
    )


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
