"""A fresh machine with a (stand-in) network: no weights anywhere, a loopback hub serving
small random-weight Demucs models slowly through Demucs' own download. The first job on the
page picks htdemucs (model=auto) and shows its download's progress, then the stems; the CLI's
first job with another model prints the download as plain lines, then writes the stems."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from common.ports import free_port
from test.browser.test_page import READY, WAIT_MS, goto_page, new_page, upload
from test.integration.test_cli import cli_env
from test.integration.test_fetch import (
    FakeHub,
    demucs_remote,
    legacy_name,
    online_settings,
    th_bytes,
)
from test.separation_fixtures import FOUR, SIX, SMALL, htdemucs
from test.stackutil import start_stack

HTDEMUCS, HTDEMUCS_6S = "955717e8", "5c90dfd2"  # their signatures in Demucs' files.txt
PIECES_PAUSE_S = 0.5  # each file arrives in 20 pieces over ~10 s: the page sees it downloading
DOWNLOADING = re.compile(
    r"Downloading the model's weights \(first use only\): (\d+\.\d) of (\d+\.\d) MB"
)
PART_WAY = re.compile(r"weights \(first use only\): (?!0\.0 )\d+\.\d of")  # past 0.0 MB


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    bodies = {
        HTDEMUCS: th_bytes(htdemucs(FOUR, seed=0, **SMALL)),
        HTDEMUCS_6S: th_bytes(htdemucs(SIX, seed=1, **SMALL)),
    }
    names = {sig: legacy_name(sig, body) for sig, body in bodies.items()}
    files = {f"/demucs/t/{names[sig]}": body for sig, body in bodies.items()}
    hub = FakeHub(free_port(), files, hanging=set(), slow=set(files), pause_s=PIECES_PAUSE_S)
    hub.names, hub.remote_root = names, demucs_remote(tmp_path_factory.mktemp("remote"), names)
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def stack(hub, tmp_path_factory):
    """Nothing under the models dir; the predictor does not fetch at start (PREFETCH_MODELS),
    so that the job itself meets the download."""
    stack = start_stack(
        tmp_path_factory.mktemp("first_use_data"),
        tmp_path_factory.mktemp("first_use_models"),
        **online_settings(hub),
        prefetch_models="none",
        compile_models="off",
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def base_url(stack) -> str:
    return stack.url("gateway")


def test_the_first_job_on_the_page_shows_its_model_downloading(context, song, shots, hub):
    page = new_page(context)
    goto_page(page)
    expect(page.locator("#model option[value=htdemucs]")).to_contain_text("downloaded on first use")
    upload(page, song, analysis=False)
    seen = page.locator("li.job").filter(has_text=DOWNLOADING)
    expect(seen).to_have_count(1, timeout=WAIT_MS)
    part_way = page.locator("li.job").filter(has_text=PART_WAY)
    expect(part_way).to_have_count(1, timeout=WAIT_MS)
    text, bar = part_way.inner_text(), part_way.locator("progress").evaluate("p => p.value")
    done, total = map(float, DOWNLOADING.search(text).groups())
    assert 0 < done <= total, text
    assert bar == pytest.approx(done / total, abs=0.2), (bar, text)  # the bar is the download
    shots(page, "page-downloading.png", full_page=True)
    page.wait_for_function(READY, timeout=WAIT_MS)
    job = page.evaluate("window.audiosplit.state.job")
    assert job["status"] == "done" and job["model"] == "htdemucs", job
    assert "downloaded on first use" in job["model_reason"], job
    expect(page.locator(".lane")).to_have_count(4)
    assert hub.downloads(f"/demucs/t/{hub.names[HTDEMUCS]}") == 1, hub.requests
    assert page.errors == []


def test_the_first_job_from_the_cli_prints_the_download(base_url, song, hub, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "separate", str(song), "--url", base_url]
        + ["--model", "htdemucs_6s", "--format", "flac", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_MS / 1000 * 2,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    downloading = [line for line in lines if "downloading model (" in line]
    assert len(downloading) >= 2, lines  # it moved on while the file arrived
    assert not [line for line in downloading if line.endswith("%")], downloading
    assert lines.index(downloading[-1]) < next(i for i, x in enumerate(lines) if "separating" in x)
    stems = sorted(p.stem for p in (tmp_path / song.stem).glob("*.flac"))
    assert stems == sorted(SIX), (stems, lines)
    assert hub.downloads(f"/demucs/t/{hub.names[HTDEMUCS_6S]}") == 1, hub.requests
    print("\n" + "\n".join(lines))
