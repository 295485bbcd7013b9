"""The page where the gateway has keys on (AUTH=keys, one API_KEYS key): it asks for the key,
shows the server's message for a wrong one, lists the key's jobs for the right one and sends it
with every request (downloads too, without putting it in a URL); a queued job says its place in
line, a running one can be cancelled; a link is fetched by the server, its stage shown."""

from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
import soundfile as sf
from playwright.sync_api import expect

from common.ports import free_port
from test.browser.conftest import SAMPLE_RATE
from test.browser.test_page import READY, WAIT_MS, goto_page, new_page
from test.songgen import make_song, mixture
from test.stackutil import APPS_KEY

KEY = APPS_KEY
LONG_S = 180.0  # a dsp job that still runs while a second is uploaded, and is cancelled
DRIP_PIECES, DRIP_PAUSE_S = 12, 0.25  # the link's song arrives over 3 s: its fetch is seen
# Stems held back until the test lets them go, so that a cancel lands while the player is
# still opening the job (it opens by itself once the job's first seconds are final). Held
# from before the job runs: a job that is listenable at its first poll opens at once, before
# the test could see it load (a 1.5 s delay put in after it ran lost that race in CI).
HOLD_STEMS = """() => {
  window.realFetch = window.fetch;
  let release;
  const held = new Promise((ok) => { release = ok; });
  window.releaseStems = release;
  window.stemsLetGo = 0;
  window.fetch = async (...args) => {
    const stem = String(args[0]).includes("/stems/");
    if (stem) await held;
    const r = await window.realFetch(...args);
    if (stem) window.stemsLetGo++;
    return r;
  };
  // every job the player comes to show, in order
  const state = window.audiosplit.state;
  let job = state.job;
  window.shown = [];
  Object.defineProperty(state, "job", {
    get: () => job,
    set: (v) => { job = v; if (v) window.shown.push(v.id); },
  });
}"""
RELEASE_STEMS = "() => { window.releaseStems(); window.fetch = window.realFetch; }"


@pytest.fixture(scope="module")
def stack(keys_stack):
    """Keys on, one job at a time (the second song waits in line), links from loopback: the
    session's keys stack (test/conftest.py), shared with test_tenants."""
    return keys_stack


@pytest.fixture(scope="module")
def long_songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    ten = mixture(make_song(10.0, SAMPLE_RATE, seed=7))
    paths = []
    for i in range(2):
        path = folder / f"long {i + 1}.wav"
        sf.write(path, (np.tile(ten, int(LONG_S / 10)) * (0.8 + 0.1 * i)).T, SAMPLE_RATE, "PCM_16")
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def keyed(context, stack):
    """A page past the key's form (the right key typed once: kept for the module's pages)."""
    page = new_page(context)
    goto_page(page)
    expect(page.locator("#key-section")).to_be_visible()
    expect(page.locator("#upload-section")).to_be_hidden()
    page.fill("#api-key", "not-the-key")
    page.click("#key-go")
    expect(page.locator("#key-error")).to_contain_text("not a valid key")
    expect(page.locator("#upload-section")).to_be_hidden()
    page.fill("#api-key", KEY)
    page.click("#key-go")
    expect(page.locator("#upload-section")).to_be_visible()
    expect(page.locator("#key-section")).to_be_hidden()
    expect(page.locator("#key-who")).to_contain_text("Using the key of")
    expect(page.locator("#model option[value=dsp]")).to_be_attached()
    assert KEY not in page.url
    return page


def test_the_key_is_asked_for_checked_and_kept(keyed, context):
    """A second page does not ask again; "forget key" asks again."""
    page = new_page(context)
    goto_page(page)
    expect(page.locator("#upload-section")).to_be_visible()
    page.click("#forget-key")
    expect(page.locator("#key-section")).to_be_visible()
    expect(page.locator("#key-error")).to_be_empty()
    assert page.evaluate("localStorage.getItem('audiosplit.apiKey')") is None
    page.fill("#api-key", KEY)  # the module's other tests go on with it
    page.click("#key-go")
    expect(page.locator("#upload-section")).to_be_visible()
    page.close()


def test_a_queued_job_says_its_place_and_a_running_one_is_cancelled(keyed, long_songs, base_url):
    page = keyed
    page.set_checked("#analysis", False)
    first = page.locator("li.job").filter(has_text="long 1.wav")
    second = page.locator("li.job").filter(has_text="long 2.wav")
    page.set_input_files("#file", str(long_songs[0]))
    page.click("#go")
    expect(first).to_have_attribute("data-status", "running", timeout=WAIT_MS)
    page.set_input_files("#file", str(long_songs[1]))
    page.click("#go")
    expect(second.locator(".job-status")).to_contain_text("Queued, 1st in line", timeout=WAIT_MS)
    page.evaluate(HOLD_STEMS)
    try:
        first.get_by_role("button", name="Cancel long 1.wav").click()
        expect(first).to_have_attribute("data-status", "cancelled")
        expect(first.locator(".job-status")).to_have_text(re.compile(r"^Cancelled"))
        expect(first.get_by_role("button", name=re.compile("^Cancel "))).to_have_count(0)
        expect(second).to_have_attribute("data-status", "running", timeout=WAIT_MS)
        page.wait_for_function("() => window.audiosplit.state.loading", timeout=WAIT_MS)
        second.get_by_role("button", name="Cancel long 2.wav").click()
        expect(second).to_have_attribute("data-status", "cancelled")
    finally:
        page.evaluate(RELEASE_STEMS)
    # the player lets go of the job it was opening: its stems, let go now, are never shown,
    # and the next upload opens by itself
    page.wait_for_function("() => window.stemsLetGo > 0")
    page.wait_for_timeout(500)  # time to decode them and show the job, were it still held
    assert second.get_attribute("data-job-id") not in page.evaluate("() => window.shown")
    assert page.evaluate("() => !window.audiosplit.state.job && !window.audiosplit.state.loading")
    job_id = first.get_attribute("data-job-id")
    r = httpx.get(f"{base_url}/api/jobs/{job_id}", headers={"X-API-Key": KEY})
    assert r.json()["status"] == "cancelled"


def test_a_finished_job_plays_and_downloads_with_the_key(keyed, song):
    """The stems reach the player, and the ZIP link saves a ZIP: both fetched with the key."""
    page = keyed
    page.set_input_files("#file", str(song))
    page.set_checked("#analysis", False)
    page.click("#go")
    page.wait_for_function(READY, timeout=WAIT_MS)
    assert KEY not in page.locator("#dl-zip").get_attribute("href")
    with page.expect_download() as caught:
        page.click("#dl-zip")
    body = open(caught.value.path(), "rb").read()  # noqa: SIM115 - read once
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert any(n.endswith("vocals.flac") for n in names), names
    assert caught.value.suggested_filename.endswith(".zip")


class Drip(BaseHTTPRequestHandler):
    """Serves one WAV slowly (DRIP_PIECES pieces, DRIP_PAUSE_S apart)."""

    body = b""

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        if self.path != "/slow.wav":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/x-wav")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        step = -(-len(self.body) // DRIP_PIECES)
        for start in range(0, len(self.body), step):
            self.wfile.write(self.body[start : start + step])
            self.wfile.flush()
            time.sleep(DRIP_PAUSE_S)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def dripping(tmp_path_factory):
    buf = io.BytesIO()
    sf.write(
        buf, mixture(make_song(20.0, SAMPLE_RATE, seed=8)).T, SAMPLE_RATE, "PCM_16", format="WAV"
    )
    handler = type("SlowSong", (Drip,), {"body": buf.getvalue()})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/slow.wav"
    server.shutdown()
    server.server_close()


def test_a_link_is_fetched_by_the_server_with_its_stage_shown(keyed, dripping, base_url):
    r = httpx.post(
        f"{base_url}/api/jobs",
        files={"url": (None, dripping.replace("slow", "none"))},
        headers={"X-API-Key": KEY},
        timeout=60,
    )
    if "loopback" in r.text:
        pytest.skip(f"this gateway refuses loopback links despite ALLOW_PRIVATE_URLS: {r.text}")
    page = keyed
    page.fill("#link", dripping)
    page.set_checked("#analysis", False)
    page.click("#go")
    card = page.locator("li.job").filter(has_text="slow")
    expect(card.locator(".job-status")).to_contain_text(
        re.compile(r"fetching \(\d+\.\d of \d+\.\d MB\)"), timeout=WAIT_MS
    )
    expect(card).to_have_attribute("data-status", "done", timeout=WAIT_MS)
    expect(card.locator(".job-title")).to_contain_text("slow")
