"""The real stack (once per session) and a real headless Chromium (once per module), for the
page's tests.

Skipped, naming what to install, where Debian's Chromium or Playwright for Python is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from test.songgen import make_song, mixture
from test.stackutil import REPO, dsp_stack

CHROMIUM = Path("/usr/bin/chromium")
SONG_S = 10.0  # seconds of generated music: long enough for two analysis windows
SAMPLE_RATE = 44100
SCREENSHOTS = REPO / "docs" / "screenshots"  # the README's pictures, refreshed on request
README_SHOTS = (
    "page-start.png",
    "page-progress.png",
    "page-done-mixer.png",
    "page-progressive.png",
    "page-downloading.png",
    "page-dsp-notice.png",
    "page-practice.png",
    "page-phone.png",
    "page-chained.png",
)

if not CHROMIUM.exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run the browser tests",
        allow_module_level=True,
    )
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip(
        "Playwright for Python is missing: `pip install playwright` to run the browser tests",
        allow_module_level=True,
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """One stack (dsp, default settings) for the session's page tests; a module that needs
    other settings defines its own `stack`. Each module's browser profile is its own, so its
    job history starts empty."""
    yield from dsp_stack(tmp_path_factory, "page")


@pytest.fixture(scope="module")
def base_url(stack) -> str:
    return stack.url("gateway")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def context(browser, base_url):
    """One browser profile for the module: its localStorage holds the job history."""
    context = browser.new_context(base_url=base_url, accept_downloads=True)
    context.set_default_timeout(60_000)
    yield context
    context.close()


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """A generated song (vocals, drums, bass, pad) as a 16-bit WAV file."""
    path = tmp_path_factory.mktemp("songs") / "generated song.wav"
    sf.write(path, mixture(make_song(SONG_S, SAMPLE_RATE, seed=3)).T, SAMPLE_RATE, "PCM_16")
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """save(page, name): a screenshot under the test's tmp dir; the README's ones also into
    docs/screenshots when AUDIOSPLIT_SCREENSHOTS=1."""
    folder = tmp_path_factory.mktemp("screenshots")

    def save(page, name: str, **kwargs) -> Path:
        path = folder / name
        page.screenshot(path=str(path), **kwargs)
        if name in README_SHOTS and os.environ.get("AUDIOSPLIT_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, SCREENSHOTS / name)
        return path

    return save
