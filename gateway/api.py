"""The public REST API: poll, list, cancel, delete, usage, models (the submission:
gateway/submit.py; the downloads: gateway/downloads.py)."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlencode

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from common.errors import Conflict, InvalidOption, NotFound
from gateway.access import Caller, authenticate, may_see
from gateway.cancel import cancel, clean_up, wait_until_stopped
from gateway.chains import RECIPES, recipe_json, tasks_json
from gateway.jobfiles import job_files
from gateway.messages import public_model, result_notice
from gateway.music import TRANSCRIBER
from gateway.schemas import (
    Job,
    JobList,
    ModelList,
    Usage,
    error_responses,
)
from gateway.store import RUNNABLE, STATUSES, JobRecord
from gateway.tenants import DAY_S, Tenant, tenant_by_name, usage_window
from gateway.webhooks import webhook_state, webhook_states
from prediction.catalogue import TASKS
from transforms.beats import LICENCES as BEAT_LICENCES

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
        links["mix"] = f"{base}/mix"  # with ?speed=&semitones=&gains=&format=
        if job.options.get("resolved", {}).get("midi"):
            links["midi"] = f"{base}/midi"
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
    return JSONResponse(
        {
            "models": [public_model(i) for i in infos.values()],
            "tasks": tasks_json(list(infos.values()), TASKS),
            "recipes": [recipe_json(name, r) for name, r in RECIPES.items()],
            "analysis": analysis_models(gw),
        }
    )


def analysis_models(gw) -> list[dict]:
    """The trained models the analysis runs, with their licences (BEAT_MODEL picks the beats')."""
    beats = gw.settings.beat_model
    return [
        {"task": "beats", "name": beats, "licence": BEAT_LICENCES[beats]},
        {"task": "midi", **TRANSCRIBER},
    ]
