"""The network guard: connections made on a client's behalf reach only public addresses.

A URL's text says little about where a fetch goes: a name can resolve to 127.0.0.1, resolve
differently on the next lookup (DNS rebinding), or redirect to 169.254.169.254. So the rule is
enforced where the connection is made: every outbound connection of yt-dlp and of the webhook
client goes through `EgressProxy`, a forward proxy inside the gateway that resolves the host,
checks every address and connects to the exact address it checked, for each connection and so
for each redirect and each fragment (gateway/egress_proxy.py). `check_url` runs the same check
early, only so that a submission gets a clear 422 before any job starts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
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
_LIFT = "set ALLOW_PRIVATE_URLS=true to lift this on a home server"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> IP addresses, blocking


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


def with_deadline(proxy_url: str, seconds: float) -> str:
    """The proxy URL whose connections the proxy cuts `seconds` from now: a download that a
    server drips out a byte a second ends then, though no read on it ever times out."""
    parts = urlsplit(proxy_url)
    until = time.monotonic() + seconds
    netloc = f"{PROXY_USER}-until-{until:.3f}:{parts.password}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, "", "", ""))


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
