"""`/docs` (Swagger UI) and `/redoc` render the gateway's API with no network: every request the
pages make to anything but the gateway is blocked (and counted), and the operations still show,
with no failed request and no console error. A gateway alone serves them (no other service)."""

from __future__ import annotations

import os
import signal
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from test.stackutil import spawn_gateway, stack_settings, wait_process_healthy

RENDER_MS = 30_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """The gateway alone on a free loopback port (the other services' URLs name free ports
    where nothing listens: the docs never call them)."""
    _, env = stack_settings(
        tmp_path_factory.mktemp("docs_data"), tmp_path_factory.mktemp("docs_models")
    )
    port = int(env["GATEWAY_PORT"])
    gateway = spawn_gateway(port, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_process_healthy(url, gateway)
        yield url
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        gateway.wait(timeout=30)


@pytest.fixture
def offline_page(context):
    """A page whose every request off 127.0.0.1 is aborted; what it tried and what went wrong
    are in `page.outside`, `page.failed`, `page.errors`."""
    page = context.new_page()
    page.outside, page.failed, page.errors = [], [], []

    def only_loopback(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.on("requestfailed", lambda request: page.failed.append(request.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    page.close()


def assert_offline_and_clean(page) -> None:
    assert page.outside == [], "the page reached beyond the gateway"
    assert page.failed == [] and page.errors == []


def test_swagger_ui_renders_the_api_offline(offline_page, shots):
    page = offline_page
    page.goto("/docs")
    submit = page.locator("#operations-jobs-create_job")
    expect(submit).to_be_visible(timeout=RENDER_MS)
    expect(submit).to_contain_text("POST")
    expect(submit).to_contain_text("/api/jobs")
    expect(page.locator("#operations-results-get_stem")).to_be_visible()
    expect(page.locator(".auth-wrapper .authorize")).to_be_visible()  # the API key scheme
    submit.locator(".opblock-summary").click()  # the upload form, field by field
    form = submit.locator(".opblock-body")
    expect(form).to_contain_text("multipart/form-data", timeout=RENDER_MS)
    for field in ("file", "model", "quality", "stems", "ensemble_weights"):
        expect(form.locator(f"tr[data-property-name='{field}']")).to_be_visible()
    for status in ("202", "413", "415", "429"):
        expect(form.locator(f"tr.response[data-code='{status}']")).to_be_visible()
    shots(page, "docs-swagger.png", full_page=False)
    assert_offline_and_clean(page)


def test_redoc_renders_the_api_offline(offline_page, shots):
    page = offline_page
    page.goto("/redoc")
    heading = page.get_by_role("heading", name="Upload a song and start separating it")
    expect(heading).to_be_visible(timeout=RENDER_MS)
    expect(page.get_by_text("multipart/form-data").first).to_be_visible()
    expect(page.get_by_role("heading", name="One stem", exact=False).first).to_be_attached()
    shots(page, "docs-redoc.png", full_page=False)
    assert_offline_and_clean(page)
