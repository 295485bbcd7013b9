"""Free ports are picked outside the kernel's ephemeral range, distinct and bindable."""

import socket

from common import ports
from common.ports import ephemeral_range, free_port, free_ports, pick_from


def test_ports_are_picked_outside_the_ephemeral_range():
    low, high = ephemeral_range()
    picked = free_ports(20)
    assert len(set(picked)) == 20
    assert all(not low <= p <= high and p in pick_from() for p in picked)
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))  # free indeed


def test_a_bound_port_is_never_picked(monkeypatch):
    start = free_ports(1)[0] // 16 * 16
    monkeypatch.setattr(ports, "pick_from", lambda: range(start, start + 16))
    held = []
    try:
        for port in range(start, start + 16):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                held.append(s)
            except OSError:  # something else holds it: as good as held
                s.close()
        spare = []
        for s in held[:3]:
            spare.append(s.getsockname()[1])
            s.close()
        assert sorted(free_ports(len(spare))) == sorted(spare)
    finally:
        for s in held[3:]:
            s.close()
