"""The one app factory every service is built with: health, metrics, errors, logging, docs.

A service module defines its routes and a lifespan that loads its model into `app.state`, then
calls `create_service_app`. `app.state.ready` turns True when the lifespan has loaded what the
service needs; `/health` answers 200 from then on (503 before). `/docs` (Swagger UI) and
`/redoc` render the service's `/openapi.json` with scripts and styles the service serves itself.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.apidocs import add_docs, spec_as_answered
from common.config import Settings
from common.errors import AudiosplitError
from common.interfaces import HealthAnswer, ReadyAnswer
from common.logs import JOB_ID_HEADER, REQUEST_ID_HEADER, job_id_var, request_id_var, setup_logging
from common.metrics import REQUEST_LATENCY, metrics_response
from common.redact import settings_paths, without_paths

log = logging.getLogger("audiosplit.service")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
Readiness = Callable[[FastAPI], Awaitable[dict[str, str]]]


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def create_service_app(
    name: str,
    settings: Settings,
    *,
    routers: list[APIRouter],
    lifespan: Lifespan | None = None,
    description: str = "",
    docs: bool = True,
    readiness: Readiness | None = None,
) -> FastAPI:
    """`/health`: alive and loaded (200 once the lifespan set `app.state.ready`). `/ready`: that,
    and whatever `readiness(app)` checks (models loaded, downstream services reachable): a dict
    of check -> "ok" or what is wrong; 200 when every check is "ok", else 503."""
    setup_logging(name, settings.log_level)
    app = FastAPI(
        title=f"audiosplit {name}",
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load their scripts from a CDN: see add_docs
        redoc_url=None,
    )
    app.openapi = functools.partial(spec_as_answered, app)
    app.state.settings = settings
    app.state.service = name
    app.state.ready = lifespan is None

    @app.middleware("http")
    async def trace_and_time(request: Request, call_next):
        rid = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex[:16]
        rid_token = request_id_var.set(rid)
        jid_token = job_id_var.set(request.headers.get(JOB_ID_HEADER, ""))
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers[REQUEST_ID_HEADER] = rid
            return response
        finally:
            elapsed = time.perf_counter() - start
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_LATENCY.labels(name, request.method, path, str(status)).observe(elapsed)
            if path not in ("/health", "/metrics", "/ready"):
                log.info(
                    "%s %s %d %.3fs",
                    request.method,
                    request.url.path,
                    status,
                    elapsed,
                    extra={"fields": {"status": status, "seconds": round(elapsed, 4)}},
                )
            request_id_var.reset(rid_token)
            job_id_var.reset(jid_token)

    server_dirs = settings_paths(settings)

    def public(message: str) -> str:
        """The message without the server's paths; the whole of it goes to the log."""
        shown = without_paths(message, server_dirs)
        if shown != message:
            log.warning("answered without its server paths: %s", message)
        return shown

    @app.exception_handler(AudiosplitError)
    async def on_our_error(request: Request, exc: AudiosplitError):
        if exc.status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return JSONResponse(
            error_body(exc.code, public(exc.message)), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in exc.errors()
        )
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, public(str(exc.detail))),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        # Our own bug: log the trace, never send it to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal_error", f"internal error in {name}; see its log"),
            status_code=500,
        )

    @app.get(
        "/health",
        tags=["ops"],
        summary="Alive, and loaded what it needs to take work",
        response_model=HealthAnswer,
        responses={503: {"model": HealthAnswer, "description": "Starting: not loaded yet."}},
    )
    async def health(request: Request):
        # the pid lets a launcher tell its own process from another program on the same port
        ready = request.app.state.ready
        body = {"status": "ok" if ready else "starting", "service": name, "pid": os.getpid()}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/ready",
        tags=["ops"],
        summary="Ready: loaded, and what it depends on answers",
        response_model=ReadyAnswer,
        responses={503: {"model": ReadyAnswer, "description": "A check is not ok."}},
    )
    async def ready(request: Request):
        checks = {"loaded": "ok" if request.app.state.ready else "starting"}
        if request.app.state.ready and readiness is not None:
            checks.update(await readiness(request.app))
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ok else "not_ready", "service": name, "checks": checks}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return metrics_response()

    for router in routers:
        app.include_router(router)
    if docs:
        add_docs(app)
    return app
