"""Replica servers for the discovery tests and bench: test/integration/replica_app.py run by
uvicorn on loopback addresses 127.0.0.N (all loopback on Linux), one port for all, and a
resolver whose answer the caller changes, standing in for a headless Service's DNS."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from common.config import REPO_ROOT

NAME = "replica.test"  # never resolved by DNS: the pool asks a `Dns` instead


def shared_free_port(addresses: list[str]) -> int:
    """A port free on every one of the loopback addresses."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every loopback address")


class Replicas:
    """Replica processes on 127.0.0.N:port, started and killed by the tests."""

    def __init__(self, port: int, log_dir: Path):
        self.port = port
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, address: str) -> None:
        log = open(self.log_dir / f"{address}.log", "ab")  # noqa: SIM115 - the child owns it
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "test.integration.replica_app:create_app",
        ]
        self.procs[address] = subprocess.Popen(
            [*cmd, "--host", address, "--port", str(self.port)],
            cwd=REPO_ROOT,
            env={**os.environ, "REPLICA_NAME": address, "LOG_LEVEL": "WARNING"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url(address) + "/health", timeout=2).status_code == 200:
                    return
            if self.procs[address].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica {address} did not start; see {log.name}")
            time.sleep(0.1)

    def url(self, address: str) -> str:
        return f"http://{address}:{self.port}"

    def kill(self, address: str) -> None:
        proc = self.procs.pop(address)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for address in list(self.procs):
            self.kill(address)


class Dns:
    """What the name resolves to now; the pool calls it as it would `getaddrinfo`."""

    def __init__(self, *addresses: str):
        self.addresses = list(addresses)
        self.asked = 0

    def __call__(self, host: str, port: int | None) -> list[str]:
        assert host == NAME
        self.asked += 1
        if not self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.addresses)
