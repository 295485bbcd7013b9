"""gateway/page.py: the page's library served from node_modules by a fixed name, never a path
of the request's own, and a 503 naming `./run.sh install` where it was not installed."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from common.service import create_service_app
from gateway import page

LIBRARY = "/static/vendor/signalsmith-stretch.mjs"


@pytest.fixture
def client():
    app = create_service_app("page", Settings(_env_file=None), routers=[page.router])
    with TestClient(app) as c:
        yield c


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A node_modules holding the library (the real one need not be installed here)."""
    package = tmp_path / "signalsmith-stretch"
    package.mkdir()
    (package / "SignalsmithStretch.mjs").write_text("export default function () {}\n")
    monkeypatch.setattr(page, "NODE_MODULES", tmp_path)
    return package


def test_the_library_is_served_as_a_module_script(client, installed):
    r = client.get(LIBRARY)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "no-cache"
    assert r.text == "export default function () {}\n"


def test_a_missing_install_is_a_503_that_says_how_to_install(client, tmp_path, monkeypatch):
    monkeypatch.setattr(page, "NODE_MODULES", tmp_path / "none")
    r = client.get(LIBRARY)
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "library_missing"
    assert "./run.sh install" in error["message"]
    assert str(tmp_path) not in error["message"]  # no directory of the server on the page


@pytest.mark.parametrize(
    "name",
    ["SignalsmithStretch.mjs", "..%2Fpackage.json", "signalsmith-stretch.js", "..", "x.mjs"],
)
def test_only_the_mapped_names_are_served(client, installed, name):
    (installed / "SignalsmithStretch.js").write_text("nope")
    r = client.get(f"/static/vendor/{name}")
    assert r.status_code == 404, name


def test_the_pinned_version_is_the_one_the_lock_installs():
    lock = json.loads((page.NODE_MODULES.parent / "package-lock.json").read_text())
    pinned = json.loads((page.NODE_MODULES.parent / "package.json").read_text())
    assert pinned["dependencies"] == {"signalsmith-stretch": "1.3.2"}
    assert lock["packages"]["node_modules/signalsmith-stretch"]["version"] == "1.3.2"
