"""`./run.sh up --scaled`: the topology of a deployment past one machine, on this one.

A real PostgreSQL (`common.pglocal`, its cluster in `<data dir>/postgres`) holds the jobs, their
leases and the rate limit; a real S3 server (SeaweedFS, `common.s3local`, its objects in
`<data dir>/s3`) holds the job files (SCALED_STORAGE=local: the data dir does instead); two
gateways (GATEWAY_PORT, 8000, and 8010) share both, as gateways on two machines would, each with
its own GATEWAY_ID; two predictors (PREDICTOR_PORT, 8005, and 8015) are both in every caller's
PREDICTOR_URLS; one of each other service. Everything is configured through the settings a
cluster uses (DATABASE_URL, STORAGE_URL, S3_ENDPOINT_URL, AWS_*). A DATABASE_URL or STORAGE_URL
already set is used as it is, and that server is not started here.

The ports of the second gateway and predictor and of the two servers are read from
SCALED_GATEWAY_B_PORT, SCALED_PREDICTOR_B_PORT, SCALED_POSTGRES_PORT and SCALED_S3_PORT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.config import Settings
from common.pglocal import PostgresServer, require_bindir, server_user, wait_accepting
from common.s3local import LocalS3
from gateway.stack import SERVICES, Instance, Stack

DATABASE = "audiosplit"
PG_STOP_S = 30.0
# where job files live: "s3" (the local S3 server) or "local" (the data dir, shared by the
# processes of this one machine)
DEFAULT_STORAGE = "s3"


@dataclass(frozen=True)
class ScaledPorts:
    gateway_b: int = 8010
    predictor_b: int = 8015
    postgres: int = 8020
    s3: int = 8333

    @classmethod
    def from_env(cls, env: dict[str, str]) -> ScaledPorts:
        defaults = cls()
        return cls(
            **{
                name: int(env.get(f"SCALED_{name.upper()}_PORT", getattr(defaults, name)))
                for name in cls.__dataclass_fields__
            }
        )


class LocalInfra:
    """PostgreSQL and the S3 server: started before the services, stopped after them."""

    def __init__(
        self,
        settings: Settings,
        ports: ScaledPorts,
        log: Callable[[str], None],
        storage: str = "s3",
    ):
        data_dir, self.say = Path(settings.data_dir), log
        log_dir = data_dir / "logs"
        self.pg: PostgresServer | None = None
        self.pg_proc: subprocess.Popen | None = None
        self.s3: LocalS3 | None = None
        self.env: dict[str, str] = {}
        self.ports = {}
        if not settings.database_url:
            self.pg = PostgresServer(
                require_bindir(), data_dir / "postgres", ports.postgres, server_user(), durable=True
            )
            self.pg.log = log_dir / "postgres.log"
            self.env["DATABASE_URL"] = self.pg.url(DATABASE)
            self.ports["PostgreSQL"] = (ports.postgres, "SCALED_POSTGRES_PORT")
        if not settings.storage_url and storage == "s3":
            self.s3 = LocalS3(data_dir / "s3", s3_port=ports.s3)
            self.s3.log_path = log_dir / "s3.log"
            self.env.update(self.s3.env())
            self.ports["S3 server"] = (ports.s3, "SCALED_S3_PORT")

    def check_ports(self) -> None:
        for what, (port, setting) in self.ports.items():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as e:
                    raise RuntimeError(
                        f"port {port} for the {what} is taken ({e.strerror}): stop what holds "
                        f"it or choose another with {setting}=…"
                    ) from None

    def start(self) -> None:
        self.check_ports()
        if self.pg is not None:
            fresh = not self.pg.initialized
            if fresh:
                self.say(f"PostgreSQL: a new cluster in {self.pg.data}")
                self.pg.init()
            self._start_pg()
            self.pg.create_database(DATABASE)
            self.say(f"PostgreSQL on 127.0.0.1:{self.pg.port}, data in {self.pg.data}")
        if self.s3 is not None:
            self.s3.start()
            self.say(f"S3 server on {self.s3.endpoint_url}, objects in {self.s3.root}")

    def _start_pg(self) -> None:
        self.pg.log.parent.mkdir(parents=True, exist_ok=True)
        self.pg_proc = self.pg.spawn()
        try:
            wait_accepting(self.pg.url(), timeout=120, proc=self.pg_proc)
        except Exception as e:
            raise RuntimeError(f"PostgreSQL did not start ({e}); see {self.pg.log}") from e

    def restart_dead(self) -> list[str]:
        restarted = []
        if self.pg_proc is not None and self.pg_proc.poll() is not None:
            self._start_pg()
            restarted.append("postgres")
        if self.s3 is not None and not self.s3.running:
            self.s3.start()
            restarted.append("s3")
        return restarted

    def stop(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        proc, self.pg_proc = self.pg_proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)  # fast shutdown: clients cut, data kept
            try:
                proc.wait(timeout=PG_STOP_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def scaled_stack(settings: Settings, log: Callable[[str], None]) -> tuple[Stack, LocalInfra]:
    """The stack of `./run.sh up --scaled` and the servers under it (neither started)."""
    ports = ScaledPorts.from_env(dict(os.environ))
    storage = os.environ.get("SCALED_STORAGE", DEFAULT_STORAGE)
    if storage not in ("s3", "local"):
        raise RuntimeError(f"SCALED_STORAGE={storage!r}: choose s3 or local")
    infra = LocalInfra(settings, ports, log, storage)
    by_name = {s.name: s for s in SERVICES}
    predictor_ports = (settings.predictor_port, ports.predictor_b)
    env = {
        **infra.env,
        "PREDICTOR_URLS": ",".join(f"http://127.0.0.1:{p}" for p in predictor_ports),
    }
    instances = [Instance(s.name, s, getattr(settings, s.port_field)) for s in SERVICES]
    instances = [i for i in instances if i.name not in ("gateway", "predictor")]
    instances += [
        Instance("predictor", by_name["predictor"], predictor_ports[0]),
        Instance("predictor_b", by_name["predictor"], predictor_ports[1]),
    ]
    for name, port in (("gateway", settings.gateway_port), ("gateway_b", ports.gateway_b)):
        # each gateway its own id (a GATEWAY_ID given for the stack becomes a prefix)
        gateway_id = f"{settings.gateway_id}-{name}" if settings.gateway_id else name
        gateway_env = {"GATEWAY_PORT": str(port), "GATEWAY_ID": gateway_id}
        instances.append(Instance(name, by_name["gateway"], port, gateway_env))
    port_settings = {"gateway_b": "SCALED_GATEWAY_B_PORT", "predictor_b": "SCALED_PREDICTOR_B_PORT"}
    return Stack(settings, env, instances, port_settings), infra
