"""The network guard: connections made on a client's behalf reach only public addresses.

A URL's text says little about where a fetch goes: a name can resolve to 127.0.0.1, resolve
differently on the next lookup (DNS rebinding), or redirect to 169.254.169.254. So the rule is
enforced where the connection is made: every outbound connection of yt-dlp and of the webhook
client goes through `EgressProxy`, a forward proxy inside the gateway that resolves the host,
checks every address and connects to the exact address it checked, for each connection and so
for each redirect and each fragment. `check_url` runs the same check early, only so that a
submission gets a clear 422 before any job starts.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from common.errors import AudiosplitError

log = logging.getLogger("audiosplit.egress")

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
CONNECT_TIMEOUT_S = 10.0
REFUSED_HEADER = "X-Egress-Refused"  # on a 403: the rule that refused the address
FAILED_HEADER = "X-Egress-Failed"  # on a 400/502/504 of the proxy's own: what went wrong
PROXY_USER = "audiosplit"
MAX_HEAD_BYTES = 64 * 1024  # a request or response head longer than this is refused
HEAD_TIMEOUT_S = 30.0  # for the client's request head; the client is our own code
_LIFT = "set ALLOW_PRIVATE_URLS=true to lift this on a home server"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP addresses, blocking
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[str, int], Awaitable[Streams]]  # (checked IP, port) -> open connection


class EgressRefused(AudiosplitError):
    """A URL the gateway will not fetch: not http(s), no host, unresolvable, or not public."""

    code = "url_refused"
    status = 422


_LINK_LOCAL = "a link-local address (cloud metadata lives at 169.254.169.254)"
_V4_RULES = [  # first match wins: the broadcast address before the reserved 240/4 around it
    ("0.0.0.0/8", "an unspecified address (0.0.0.0/8, 'this network')"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a private address (carrier-grade NAT, 100.64.0.0/10)"),
    ("169.254.0.0/16", _LINK_LOCAL),
    ("192.0.0.0/24", "a reserved address (IETF protocol assignments)"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.88.99.0/24", "a reserved address (the retired 6to4 relay)"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
]
_V6_RULES = [
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a private address (local-use NAT64)"),
    ("100::/64", "a reserved address (discard-only)"),
    ("2001::/23", "a reserved address (IETF protocol assignments)"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("fc00::/7", "a private address (IPv6 unique local)"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a private address (IPv6 site-local)"),
    ("ff00::/8", "a multicast address"),
]
_RULES = [(ipaddress.ip_network(net), words) for net, words in _V4_RULES + _V6_RULES]
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")  # ::a.b.c.d, deprecated but still routed by some


def classify(ip: str | IPAddress) -> str | None:
    """None for a public address, else the rule's words ("a loopback address", ...).

    An IPv6 address that carries an IPv4 one (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d,
    6to4 2002::/16, NAT64 64:ff9b::/96) is judged as the IPv4 address inside it. The ranges are
    listed here rather than taken from `is_global`, whose IPv6 answers vary between Python
    releases (3.11.7 calls ::127.0.0.1 and 2002:7f00:1:: global).
    """
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        addr = ipaddress.IPv6Address(addr.compressed.split("%")[0])  # drop a zone (%eth0)
        inner = _embedded_v4(addr)
        if inner is not None:
            return classify(inner)
    for net, words in _RULES:
        if addr.version == net.version and addr in net:
            return words
    if isinstance(addr, ipaddress.IPv6Address) and addr not in _GLOBAL_UNICAST:
        return "a reserved address"
    return None if addr.is_global else "a reserved address"


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64 or (addr in _V4_COMPATIBLE and int(addr) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from getaddrinfo, in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_checked(
    host: str, port: int, allow_private: bool, resolver: Resolver | None = None
) -> list[str]:
    """The addresses to connect to for `host`, every one checked; blocking (call it in a thread
    from async code). Refuses if ANY address is not public: a name that also resolves to a
    private address is a name an attacker may steer there on the next lookup."""
    host = host.strip("[]")
    ips, literal = _addresses(host, port, resolver or system_resolver)
    if allow_private:
        return ips
    for ip in ips:
        rule = classify(ip)
        if rule is not None:
            what = f"the URL points to {ip}" if literal else f"the host '{host}' resolves to {ip}"
            raise EgressRefused(
                f"{what}, {rule}; audiosplit fetches only public addresses ({_LIFT})"
            )
    return ips


def _addresses(host: str, port: int, resolver: Resolver) -> tuple[list[str], bool]:
    """(the host's addresses, whether the host is an address itself)."""
    try:
        return [str(ipaddress.ip_address(host))], True
    except ValueError:
        pass
    try:
        ips = list(resolver(host, port))
    except (OSError, UnicodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise EgressRefused(f"the host '{host}' does not resolve ({why})") from e
    if not ips:
        raise EgressRefused(f"the host '{host}' does not resolve")
    return ips, False


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or EgressRefused saying what is wrong with it."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        if not scheme:
            raise EgressRefused(f"'{url}' is not a full URL: give one like https://host/path")
        raise EgressRefused(f"only http and https URLs are fetched, not '{scheme}'")
    if not parts.hostname:
        raise EgressRefused(f"the URL '{url}' has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as e:
        raise EgressRefused(f"the URL '{url}' has an invalid port ({e})") from e
    return scheme, parts.hostname, port


async def check_url(url: str, allow_private: bool, resolver: Resolver | None = None) -> None:
    """The early check at submission, for a clear 422 (the proxy is what enforces the rule):
    http(s), a host, which resolves, to public addresses only."""
    _, host, port = split_url(url)
    await asyncio.to_thread(resolve_checked, host, port, allow_private, resolver)


async def open_tcp(ip: str, port: int) -> Streams:
    return await asyncio.open_connection(ip, port, limit=MAX_HEAD_BYTES)


class _ProxyFailure(Exception):
    """An answer other than a refusal: a malformed request (400), no upstream (502/504)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class EgressProxy:
    """An HTTP forward proxy on 127.0.0.1 for the gateway's own outbound connections.

    Handles `CONNECT host:port` (https tunnels) and absolute-form plain HTTP requests. Each
    connection is resolved and checked anew (`resolve_checked`) and made to the checked address,
    so a second DNS answer cannot slip in between check and connect. A refusal is a 403 whose
    reason phrase, `X-Egress-Refused` header and body carry the rule. Only holders of `url`
    (which embeds a random per-process password) may use it: it is no open proxy for others on
    the machine.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver | None = None,
        connect: Connector = open_tcp,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.allow_private = allow_private
        self._resolver = resolver
        self._connect = connect
        self.connect_timeout_s = connect_timeout_s
        self._token = secrets.token_urlsafe(24)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """http://audiosplit:TOKEN@127.0.0.1:PORT, for httpx's `proxy=` and yt-dlp's `proxy`."""
        if self._server is None:
            raise RuntimeError("the egress proxy is not started")
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{PROXY_USER}:{self._token}@127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._tasks):  # tunnels still open (Server.close leaves them in 3.11)
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the closed transports let go of their sockets on the next turn
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            method, target, headers = await _read_request(reader)
            user, password = _credentials(_header(headers, "proxy-authorization"))
            try:
                until = _until(user)
            except ValueError:
                until, password = None, ""  # a user name we never hand out
            if not hmac.compare_digest(password, self._token):
                await _answer(writer, 407, "proxy authentication required", auth=True)
                return
            loop = asyncio.get_running_loop()  # its clock need not be time.monotonic (uvloop)
            deadline = None if until is None else loop.time() + until - time.monotonic()
            await self._forward(
                reader, writer, _upstream_request(method, target, headers), deadline
            )
        except EgressRefused as e:
            log.info("egress refused: %s", e.message)
            await _answer(writer, 403, e.message, refused=True)
        except _ProxyFailure as e:
            await _answer(writer, e.status, e.message, failed=True)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, was too slow, or sent a head we will not read
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: tuple[str, int, bytes | None],
        deadline: float | None,
    ) -> None:
        """Checks, connects and relays; `request` is (host, port, head or None for CONNECT)."""
        host, port, head = request
        upstream = None
        try:
            async with asyncio.timeout_at(deadline):
                ips = await asyncio.to_thread(
                    resolve_checked, host, port, self.allow_private, self._resolver
                )
                up_reader, upstream = await self._connect_checked(host, port, ips)
                if head is None:  # CONNECT: a tunnel, the bytes are TLS from here on
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await _relay(_pipe(reader, upstream), _pipe(up_reader, writer))
                else:
                    upstream.write(head)
                    await _relay(_pipe(reader, upstream), _forward_response(up_reader, writer))
        except TimeoutError:
            if upstream is None:
                raise _ProxyFailure(504, "the time allowed for this fetch is over") from None
            log.info("egress: cut %s:%d at the fetch's deadline", host, port)
        finally:
            if upstream is not None:
                upstream.close()

    async def _connect_checked(self, host: str, port: int, ips: list[str]) -> Streams:
        """A connection to the first of `ips` that answers: only addresses that were checked."""
        errors = []
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                for ip in ips:
                    try:
                        return await self._connect(ip, port)
                    except OSError as e:
                        errors.append(f"{ip}: {e.strerror or e}")
        except TimeoutError:
            raise _ProxyFailure(
                504,
                f"the server at {host}:{port} did not answer within {self.connect_timeout_s:g} s",
            ) from None
        raise _ProxyFailure(502, f"could not connect to {host}:{port} ({'; '.join(errors)})")


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, list[tuple[str, str]]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _ProxyFailure(400, "malformed request line")
    headers = [_split_header(line) for line in lines[1:] if line]
    return parts[0].upper(), parts[1], headers


def _split_header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for n, v in headers if n.lower() == name), "")


def _credentials(value: str) -> tuple[str, str]:
    """(user, password) of a Proxy-Authorization: Basic header; empty strings if absent."""
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return user, password


def _until(user: str) -> float | None:
    """The time.monotonic() deadline a `with_deadline` user name carries (None for the plain
    name); ValueError for a name that is neither."""
    if user == PROXY_USER:
        return None
    prefix = f"{PROXY_USER}-until-"
    if not user.startswith(prefix):
        raise ValueError(user)
    return float(user.removeprefix(prefix))


def with_deadline(proxy_url: str, seconds: float) -> str:
    """The proxy URL whose connections the proxy cuts `seconds` from now: a download that a
    server drips out a byte a second ends then, though no read on it ever times out."""
    parts = urlsplit(proxy_url)
    until = time.monotonic() + seconds
    netloc = f"{PROXY_USER}-until-{until:.3f}:{parts.password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, "", "", ""))


_HOP_BY_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive"}


def _upstream_request(
    method: str, target: str, headers: list[tuple[str, str]]
) -> tuple[str, int, bytes | None]:
    """(host, port, the head to send upstream); the head is None for a CONNECT tunnel."""
    if method == "CONNECT":
        parts = urlsplit(f"//{target}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise _ProxyFailure(400, f"CONNECT needs host:port, not '{target}'")
        return parts.hostname, port, None
    scheme, host, port = split_url(target)  # a refusal for 'ftp://...' and the like
    if scheme != "http":
        raise _ProxyFailure(400, "an https URL is fetched through CONNECT, not as a request")
    parts = urlsplit(target)
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    # One request per connection: each request is checked on its own, and a client that
    # reuses the connection for another host cannot reach the first host's server with it.
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
    lines = [f"{method} {path} HTTP/1.1", *(f"{n}: {v}" for n, v in kept), "Connection: close"]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _forward_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The response, with `Connection: close` (see `_upstream_request`) and without any
    X-Egress-Refused or X-Egress-Failed a server sent to pass for an answer of ours."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    drop = {"connection", "keep-alive", REFUSED_HEADER.lower(), FAILED_HEADER.lower()}
    kept = [line for line in head[1:] if line and _split_header(line)[0].lower() not in drop]
    lines = [head[0], *kept, "Connection: close"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await _pipe(reader, writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass


async def _relay(*directions: Awaitable[None]) -> None:
    """Runs both directions until either ends (the caller then closes both sockets)."""
    tasks = [asyncio.ensure_future(d) for d in directions]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(
    writer: asyncio.StreamWriter,
    status: int,
    message: str,
    *,
    refused: bool = False,
    failed: bool = False,
    auth: bool = False,
) -> None:
    # The reason phrase carries the message too: it is all that clients show of a refused
    # CONNECT (http.client: 'Tunnel connection failed: 403 <reason>'; httpcore: '403 <reason>').
    reason = message.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")
    body = message.encode() + b"\n"
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8"]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    if refused:
        lines.append(f"{REFUSED_HEADER}: {reason}")
    if failed:
        lines.append(f"{FAILED_HEADER}: {reason}")
    if auth:
        lines.append('Proxy-Authenticate: Basic realm="audiosplit egress"')
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
    except ConnectionError:
        pass


def client_options(proxy_url: str) -> dict[str, Any]:
    """Keyword arguments for `httpx.AsyncClient` that send every request through the proxy and
    follow no redirect on their own (a caller that wants one sees the 3xx and decides)."""
    return {"proxy": proxy_url, "follow_redirects": False, "trust_env": False}


async def guarded_request(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """`client.request` for a client made with `client_options`, with the proxy's answers the
    same for http and https: a refusal is EgressRefused (httpx gives a refused CONNECT as a
    ProxyError '403 <rule>', a refused plain-http request as a 403 response with the rule in
    X-Egress-Refused); a failure of the proxy's own (no answer, could not connect) is an
    httpx.ProxyError '<status> <what went wrong>'."""
    split_url(url)  # the scheme refusal in our words, before httpx's UnsupportedProtocol
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.ProxyError as e:
        status, _, reason = str(e).partition(" ")
        if status == "403":
            raise EgressRefused(reason) from e
        raise
    if REFUSED_HEADER in response.headers:
        raise EgressRefused(response.headers[REFUSED_HEADER])
    if FAILED_HEADER in response.headers:
        message = f"{response.status_code} {response.headers[FAILED_HEADER]}"
        raise httpx.ProxyError(message, request=response.request)
    return response
