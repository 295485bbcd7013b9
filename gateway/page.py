"""The upload page at `/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
PAGE = Path(__file__).parent / "static" / "index.html"


@router.get("/", response_class=HTMLResponse)
async def upload_page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))
