"""Free loopback ports for the processes a launcher or a test starts.

A port is picked below the kernel's ephemeral range: the source ports of outgoing connections
come from that range, so a port picked there (as `bind(0)` does) can be taken by some
connection between the pick and the server's own bind. Seen in CI: the S3 server's port,
picked by `bind(0)`, was taken by the time `weed` bound it, as weed's own components connected
to each other.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default
LOWEST = 20000  # below: the well-known services' and this project's fixed ports (8000-8020 …)


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def pick_from() -> range:
    """Ports to pick from: below the ephemeral range, else above it."""
    low, high = ephemeral_range()
    if low - LOWEST >= 1000:
        return range(LOWEST, low)
    return range(high + 1, 65536) if high < 64535 else range(LOWEST, 65536)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports nothing listens on or is bound to at `host` now."""
    candidates = pick_from()
    picked: list[int] = []
    for port in random.sample(candidates, len(candidates)):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        picked.append(port)
        if len(picked) == n:
            return picked
    raise RuntimeError(f"no {n} free ports in {candidates.start}-{candidates.stop - 1}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
