"""The browser page at `/` and the few static files it loads (no build step, no CDN: the page
works offline, so everything it needs is served from `gateway/static`, and its one library from
`node_modules`, installed by `./run.sh install` from package-lock.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response

from common.errors import AudiosplitError, NotFound

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "index.html"
FAVICON = STATIC / "favicon.svg"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
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
NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
# The page's libraries: a fixed map from the URL's name to one file of an npm package (pinned in
# package-lock.json), so that no request names a path of its own.
VENDOR = {
    "signalsmith-stretch.mjs": ("signalsmith-stretch", "SignalsmithStretch.mjs"),
}


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


@router.get("/static/vendor/{name}")
async def vendor_file(name: str) -> FileResponse:
    if name not in VENDOR:
        raise NotFound(f"no library {name!r}: the page loads only {sorted(VENDOR)}")
    package, file = VENDOR[name]
    path = NODE_MODULES / package / file
    if not path.is_file():
        # 503, not 404: the page asked for the right file; this server lacks its install step.
        raise AudiosplitError(
            f"the page's library {package} is not installed (node_modules/{package}/{file} is "
            "missing on the server): run `./run.sh install` (or `npm ci --omit=dev`)",
            code="library_missing",
            status=503,
        )
    return FileResponse(path, media_type=MEDIA_TYPES[".mjs"], headers=NO_CACHE)


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
