"""The egress proxy: the one place where the gateway's connections made for a client (yt-dlp
downloading a song, a webhook attempt) are opened, each to an address `resolve_checked` has
just approved (gateway/egress.py holds the rules).

An HTTP forward proxy on 127.0.0.1: `CONNECT host:port` for https tunnels, absolute-form
requests for plain http. Each connection is resolved and checked anew and made to the exact
address checked, so a second DNS answer cannot slip in between check and connect.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from gateway.egress import (
    CONNECT_TIMEOUT_S,
    FAILED_HEADER,
    PROXY_USER,
    REFUSED_HEADER,
    EgressRefused,
    Resolver,
    resolve_checked,
    split_url,
)

log = logging.getLogger("audiosplit.egress")

MAX_HEAD_BYTES = 64 * 1024  # a request or response head longer than this is refused
HEAD_TIMEOUT_S = 30.0  # for the client's request head; the client is our own code
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[str, int], Awaitable[Streams]]  # (checked IP, port) -> open connection


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
