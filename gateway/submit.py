"""The public REST API's submission: `POST /api/jobs`, a song uploaded or given as a link,
checked, counted against its tenant's limits and queued (or born done from the result cache).
The other job routes: gateway/api.py."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import unicodedata
from pathlib import Path

from anyio import to_thread
from fastapi import Request
from fastapi.responses import JSONResponse

from common.audio import decode_audio_to_file
from common.constants import SAMPLE_RATE
from gateway.access import Caller, check_quota, keys_on
from gateway.api import Gw, api_router, job_json, store_call
from gateway.fetching import link_filename
from gateway.idempotency import HEADER as IDEMPOTENCY_HEADER
from gateway.idempotency import check_key, request_hash
from gateway.idempotency import claim as claim_idempotency
from gateway.idempotency import release as release_idempotency
from gateway.idempotency import settle as settle_idempotency
from gateway.jobfiles import job_files, link_results
from gateway.options import parse_options, resolve_options
from gateway.schemas import Job, error_responses, job_submission_body
from gateway.store import JobRecord
from gateway.tenants import Tenant, record_usage
from gateway.upload import receive_upload

router = api_router("jobs")


def new_job_id() -> str:
    """128 random bits, URL-safe, never opening with '-': one id in 64 did, and a command
    line reads `audiosplit status -m9dT…` as an option (a CI run failed on one)."""
    while (job_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return job_id


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


def safe_filename(name: str) -> str:
    """A client's file name, reduced to something safe in a header and on any disk."""
    name = unicodedata.normalize("NFKD", Path(name.replace("\\", "/")).name)
    name = name.encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._ -]+", "", name)
    stem, suffix = Path(name).stem, Path(name).suffix
    name = re.sub(r"\s+", " ", stem).strip(" .")[:100] + suffix[:10]
    return name if Path(name).stem else "audio"
