"""Run the six services as separate processes: `python -m gateway.stack up` (what `./run.sh up`
calls). Each service runs in its own process group, logs to `<data dir>/logs/<name>.log`,
and is stopped with its group on Ctrl-C or SIGTERM; one that dies is started again.
The integration tests start the stack through this same class, on free loopback ports.

`python -m gateway.stack up --scaled` (`./run.sh up --scaled`) runs the several-machine
topology on this machine instead: PostgreSQL and an S3 server, two gateways, two predictors
(`gateway/scaled.py`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from common.children import die_with_parent
from common.config import REPO_ROOT, Settings


@dataclass(frozen=True)
class ServiceDef:
    name: str
    module: str  # "package.module" exposing create_app
    port_field: str  # Settings field holding its port
    urls_field: str | None  # Settings field other services use to reach it


SERVICES = (
    ServiceDef("tone", "prediction.tone_identifier", "tone_port", "tone_urls"),
    ServiceDef("fft", "transforms.fft", "fft_port", "fft_urls"),
    ServiceDef("cqt", "transforms.cqt", "cqt_port", "cqt_urls"),
    ServiceDef("predictor", "prediction.channel_predictor", "predictor_port", "predictor_urls"),
    ServiceDef("fuser", "prediction.channel_fuser", "fuser_port", "fuser_urls"),
    ServiceDef("gateway", "gateway.app", "gateway_port", None),
)
# glibc malloc for the services unless the environment says otherwise (run.sh and the image set
# the same): keep torch's large buffers instead of returning them to the OS after every segment
# (~0.9 s of page faults per htdemucs segment), in one arena, because models run in worker
# threads whose own arenas ignore those settings (eager htdemucs, 11 windows: 27.1 s with 8
# arenas, 24.2 s with one; bench_predictor).
MALLOC_DEFAULTS = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
}
STOP_GRACE_S = 10.0
SERVICE_NAMES = tuple(s.name for s in SERVICES)
RESTART_BACKOFF_S = 2.0


@dataclass(frozen=True)
class Instance:
    """One process of a service: `name` names its log file and is how the Stack's methods
    refer to it ("gateway", "gateway_b"); `env` is added to the stack's environment."""

    name: str
    service: ServiceDef
    port: int
    env: dict[str, str] = field(default_factory=dict, hash=False)


def one_of_each(settings: Settings) -> list[Instance]:
    """The six services once each, on the ports the settings name."""
    return [Instance(s.name, s, getattr(settings, s.port_field)) for s in SERVICES]


class Stack:
    def __init__(
        self,
        settings: Settings,
        env: dict[str, str] | None = None,
        instances: list[Instance] | None = None,
        port_settings: dict[str, str] | None = None,
    ):
        """`instances`: the processes to run (default: one of each service); `port_settings`:
        the setting that chooses each instance's port, for the message when it is taken."""
        self.settings = settings
        self.env = {**MALLOC_DEFAULTS, **os.environ, **(env or {})}
        self.log_dir = Path(settings.data_dir) / "logs"
        self.instances = {i.name: i for i in instances or one_of_each(settings)}
        self.port_settings = port_settings or {}
        self.procs: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.instances[name].port}"

    def check_ports(self, names: tuple[str, ...] | None = None) -> None:
        """RuntimeError naming the service, the port and the setting to change when something
        already listens there (else the service would die and restart in a loop)."""
        for instance in self.instances.values():
            if names is not None and instance.name not in names:
                continue
            setting = self.port_settings.get(instance.name, instance.service.port_field.upper())
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((self.settings.bind_host, instance.port))
                except OSError as e:
                    what = instance.name.replace("_", " ")
                    raise RuntimeError(
                        f"port {instance.port} for the {what} is taken ({e.strerror}): stop "
                        f"what holds it or choose another with {setting}=…"
                    ) from None

    def start(self, names: tuple[str, ...] | None = None) -> None:
        self.check_ports(names)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for instance in self.instances.values():
            if names is None or instance.name in names:
                self._spawn(instance)

    def _spawn(self, instance: Instance) -> None:
        service, port = instance.service, instance.port
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"{service.module}:create_app",
            "--host",
            self.settings.bind_host,
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            "5",
        ]
        log = open(self.log_dir / f"{instance.name}.log", "ab")  # noqa: SIM115 - child owns it
        self.procs[instance.name] = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**self.env, **instance.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        log.close()

    def wait_healthy(self, timeout: float = 300.0) -> None:
        """Block until every started service answers 200 on /health."""
        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending:
            for name in list(pending):
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} during start; "
                        f"see {self.log_dir / (name + '.log')}"
                    )
                if self._answers_as_itself(name):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"not healthy after {timeout:.0f}s: {', '.join(sorted(pending))}"
                )
            if pending:
                time.sleep(0.3)

    def _answers_as_itself(self, name: str) -> bool:
        """The instance's port answers /health 200 from the very process this stack started
        (its pid), not from another program that holds the port or took it meanwhile."""
        try:
            response = httpx.get(self.url(name) + "/health", timeout=2)
            body = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return False
        service = self.instances[name].service.name
        return body.get("service") == service and body.get("pid") == self.procs[name].pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to a service's whole process group (the fault tests use -9)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[name].pid, sig)
        self.procs[name].wait(timeout=30)

    def restart_dead(self) -> list[str]:
        restarted = []
        for instance in self.instances.values():
            proc = self.procs.get(instance.name)
            if proc is not None and proc.poll() is not None:
                self._spawn(instance)
                restarted.append(instance.name)
        return restarted

    def stop(self) -> None:
        # The gateways first, so they stop handing out work; then the others.
        order = sorted(self.procs, key=lambda n: self.instances[n].service.name != "gateway")
        for name in order:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[name].pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def up(scaled: bool = False) -> int:
    settings = Settings()
    infra = None
    if scaled:
        from gateway.scaled import scaled_stack

        try:
            stack, infra = scaled_stack(settings, say)
        except RuntimeError as e:  # no PostgreSQL binaries
            say(f"failed to start: {e}")
            return 1
    else:
        stack = Stack(settings)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # explicitly: a shell that starts us in the background leaves SIGINT ignored
    signal.signal(signal.SIGINT, on_term)
    say(f"starting {len(stack.instances)} services; logs in {stack.log_dir}")
    try:
        if infra is not None:
            stack.check_ports()  # before the servers start, not after
            infra.start()
        stack.start()
        stack.wait_healthy()
        gateways = [n for n, i in stack.instances.items() if i.service.name == "gateway"]
        urls = "  ".join(f"http://{settings.bind_host}:{stack.instances[n].port}" for n in gateways)
        say(f"ready: {urls}  (Ctrl-C stops)")
        while True:
            time.sleep(0.5)
            for name in [*(infra.restart_dead() if infra else []), *stack.restart_dead()]:
                say(f"{name} died; started it again (see {stack.log_dir / (name + '.log')})")
                time.sleep(RESTART_BACKOFF_S)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as e:
        say(f"failed to start: {e}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping services")
        stack.stop()
        if infra is not None:
            say("stopping the S3 server and PostgreSQL")
            infra.stop()
        say("stopped")


def say(message: str) -> None:
    sys.stderr.write(f"[audiosplit] {message}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    if sys.argv[1:] not in (["up"], ["up", "--scaled"]):
        sys.exit("usage: python -m gateway.stack up [--scaled]")
    sys.exit(up(scaled=sys.argv[2:] == ["--scaled"]))
