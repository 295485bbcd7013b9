"""gateway/urlimport.py with real parts: yt-dlp's generic extractor, the real EgressProxy, and a
real HTTP server on loopback serving a real WAV file, a page without audio, a feed (a playlist),
a slow drip and an endless stream. Nothing here connects to anything but 127.0.0.1 (and ::1)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.ports import free_port
from gateway import urlimport
from gateway.egress import EgressRefused
from gateway.egress_proxy import EgressProxy
from gateway.urlimport import UrlRejected, fetch, probe

MAX_BYTES = 5_000_000
LOOPBACK_RULE = "a loopback address; audiosplit fetches only public addresses"


def _wav_bytes(path: Path) -> bytes:
    t = np.arange(44_100 * 2) / 44_100
    tone = 0.2 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([tone, tone], axis=1).astype("float32"), 44_100, subtype="PCM_16")
    return path.read_bytes()


class _Songs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wav = b""
    stop = threading.Event()

    def do_GET(self) -> None:
        route = {
            "/a.wav": self._wav,
            "/page.html": self._page,
            "/feed.xml": self._feed,
            "/drip.wav": self._drip,
            "/endless.wav": self._endless,
            "/declared-huge.wav": self._declared_huge,
            "/silent.wav": lambda: self.stop.wait(30),  # takes the request, never answers
        }.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route()

    def _head(self, content_type: str, length: int | None = None, chunked: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if length is None and not chunked:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _wav(self) -> None:
        self._head("audio/x-wav", len(self.wav))
        self.wfile.write(self.wav)

    def _page(self) -> None:
        body = b"<html><head><title>Nothing</title></head><body><p>no song here</p></body></html>"
        self._head("text/html; charset=utf-8", len(body))
        self.wfile.write(body)

    def _feed(self) -> None:
        host = self.headers["Host"]
        items = "".join(
            f"<item><title>Song {i}</title><link>http://{host}/a.wav?{i}</link>"
            f'<enclosure url="http://{host}/a.wav?{i}" type="audio/x-wav" length="1"/></item>'
            for i in range(3)
        )
        body = (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>Album</title>'
            f"<link>http://{host}/</link>{items}</channel></rss>"
        ).encode()
        self._head("application/rss+xml", len(body))
        self.wfile.write(body)

    def _drip(self) -> None:  # a WAV header, then a byte a second, forever
        self._head("audio/x-wav")
        self.wfile.write(self.wav[:44])
        with contextlib.suppress(ConnectionError):
            while not self.stop.wait(1.0):
                self.wfile.write(b"\0")
                self.wfile.flush()

    def _endless(self) -> None:  # an unsized stream that never ends, as fast as it goes
        self._head("audio/x-wav", chunked=True)
        chunk = b"%x\r\n%b\r\n" % (64 * 1024, bytes(64 * 1024))
        with contextlib.suppress(ConnectionError):
            while not self.stop.is_set():
                self.wfile.write(chunk)

    def _declared_huge(self) -> None:  # a Content-Length over the cap
        self._head("audio/x-wav", 10 * MAX_BYTES)
        self.wfile.write(self.wav)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Iterator[int]:
    """The loopback server's port."""
    _Songs.wav = _wav_bytes(tmp_path_factory.mktemp("songs") / "a.wav")
    _Songs.stop.clear()
    server = _Server(("127.0.0.1", free_port()), _Songs)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_port
    _Songs.stop.set()
    server.shutdown()
    server.server_close()


def _proxy(allow_private: bool) -> Iterator[str]:
    """A real EgressProxy on its own event loop in a thread (as in the gateway, where yt-dlp's
    worker threads reach the proxy on the gateway's loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = EgressProxy(allow_private=allow_private)
    asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(5)
    yield proxy.url
    asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture(scope="module")
def open_proxy() -> Iterator[str]:
    yield from _proxy(allow_private=True)


@pytest.fixture(scope="module")
def guarded_proxy() -> Iterator[str]:
    yield from _proxy(allow_private=False)


def _probe(url: str, proxy_url: str, *, allow_private: bool = True, **limits: float):
    options = {"max_duration_s": 1800, "max_bytes": MAX_BYTES, "timeout_s": 5} | limits
    return asyncio.run(probe(url, proxy_url=proxy_url, allow_private=allow_private, **options))


def _fetch(url: str, dest: Path, proxy_url: str, progress: list | None = None, **limits):
    options = {"max_bytes": MAX_BYTES, "max_duration_s": 1800, "timeout_s": 5} | limits
    on_progress = (
        (lambda done, total: progress.append((done, total)))
        if progress is not None
        else (lambda d, t: None)
    )
    return fetch(url, dest, proxy_url=proxy_url, on_progress=on_progress, **options)


def test_a_direct_link_is_probed_and_fetched_intact(
    songs, open_proxy, tmp_path, monkeypatch, capfd
) -> None:
    def no_programs(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError(f"yt-dlp started a program: {args}")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_programs)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    url = f"http://127.0.0.1:{songs}/a.wav"

    found = _probe(url, open_proxy)
    dest = tmp_path / "job" / "source.audio"
    dest.parent.mkdir()
    progress: list[tuple[int, int | None]] = []
    got = _fetch(url, dest, open_proxy, progress)

    assert (found.title, found.extractor, found.url) == ("a", "generic", url)
    assert found.duration_s is None  # a direct link's length is the decoder's to find
    assert got.path == dest and got.bytes == len(_Songs.wav) and got.title == "a"
    assert dest.read_bytes() == _Songs.wav
    assert progress[-1] == (len(_Songs.wav), len(_Songs.wav))
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["source.audio"]
    assert list(elsewhere.iterdir()) == []  # no cache, no stray file
    assert capfd.readouterr().out == ""  # yt-dlp printed nothing


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_loopback_urls_are_refused(songs, guarded_proxy, host: str) -> None:
    if host == "[::1]" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    with pytest.raises(EgressRefused) as caught:
        _probe(f"http://{host}:{songs}/a.wav", guarded_proxy, allow_private=False)
    assert LOOPBACK_RULE in caught.value.message
    assert caught.value.status == 422


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_proxy_refusal_during_download_is_egress_refused(
    songs, guarded_proxy, tmp_path, scheme: str
) -> None:
    """fetch has no early check: the refusal comes from the proxy through yt-dlp's errors
    (a 403 response for http, a refused CONNECT tunnel for https)."""
    dest = tmp_path / "source.audio"
    with pytest.raises(EgressRefused) as caught:
        _fetch(f"{scheme}://127.0.0.1:{songs}/a.wav", dest, guarded_proxy)
    assert caught.value.message == (
        f"the URL points to 127.0.0.1, {LOOPBACK_RULE} "
        "(set ALLOW_PRIVATE_URLS=true to lift this on a home server)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_page_without_audio_is_rejected(songs, open_proxy) -> None:
    with pytest.raises(UrlRejected, match="no audio found at http://127.0.0.1:.*/page.html"):
        _probe(f"http://127.0.0.1:{songs}/page.html", open_proxy)


def test_a_feed_is_a_playlist(songs, open_proxy) -> None:
    with pytest.raises(UrlRejected, match="is a playlist: give one track's URL"):
        _probe(f"http://127.0.0.1:{songs}/feed.xml", open_proxy)


def test_a_missing_file_names_the_status(songs, open_proxy) -> None:
    with pytest.raises(UrlRejected, match="answered 404 Not Found"):
        _probe(f"http://127.0.0.1:{songs}/gone.wav", open_proxy)


def test_a_slow_drip_is_cut_at_the_deadline(songs, open_proxy, tmp_path) -> None:
    dest = tmp_path / "source.audio"
    start = time.monotonic()
    with pytest.raises(UrlRejected, match="took longer than the 3 s allowed"):
        _fetch(f"http://127.0.0.1:{songs}/drip.wav", dest, open_proxy, timeout_s=2, deadline_s=3)
    assert time.monotonic() - start < 8
    assert list(tmp_path.iterdir()) == []


def test_an_endless_stream_is_cut_at_the_size_cap(songs, open_proxy, tmp_path) -> None:
    dest = tmp_path / "source.audio"
    progress: list[tuple[int, int | None]] = []
    with pytest.raises(UrlRejected, match="larger than the limit of 0.3 MB"):
        _fetch(
            f"http://127.0.0.1:{songs}/endless.wav", dest, open_proxy, progress, max_bytes=300_000
        )
    assert progress and max(d for d, _ in progress) <= 300_000
    assert list(tmp_path.iterdir()) == []


def test_a_declared_size_over_the_cap_is_refused_before_download(
    songs, open_proxy, tmp_path
) -> None:
    dest = tmp_path / "source.audio"
    with pytest.raises(UrlRejected, match="larger than the limit of 5 MB"):
        _fetch(f"http://127.0.0.1:{songs}/declared-huge.wav", dest, open_proxy)
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_never_answers_is_given_up_on(songs, open_proxy) -> None:
    start = time.monotonic()
    with pytest.raises(
        UrlRejected, match=f"the server at 127.0.0.1:{songs} did not answer within 1 s"
    ):
        _probe(f"http://127.0.0.1:{songs}/silent.wav", open_proxy, timeout_s=1)
    assert time.monotonic() - start < 5


def test_unreachable_server(open_proxy) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(UrlRejected, match=f"could not connect to 127.0.0.1:{port}"):
        _probe(f"http://127.0.0.1:{port}/a.wav", open_proxy)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"duration": 4 * 3600}, "is 240 min long; the limit is 30 min"),
        ({"is_live": True, "live_status": "is_live"}, "is a live stream"),
        ({"filesize": 80_000_000}, "(80 MB) is larger than the limit of 5 MB"),
    ],
)
def test_what_a_site_declares_is_checked(songs, open_proxy, monkeypatch, extra, words) -> None:
    """A direct link declares no duration and is never live (the decoder applies the duration
    cap after download), so only here is yt-dlp's answer edited: the real result of the real
    extraction, with the fields a site such as YouTube would fill in."""
    real = urlimport.YoutubeDL.process_ie_result

    def declaring(self, info, download=True, extra_info=None):  # type: ignore[no-untyped-def]
        return real(self, info, download, extra_info) | extra

    monkeypatch.setattr(urlimport.YoutubeDL, "process_ie_result", declaring)
    with pytest.raises(UrlRejected) as caught:
        _probe(f"http://127.0.0.1:{songs}/a.wav", open_proxy)
    assert words in caught.value.message
