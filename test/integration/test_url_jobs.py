"""`url=` and `callback_url=` on the shared stack, which keeps the default: private addresses
refused. Every refusal is a 422 at submission naming the field and the rule, and nothing is
fetched (the loopback server below counts its requests)."""

from __future__ import annotations

import http.server
import threading

import pytest

from common.ports import free_port
from test.songgen import make_song, mixture
from test.stackutil import wav_bytes


@pytest.fixture(scope="module")
def server():
    """A loopback server that would serve a song to anyone who asked."""
    hits = []
    body = wav_bytes(mixture(make_song(3.0, seed=5)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("content-type", "audio/wav")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield port, hits
    httpd.shutdown()


@pytest.mark.parametrize(
    "link,rule",
    [
        ("http://127.0.0.1:{port}/song.wav", "127.0.0.1, a loopback address"),
        ("http://localhost:{port}/song.wav", "a loopback address"),
        ("http://[::1]:{port}/song.wav", "::1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address"),
        ("http://10.1.2.3/song.wav", "10.1.2.3, a private address"),
        ("http://[::ffff:127.0.0.1]:{port}/song.wav", "a loopback address"),
        ("file:///etc/passwd", "only http and https"),
        ("ftp://127.0.0.1/song.wav", "only http and https"),
    ],
)
def test_a_link_to_a_private_address_is_refused_unfetched(client, server, link, rule):
    port, hits = server
    before = len(hits)
    r = client.post("/api/jobs", data={"url": link.format(port=port)})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("url: ") and rule in message, message
    assert len(hits) == before


def test_a_callback_to_a_private_address_is_refused(client, server):
    port, _ = server
    song = wav_bytes(mixture(make_song(3.0, seed=6)))
    r = client.post(
        "/api/jobs",
        files={"file": ("s.wav", song)},
        data={"callback_url": f"http://127.0.0.1:{port}/hook"},
    )
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert message.startswith("callback_url: ") and "loopback" in message


def test_a_file_and_a_link_together_or_neither_is_a_400(client, server):
    port, _ = server
    song = wav_bytes(mixture(make_song(3.0, seed=7)))
    both = client.post(
        "/api/jobs",
        files={"file": ("s.wav", song)},
        data={"url": f"http://127.0.0.1:{port}/song.wav"},
    )
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    neither = client.post("/api/jobs", files={"model": (None, "dsp")})
    assert neither.status_code == 400 and "`url`" in neither.json()["error"]["message"]
