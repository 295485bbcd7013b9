"""The browser page at `/` and the few static files it loads (no build step, no CDN: the page
works offline, so everything it needs is served from `gateway/static`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from common.errors import NotFound

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "index.html"
FAVICON = STATIC / "favicon.svg"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
    ".html": "text/html; charset=utf-8",
}
# Revalidate on every load: a page that changed with the gateway must not run yesterday's script.
NO_CACHE = {"Cache-Control": "no-cache"}
# One plain file name: no folder, no dot-file, so a request can never leave gateway/static.
STATIC_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9]+)+")


@router.get("/", response_class=HTMLResponse)
async def upload_page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=NO_CACHE)


@router.get("/favicon.svg")
@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    # An SVG answers /favicon.ico too: browsers that ask for it by habit read the media type.
    return FileResponse(FAVICON, media_type=MEDIA_TYPES[".svg"], headers=NO_CACHE)


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    path = (STATIC / name).resolve()
    media_type = MEDIA_TYPES.get(path.suffix)
    known = STATIC_NAME.fullmatch(name) and path.parent == STATIC.resolve() and path.is_file()
    if not known or media_type is None:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(path, media_type=media_type, headers=NO_CACHE)


SERVICE_WORKER = STATIC / "sw.js"


def shell_urls() -> list[str]:
    """The page shell the service worker keeps for offline use: `/`, the favicon and every
    static file the page may load (not the worker itself)."""
    left_out = {PAGE.name, SERVICE_WORKER.name}
    names = sorted(
        p.name
        for p in STATIC.iterdir()
        if p.is_file() and p.suffix in MEDIA_TYPES and p.name not in left_out
    )
    return ["/", "/favicon.svg", *(f"/static/{name}" for name in names)]


@router.get("/sw.js")
async def service_worker() -> Response:
    # At the root, not under /static: a worker controls only the pages under its own path.
    worker = SERVICE_WORKER.read_text(encoding="utf-8")
    script = f"const SHELL = {json.dumps(shell_urls())};\n\n{worker}"
    return Response(script, media_type=MEDIA_TYPES[".js"], headers=NO_CACHE)
