"""A stand-in replica for the discovery tests: a real service built by the project's own factory
(so `/health` and `/ready` are the real ones), which says who answered and whose readiness a test
can switch. Run: `uvicorn --factory test.integration.replica_app:create_app --host 127.0.0.N`.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, FastAPI, Request

from common.config import Settings
from common.service import create_service_app

router = APIRouter()


@router.get("/whoami")
async def whoami(request: Request) -> dict:
    return {"replica": request.app.state.name}


@router.post("/work")
async def work(request: Request, delay_s: float = 0.0) -> dict:
    """Holds the request `delay_s` seconds (a chunk being separated), then says who did it."""
    body = await request.body()
    request.app.state.in_flight += 1
    try:
        await asyncio.sleep(delay_s)
    finally:
        request.app.state.in_flight -= 1
    return {"replica": request.app.state.name, "bytes": len(body)}


@router.get("/in-flight")
async def in_flight(request: Request) -> dict:
    return {"in_flight": request.app.state.in_flight}


@router.put("/readiness")
async def set_readiness(request: Request, ready: bool) -> dict:
    request.app.state.test_ready = ready
    return {"ready": ready}


async def readiness(app: FastAPI) -> dict[str, str]:
    return {"switch": "ok" if app.state.test_ready else "switched off by the test"}


def create_app() -> FastAPI:
    app = create_service_app(
        "replica-test", Settings(_env_file=None), routers=[router], readiness=readiness
    )
    app.state.name = os.environ["REPLICA_NAME"]
    app.state.in_flight = 0
    app.state.test_ready = True
    return app
