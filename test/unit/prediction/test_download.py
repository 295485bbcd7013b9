"""One shared download per model, when a download is tried at all, `fetch_url` against a
loopback server, and a download's progress read from its partial file."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from common.config import Settings
from common.errors import ModelUnavailable
from common.ports import free_port
from prediction.channel_predictor import prefetch_names
from prediction.download import Downloads, Expected, download_failed, fetch_refusal, fetch_url


def test_concurrent_fetches_share_one_download():
    downloads, calls, started = Downloads(), [], threading.Event()

    def slow() -> None:
        calls.append(1)
        started.set()
        time.sleep(0.3)

    threads = [threading.Thread(target=downloads.fetch, args=("m", slow)) for _ in range(4)]
    threads[0].start()
    started.wait(5)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(5)
    assert calls == [1]
    assert downloads.running() == []


def test_a_failure_reaches_every_waiter_and_the_next_call_tries_again():
    downloads, calls = Downloads(), []

    def broken() -> None:
        calls.append(1)
        time.sleep(0.2)
        raise ModelUnavailable("m: broken")

    errors: list[str] = []

    def ask() -> None:
        try:
            downloads.fetch("m", broken)
        except ModelUnavailable as e:
            errors.append(e.message)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == ["m: broken"] * 3 and len(calls) == 1
    with pytest.raises(ModelUnavailable):
        downloads.fetch("m", broken)
    assert len(calls) == 2


def test_no_fetch_when_switched_off_or_offline():
    assert "AUTO_FETCH=false" in fetch_refusal(Settings(_env_file=None, auto_fetch=False), [])
    offline = Settings(_env_file=None, auto_fetch=True, hf_hub_offline=True)
    assert "HF_HUB_OFFLINE" in fetch_refusal(offline, ["http://127.0.0.1:1"])
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused at once
    start = time.perf_counter()
    why = fetch_refusal(Settings(_env_file=None, auto_fetch=True), [closed])
    assert why is not None and why.startswith("no network"), why
    assert time.perf_counter() - start < 3


def test_a_timeout_says_which_setting():
    error = download_failed("htdemucs", TimeoutError("timed out"), 3)
    assert "no data for 3 s (FETCH_TIMEOUT_S)" in error.message
    assert "./run.sh fetch-models htdemucs" in error.message


class Files:
    """A loopback HTTP server of `files` (path -> bytes); `short` paths announce more bytes than
    they send; `pieces` paths send in pieces with a pause between."""

    def __init__(self, files: dict[str, bytes], short=(), pieces=()):
        files_, short_, pieces_ = files, set(short), set(pieces)
        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send_head(self) -> bytes | None:
                body = files_.get(self.path)
                self.send_response(200 if body is not None else 404)
                extra = 10 if self.path in short_ else 0
                self.send_header("Content-Length", str(len(body or b"") + extra))
                self.end_headers()
                return body

            def do_HEAD(self) -> None:
                self.send_head()

            def do_GET(self) -> None:
                body = self.send_head()
                if body is None:
                    return
                if self.path in pieces_:
                    half = len(body) // 2
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    release.wait(10)
                    body = body[half:]
                self.wfile.write(body)
                if self.path in short_:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served():
    rng = np.random.default_rng(0)
    body = rng.bytes(300_000)
    files = Files(
        {"/good.bin": body, "/short.bin": body, "/slow.bin": body, "/tiny.bin": b"abc"},
        short={"/short.bin"},
        pieces={"/slow.bin"},
    )
    files.body = body
    yield files
    files.stop()


def test_fetch_url_keeps_a_whole_file_of_the_pinned_hash(served, tmp_path):
    dst = tmp_path / "m" / "good.bin"
    fetch_url(f"{served.url}/good.bin", dst, 5, sha256=hashlib.sha256(served.body).hexdigest())
    assert dst.read_bytes() == served.body
    assert sorted(p.name for p in dst.parent.iterdir()) == ["good.bin"]


@pytest.mark.parametrize(
    "path, sha256, check, words",
    [
        ("/good.bin", "0" * 64, None, "SHA-256 hash mismatch"),
        ("/short.bin", None, None, None),  # the connection ends early: httpx says so, or the count
        ("/good.bin", None, "refuse", "not a checkpoint"),
        ("/missing.bin", None, None, "404"),
    ],
)
def test_fetch_url_leaves_nothing_of_a_bad_download(served, tmp_path, path, sha256, check, words):
    def refuse(partial: Path) -> None:
        assert partial.name.endswith(".partial") and partial.stat().st_size == 300_000
        raise ValueError("not a checkpoint")

    with pytest.raises((ValueError, httpx.HTTPError), match=words):
        fetch_url(
            f"{served.url}{path}",
            tmp_path / "out.bin",
            5,
            sha256=sha256,
            check=refuse if check else None,
        )
    assert list(tmp_path.iterdir()) == []


def test_progress_counts_the_partial_file_against_the_announced_size(served, tmp_path):
    (tmp_path / "old.bin").write_bytes(b"x" * 1000)  # there before: not this download's
    plan = [
        [Expected(tmp_path, "slow.bin", f"{served.url}/slow.bin")],
        [Expected(tmp_path, "tiny.bin", f"{served.url}/tiny.bin")],
    ]
    downloads, seen = Downloads(), []
    url = f"{served.url}/slow.bin"
    worker = threading.Thread(
        target=downloads.fetch,
        args=("m", lambda: fetch_url(url, tmp_path / "slow.bin", 5), lambda: plan),
    )
    worker.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        progress = downloads.progress("m")
        if progress is not None and progress.bytes and progress.total:
            seen.append(progress)
            break
        time.sleep(0.02)
    served.release.set()
    worker.join(5)
    assert seen and seen[0].total == 300_000, seen  # the first alternative whose HEADs answer
    assert 0 < seen[0].bytes < 300_000, seen  # half of it, in a .partial file
    assert downloads.progress("m") is None  # over
    assert (tmp_path / "slow.bin").stat().st_size == 300_000


@pytest.mark.parametrize(
    ("prefetch", "default_model", "expected"),
    [
        ("auto", "auto", ["htdemucs"]),  # what model=auto picks first
        ("auto", "umxhq", ["umxhq"]),
        ("auto", "htdemucs,umxhq", ["htdemucs", "umxhq"]),  # an ensemble's members
        ("none", "auto", []),
        ("", "auto", []),
        ("bs_roformer_viperx, htdemucs_ft", "auto", ["bs_roformer_viperx", "htdemucs_ft"]),
        ("htdemucs,nosuchmodel", "auto", ["htdemucs"]),
    ],
)
def test_prefetch_names(prefetch, default_model, expected):
    settings = Settings(_env_file=None, prefetch_models=prefetch, default_model=default_model)
    assert prefetch_names(settings) == expected
