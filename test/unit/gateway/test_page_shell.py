"""gateway/page.py: what makes the page an installable app that opens offline — the service
worker at `/sw.js` with the page shell it keeps, the web app manifest and its icons."""

from __future__ import annotations

import json
import struct

import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from common.service import create_service_app
from gateway import page


@pytest.fixture
def client():
    app = create_service_app("page", Settings(_env_file=None), routers=[page.router])
    with TestClient(app) as c:
        yield c


def png_size(body: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert body[:8] == b"\x89PNG\r\n\x1a\n" and body[12:16] == b"IHDR"
    return struct.unpack(">II", body[16:24])


def test_the_service_worker_is_served_at_the_root_with_the_shell_it_keeps(client):
    r = client.get("/sw.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache"
    first, rest = r.text.split("\n", 1)
    assert first.startswith("const SHELL = ") and first.endswith(";")
    shell = json.loads(first.removeprefix("const SHELL = ").removesuffix(";"))
    assert shell[:2] == ["/", "/favicon.svg"]
    for name in ("app.js", "style.css", "manifest.webmanifest", "icon-192.png", "transpose.js"):
        assert f"/static/{name}" in shell
    assert "/static/sw.js" not in shell and "/static/index.html" not in shell
    assert rest.lstrip() == (page.STATIC / "sw.js").read_text(encoding="utf-8")


def test_every_file_of_the_shell_is_served(client):
    """The worker's install keeps what it can: a shell URL the gateway refused would be a
    page that opens offline without that file."""
    for url in page.shell_urls():
        assert client.get(url).status_code == 200, url


def test_the_manifest_names_the_app_and_its_icons(client):
    r = client.get("/static/manifest.webmanifest")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/manifest+json"
    manifest = r.json()
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    assert manifest["name"] and manifest["short_name"] and manifest["theme_color"]
    purposes = set()
    for icon in manifest["icons"]:
        body = client.get(icon["src"]).content
        side = int(icon["sizes"].split("x")[0])
        assert png_size(body) == (side, side), icon
        purposes.add((side, icon["purpose"]))
    assert {(192, "any"), (512, "any"), (512, "maskable")} <= purposes
