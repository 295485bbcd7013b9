"""gateway/egress.py: the address rules, the early URL check, and the proxy as a real asyncio
server in front of real loopback servers. Names that stand for public hosts resolve (through an
injected resolver) to FAKE_PUBLIC, which the injected connector sends to a loopback server: no
test opens a connection to anything but 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from common.ports import free_port
from gateway.egress import (
    FAILED_HEADER,
    REFUSED_HEADER,
    EgressRefused,
    check_url,
    classify,
    client_options,
    guarded_request,
    resolve_checked,
    with_deadline,
)
from gateway.egress_proxy import EgressProxy

FAKE_PUBLIC = "93.184.216.34"  # never connected to: the connector below maps it to loopback
PAYLOAD = os.urandom(300_000)


@pytest.mark.parametrize(
    ("ip", "rule"),
    [
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("2002:808:808::1", None),  # 6to4 around a public address
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("169.254.169.254", "cloud metadata lives at 169.254.169.254"),
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("fec0::1", "site-local"),
        ("192.0.2.7", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.7", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("192.0.0.8", "reserved"),
        ("100::1", "discard-only"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped: judged as the IPv4 inside
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (3.11.7's is_global says global)
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("2002:a9fe:a9fe::", "cloud metadata"),  # 6to4 around 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 around 127.0.0.1
        ("64:ff9b::808:808", None),  # NAT64 around 8.8.8.8
        ("64:ff9b:1::1", "local-use NAT64"),
        ("4000::1", "reserved"),  # outside global unicast 2000::/3
    ],
)
def test_classify(ip: str, rule: str | None) -> None:
    words = classify(ip)
    if rule is None:
        assert words is None
    else:
        assert words is not None and rule in words


def resolver_of(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host} is not in the test's table")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "only http and https URLs are fetched, not 'file'"),
        ("ftp://example.test/a.mp3", "not 'ftp'"),
        ("example.test/a.mp3", "is not a full URL"),
        ("http:///a.mp3", "has no host"),
        ("http://example.test:99999/a", "invalid port"),
        ("http://127.0.0.1/a.mp3", "the URL points to 127.0.0.1, a loopback address"),
        ("http://[::1]:8000/a", "the URL points to ::1, a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata lives at 169.254.169.254"),
        ("http://[::ffff:127.0.0.1]/a", "loopback"),
        ("http://localhost:8000/a", "the host 'localhost' resolves to 127.0.0.1"),
        ("https://song.test/a.mp3", "the host 'song.test' resolves to 10.0.0.5, a private"),
        ("https://mixed.test/a.mp3", "resolves to 127.0.0.1"),  # one bad answer of two
        ("https://nowhere.test/a", "the host 'nowhere.test' does not resolve"),
    ],
)
def test_check_url_refuses(url: str, words: str) -> None:
    table = {
        "localhost": ["127.0.0.1"],
        "song.test": ["10.0.0.5"],
        "mixed.test": [FAKE_PUBLIC, "127.0.0.1"],
    }
    with pytest.raises(EgressRefused) as caught:
        asyncio.run(check_url(url, allow_private=False, resolver=resolver_of(table)))
    assert words in caught.value.message
    assert (caught.value.code, caught.value.status) == ("url_refused", 422)
    if "address" in words:
        assert "ALLOW_PRIVATE_URLS=true" in caught.value.message


def test_check_url_passes_public_and_lifted_private() -> None:
    table = {"song.test": [FAKE_PUBLIC], "nas.local": ["192.168.1.20"]}
    resolve = resolver_of(table)
    asyncio.run(check_url("https://song.test/a.mp3", allow_private=False, resolver=resolve))
    asyncio.run(check_url("http://nas.local:8080/a", allow_private=True, resolver=resolve))
    asyncio.run(check_url("http://127.0.0.1/a", allow_private=True, resolver=resolve))
    with pytest.raises(EgressRefused, match="not 'file'"):  # the scheme rule holds regardless
        asyncio.run(check_url("file:///etc/passwd", allow_private=True))


def test_system_resolver_finds_localhost_loopback() -> None:
    with pytest.raises(EgressRefused, match="loopback"):
        resolve_checked("localhost", 80, allow_private=False)


# --- the proxy, in front of real loopback servers ------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.headers["X-Redirect-To"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD if self.path == "/data" else b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header(REFUSED_HEADER, "a server's try to pass for a refusal")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])

    def log_message(self, *args: object) -> None:
        pass


class _CountingServer(ThreadingHTTPServer):
    """Counts the connections it accepts: a private server's count must stay 0."""

    connections = 0

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        self.connections += 1
        super().process_request(request, client_address)


@pytest.fixture
def servers() -> Iterator[tuple[_CountingServer, _CountingServer]]:
    """(A, B): A stands for a public server (reached as FAKE_PUBLIC), B for a private one."""
    started = []
    for _ in range(2):
        server = _CountingServer(("127.0.0.1", free_port()), _Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        started.append(server)
    yield started[0], started[1]
    for server in started:
        server.shutdown()
        server.server_close()


class _Connector:
    """Records each address the proxy connects to; FAKE_PUBLIC goes to loopback server A."""

    def __init__(self, public_port: int) -> None:
        self.public_port = public_port
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, ip: str, port: int):  # type: ignore[no-untyped-def]
        self.seen.append((ip, port))
        if ip == FAKE_PUBLIC:
            return await asyncio.open_connection("127.0.0.1", self.public_port)
        assert ip in ("127.0.0.1", "::1"), f"the test would connect to {ip}"
        return await asyncio.open_connection(ip, port)


async def _with_proxy(test, *, allow_private: bool, resolver=None, connector=None, **kw):  # type: ignore[no-untyped-def]
    options = {"connect": connector} if connector is not None else {}
    proxy = EgressProxy(allow_private=allow_private, resolver=resolver, **options, **kw)
    await proxy.start()
    try:
        async with httpx.AsyncClient(**client_options(proxy.url), timeout=10) as client:
            return await test(proxy, client)
    finally:
        await proxy.stop()


def test_proxy_forwards_to_loopback_when_private_is_allowed(servers) -> None:
    a, _ = servers

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        got = await guarded_request(client, "GET", f"http://127.0.0.1:{a.server_port}/data")
        posted = await guarded_request(
            client, "POST", f"http://localhost:{a.server_port}/echo", content=b"webhook body"
        )
        return got, posted

    table = {"localhost": ["127.0.0.1"]}
    got, posted = asyncio.run(_with_proxy(test, allow_private=True, resolver=resolver_of(table)))
    assert got.status_code == 200 and got.content == PAYLOAD
    assert REFUSED_HEADER not in got.headers  # the server's own X-Egress-Refused is dropped
    assert posted.content == b"ydob koohbew"


def test_proxy_refuses_connect_to_loopback(servers) -> None:
    _, b = servers

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        head = await _raw(proxy, f"CONNECT 127.0.0.1:{b.server_port} HTTP/1.1", token=True)
        with pytest.raises(EgressRefused) as caught:  # https goes through CONNECT
            await guarded_request(client, "GET", f"https://127.0.0.1:{b.server_port}/")
        return head, caught.value

    head, refusal = asyncio.run(_with_proxy(test, allow_private=False))
    status_line, *headers = head.split("\r\n")
    assert status_line.startswith("HTTP/1.1 403 the URL points to 127.0.0.1, a loopback address")
    assert any(h.startswith(f"{REFUSED_HEADER}: the URL points to 127.0.0.1") for h in headers)
    assert refusal.message.startswith("the URL points to 127.0.0.1, a loopback address;")
    assert b.connections == 0


def test_proxy_refuses_a_name_that_resolves_to_loopback(servers) -> None:
    _, b = servers
    table = {"song.test": ["127.0.0.1"]}

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        with pytest.raises(EgressRefused) as caught:
            await guarded_request(client, "GET", f"http://song.test:{b.server_port}/a.mp3")
        return caught.value

    refusal = asyncio.run(_with_proxy(test, allow_private=False, resolver=resolver_of(table)))
    assert "the host 'song.test' resolves to 127.0.0.1, a loopback address" in refusal.message
    assert b.connections == 0


def test_proxy_connects_to_exactly_the_address_it_checked(servers) -> None:
    """DNS rebinding: the answers change between lookups; the proxy never looks up twice."""
    a, b = servers
    answers = {"rebind.test": [[FAKE_PUBLIC], ["127.0.0.1"], [FAKE_PUBLIC], ["127.0.0.1"]]}

    def rebinding(host: str, port: int) -> list[str]:
        return answers[host].pop(0)

    connector = _Connector(a.server_port)
    url = f"http://rebind.test:{b.server_port}/data"

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        await check_url(url, allow_private=False, resolver=rebinding)  # 1st answer: public
        with pytest.raises(EgressRefused, match="resolves to 127.0.0.1"):  # 2nd: loopback
            await guarded_request(client, "GET", url)
        return await guarded_request(client, "GET", url)  # 3rd: public, then 4th unused

    got = asyncio.run(
        _with_proxy(test, allow_private=False, resolver=rebinding, connector=connector)
    )
    assert got.content == PAYLOAD  # from A, reached as FAKE_PUBLIC
    assert connector.seen == [(FAKE_PUBLIC, b.server_port)]
    assert answers["rebind.test"] == [["127.0.0.1"]]  # the proxy looked up once per request
    assert b.connections == 0


def test_a_redirect_to_a_private_address_is_refused_at_the_second_hop(servers) -> None:
    a, b = servers
    connector = _Connector(a.server_port)
    table = {"public.test": [FAKE_PUBLIC]}
    secret = f"http://127.0.0.1:{b.server_port}/secret"

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        first = await guarded_request(
            client, "GET", "http://public.test/redirect", headers={"X-Redirect-To": secret}
        )
        with pytest.raises(EgressRefused) as caught:
            await guarded_request(
                client,
                "GET",
                "http://public.test/redirect",
                headers={"X-Redirect-To": secret},
                follow_redirects=True,
            )
        return first, caught.value

    first, refusal = asyncio.run(
        _with_proxy(test, allow_private=False, resolver=resolver_of(table), connector=connector)
    )
    assert first.status_code == 302  # the helper's client follows nothing on its own
    assert "the URL points to 127.0.0.1, a loopback address" in refusal.message
    assert connector.seen == [(FAKE_PUBLIC, 80), (FAKE_PUBLIC, 80)]
    assert b.connections == 0


def test_proxy_wants_its_token(servers) -> None:
    a, _ = servers

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        target = f"GET http://127.0.0.1:{a.server_port}/ HTTP/1.1"
        return (
            await _raw(proxy, target, token=False),
            await _raw(proxy, target, token=False, auth="audiosplit:guessed"),
            await _raw(proxy, f"CONNECT 127.0.0.1:{a.server_port} HTTP/1.1", token=False),
        )

    for head in asyncio.run(_with_proxy(test, allow_private=True)):
        assert head.startswith("HTTP/1.1 407 ")
        assert "Proxy-Authenticate: Basic" in head
    assert a.connections == 0


def test_proxy_tunnels_bytes_both_ways_when_allowed() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(len(PAYLOAD)))
        await writer.drain()
        writer.close()

    async def run() -> bytes:
        server = await asyncio.start_server(echo, "127.0.0.1", free_port())
        port = server.sockets[0].getsockname()[1]
        proxy = EgressProxy(allow_private=True)
        await proxy.start()
        try:
            reader, writer = await _open(proxy)
            writer.write(_request(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1", token=True))
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            writer.write(PAYLOAD)
            echoed = await reader.readexactly(len(PAYLOAD))
            writer.close()
            return echoed
        finally:
            await proxy.stop()
            server.close()

    assert asyncio.run(run()) == PAYLOAD


def test_a_deadline_url_has_its_connections_cut() -> None:
    """A server that drips a byte every 0.1 s forever: no read ever times out, the proxy cuts
    the connection at the deadline, and refuses new ones after it."""

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n\r\n")
        try:
            while True:
                writer.write(b"\0")
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def run():  # type: ignore[no-untyped-def]
        server = await asyncio.start_server(drip, "127.0.0.1", free_port())
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/drip.wav"
        proxy = EgressProxy(allow_private=True)
        await proxy.start()
        start = time.monotonic()
        options = client_options(with_deadline(proxy.url, 0.5))
        try:
            async with httpx.AsyncClient(**options, timeout=5) as client:
                cut = await guarded_request(client, "GET", url)
                elapsed = time.monotonic() - start
                with pytest.raises(httpx.ProxyError, match="504 the time allowed"):
                    await guarded_request(client, "GET", url)  # after the deadline
            heads = [
                await _raw(proxy, f"GET {url} HTTP/1.1", token=False, auth=auth)
                for auth in (f"intruder:{proxy._token}", f"audiosplit-until-x:{proxy._token}")
            ]
            return cut, elapsed, heads
        finally:
            await proxy.stop()
            server.close()

    cut, elapsed, heads = asyncio.run(run())
    assert 0.4 < elapsed < 5 and 0 < len(cut.content) < 20
    assert all(head.startswith("HTTP/1.1 407 ") for head in heads)


def test_proxy_refuses_other_schemes_and_reports_unreachable_hosts() -> None:
    async def never(ip: str, port: int):  # type: ignore[no-untyped-def]
        await asyncio.sleep(60)

    async def test(proxy, client):  # type: ignore[no-untyped-def]
        ftp = await _raw(proxy, "GET ftp://song.test/a.mp3 HTTP/1.1", token=True)
        slow = await _raw(proxy, "GET http://127.0.0.1:9/a.mp3 HTTP/1.1", token=True)
        for scheme in ("http", "https"):  # a 504 response, a 504 to CONNECT: one error
            with pytest.raises(httpx.ProxyError) as caught:
                await guarded_request(client, "GET", f"{scheme}://127.0.0.1:9/a.mp3")
            assert str(caught.value) == "504 " + words
        return ftp, slow

    words = "the server at 127.0.0.1:9 did not answer within 0.2 s"
    ftp, slow = asyncio.run(
        _with_proxy(test, allow_private=True, connector=never, connect_timeout_s=0.2)
    )
    assert ftp.startswith("HTTP/1.1 403 only http and https URLs are fetched, not 'ftp'")
    assert slow.startswith(f"HTTP/1.1 504 {words}\r\n")
    assert f"{FAILED_HEADER}: {words}\r\n" in slow


def test_guarded_request_refuses_other_schemes_before_sending() -> None:
    async def run() -> None:
        async with httpx.AsyncClient() as client:
            await guarded_request(client, "GET", "file:///etc/passwd")

    with pytest.raises(EgressRefused, match="not 'file'"):
        asyncio.run(run())


async def _open(proxy: EgressProxy):  # type: ignore[no-untyped-def]
    port = int(proxy.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


def _request(proxy: EgressProxy, line: str, *, token: bool, auth: str | None = None) -> bytes:
    headers = [line, "Host: ignored"]
    if token or auth:
        credentials = auth or proxy.url.split("//", 1)[1].rsplit("@", 1)[0]
        headers.append(
            "Proxy-Authorization: Basic " + base64.b64encode(credentials.encode()).decode()
        )
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


async def _raw(proxy: EgressProxy, line: str, *, token: bool, auth: str | None = None) -> str:
    """The head of the proxy's answer to one hand-written request."""
    reader, writer = await _open(proxy)
    writer.write(_request(proxy, line, token=token, auth=auth))
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head.decode("latin-1")
