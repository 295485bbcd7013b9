"""`run.sh up`'s launcher: all six services healthy, then all gone on Ctrl-C or SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from common.ports import free_port
from gateway.stack import SERVICES, Instance, Stack
from test.stackutil import REPO, stack_settings


def children_alive(ports: list[int]) -> list[int]:
    alive = []
    for port in ports:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            alive.append(port)
        except httpx.HTTPError:
            pass
    return alive


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_reports_ready_and_stops_every_service(tmp_path, sig):
    settings, env = stack_settings(tmp_path / "data", tmp_path / "models")
    ports = [getattr(settings, s.port_field) for s in SERVICES]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.stack", "up"],
        cwd=REPO,
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if "ready: http://" in line or proc.poll() is not None:
                break
        assert any("ready" in line for line in lines), "".join(lines)
        assert sorted(children_alive(ports)) == sorted(ports)
        assert all((tmp_path / "data" / "logs" / f"{s.name}.log").exists() for s in SERVICES)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stderr.read()
        assert children_alive(ports) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_taken_port_stops_up_at_once_naming_it(tmp_path):
    import socket

    settings, env = stack_settings(tmp_path / "data", tmp_path / "models")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", settings.fuser_port))
        holder.listen()
        result = subprocess.run(
            [sys.executable, "-m", "gateway.stack", "up"],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {settings.fuser_port} for the fuser is taken" in result.stderr
    assert "FUSER_PORT=" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "logs" / "gateway.log").exists()  # nothing was started


def test_a_port_answered_by_another_process_is_not_healthy(tmp_path):
    """A foreign /health that even names the right service does not make the stack ready: the
    answer must come from the process the stack started (the race where the service failed
    to bind and something else answers meanwhile)."""

    class Impostor(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "service": "fft", "pid": 1}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = free_port()
    impostor = ThreadingHTTPServer(("127.0.0.1", port), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    settings, _ = stack_settings(tmp_path / "data", tmp_path / "models")
    fft = next(s for s in SERVICES if s.name == "fft")
    stack = Stack(settings, instances=[Instance("fft", fft, port)])
    stack.procs["fft"] = subprocess.Popen(["sleep", "30"])  # alive, never answers
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        with pytest.raises(TimeoutError, match="fft"):
            stack.wait_healthy(timeout=2)
    finally:
        stack.procs["fft"].kill()
        stack.procs["fft"].wait()
        impostor.shutdown()
        impostor.server_close()
