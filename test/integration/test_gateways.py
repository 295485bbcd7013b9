"""Two gateways on one real PostgreSQL and one data dir, with the real services behind them.

Any gateway answers any job; each job is run by one gateway at a time under its lease (counted:
every chunk reaches the channel predictor once, through a counting proxy in front of it); a
gateway killed with -9 mid-job hands the job to the other, which finishes it with stems equal
to an undisturbed run's; PostgreSQL restarted mid-job costs no job. The same two gateways with
data dirs of their own and the job files in a real S3 server (`s3_gateways`): upload through
one, status and download through the other, and the takeover after a kill -9.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
import soundfile as sf
import standardwebhooks

from common.ports import free_port
from common.s3local import LocalS3
from gateway.stack import Stack
from gateway.store import JobStore
from test.postgres import PostgresServer, wait_accepting
from test.songgen import make_song, mixture
from test.stackutil import REPO, stack_settings, wait_process_healthy

LEASE_S = 6.0  # short, so a takeover costs the test seconds: bound LEASE_S + CLAIM_POLL_S
CLAIM_POLL_S = 0.5
CHUNK_CONCURRENCY = 2
SONG_S = 60.0  # 8 chunks of dsp: long enough to interrupt in the middle
JOB_TIMEOUT_S = 240.0
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"two gateways, one secret!").decode()
HOP_BY_HOP = {"host", "content-length", "connection", "transfer-encoding", "content-encoding"}


class CountingProxy:
    """An HTTP proxy in front of the channel predictor that counts, per (job, chunk index,
    bag member), how many times a chunk was sent to be separated."""

    def __init__(self, target: str):
        self.target = target
        self.calls: collections.Counter[tuple[str, int, int | None]] = collections.Counter()
        self.lock = threading.Lock()
        client = httpx.Client(timeout=600)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.startswith("/separate"):
                    meta = json.loads(self.headers["x-audiosplit-meta"])
                    with proxy.lock:
                        for chunk in meta["chunks"]:
                            proxy.calls[(meta["job_id"], chunk["index"], chunk.get("member"))] += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    r = client.request(
                        self.command, proxy.target + self.path, content=body, headers=headers
                    )
                except httpx.HTTPError:
                    self.send_error(502)
                    return
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(r.content)  # the gateway that asked was killed

            do_GET = do_POST = do_DELETE = forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def per_chunk(self, job_id: str) -> dict[tuple[int, int | None], int]:
        with self.lock:
            return {(i, m): n for (j, i, m), n in self.calls.items() if j == job_id}

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class TwoGateways:
    stack: Stack  # the six services; its gateway is A
    env: dict[str, str]
    port_b: int
    db_url: str
    proxy: CountingProxy
    env_b: dict[str, str] = field(default_factory=dict)  # B's own settings (its data dir)
    procs_b: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url_a(self) -> str:
        return self.stack.url("gateway")

    @property
    def url_b(self) -> str:
        return f"http://127.0.0.1:{self.port_b}"

    def start_b(self) -> None:
        with open(self.stack.log_dir / "gateway_b.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "gateway.app:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port_b),
                ],  # fmt: skip
                cwd=REPO,
                env={**self.stack.env, **self.env_b, "GATEWAY_PORT": str(self.port_b)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs_b.append(proc)
        wait_process_healthy(self.url_b, proc)

    def kill_b(self) -> None:
        proc = self.procs_b[-1]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def restart_a(self) -> None:
        self.stack.restart_dead()
        wait_process_healthy(self.url_a, self.stack.procs["gateway"])

    def url_of_port(self, port: int) -> str:
        return self.url_b if port == self.port_b else self.url_a


@contextlib.contextmanager
def two_gateways(
    tmp: Path, postgres: PostgresServer, s3: LocalS3 | None = None
) -> Iterator[TwoGateways]:
    """The stack (gateway A) and gateway B on one PostgreSQL database; with `s3`, the job
    files in its bucket and B on a data dir of its own (it shares nothing else with A)."""
    (tmp / "models").mkdir()  # empty: no weights, the dsp separator runs
    db_url = postgres.create_database()
    predictor_port = free_port()
    proxy = CountingProxy(f"http://127.0.0.1:{predictor_port}")
    settings, env = stack_settings(
        tmp / "data",
        tmp / "models",
        database_url=db_url,
        lease_s=LEASE_S,
        claim_poll_s=CLAIM_POLL_S,
        job_concurrency=1,  # so jobs queue and the gateways really share them
        chunk_concurrency=CHUNK_CONCURRENCY,
        predictor_port=predictor_port,
        predictor_urls=proxy.url,
        db_retry_s=30,
        allow_private_urls="true",  # webhooks to a loopback receiver
        webhook_secret=WEBHOOK_SECRET,  # both gateways sign with it
        webhook_backoff_s=1,
        webhook_timeout_s=2,
        **({k.lower(): v for k, v in s3.env("gateways").items()} if s3 else {}),
    )
    stack = Stack(settings, env)
    env_b = {"DATA_DIR": str(tmp / "data_b")} if s3 else {}
    both = TwoGateways(stack, env, free_port(), db_url, proxy, env_b)
    try:
        stack.start()
        stack.wait_healthy(timeout=240)
        both.start_b()
        yield both
    finally:
        for proc in both.procs_b:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        stack.stop()
        proxy.close()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, postgres: PostgresServer) -> Iterator[TwoGateways]:
    with two_gateways(tmp_path_factory.mktemp("gateways"), postgres) as both:
        yield both


@pytest.fixture(scope="module")
def s3_gateways(tmp_path_factory, postgres: PostgresServer, s3server) -> Iterator[TwoGateways]:
    with two_gateways(tmp_path_factory.mktemp("s3_gateways"), postgres, s3server) as both:
        yield both


def song_wav(seconds: float, seed: int) -> bytes:
    """A float WAV: the job's input is exactly the generated song."""
    buf = io.BytesIO()
    sf.write(buf, mixture(make_song(seconds=seconds, seed=seed)).T, 44100, "FLOAT", format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def upload() -> bytes:
    return song_wav(SONG_S, seed=11)


def submit(url: str, data: bytes, **fields) -> str:
    r = httpx.post(url + "/api/jobs", files={"file": ("song.wav", data)}, data=fields, timeout=120)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def job_status(url: str, job_id: str) -> dict | None:
    """The job JSON, or None while that gateway cannot answer (killed, database away)."""
    try:
        r = httpx.get(f"{url}/api/jobs/{job_id}", timeout=40)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def wait_until(url: str, job_id: str, done, timeout: float = JOB_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_status(url, job_id)
        if job is not None and (done(job) or job["status"] == "failed"):
            assert job["status"] != "failed", job
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not there after {timeout}s: {job_status(url, job_id)}")


def result(url: str, job_id: str) -> np.ndarray:
    r = httpx.get(f"{url}/api/jobs/{job_id}/result", timeout=120)
    assert r.status_code == 200, r.text
    return sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)[0]


def lease_port(db_url: str, job_id: str) -> int | None:
    """The port of the gateway holding the job's lease (owner = "host:port/life")."""
    store = JobStore(db_url)
    try:
        owner, _ = store.lease(job_id)
    finally:
        store.close()
    return None if owner is None else int(owner.split("/")[0].rsplit(":", 1)[1])


def delete(url: str, job_id: str) -> None:
    """So the next job of the same audio is computed again, not served from the cache."""
    assert httpx.delete(f"{url}/api/jobs/{job_id}", timeout=30).status_code == 204


@pytest.fixture(scope="module")
def undisturbed(gateways, upload) -> np.ndarray:
    """(frames, 8): the song's result from a run nothing interrupted."""
    job_id = submit(gateways.url_a, upload, analysis="false")
    wait_until(gateways.url_a, job_id, lambda j: j["status"] == "done")
    stems = result(gateways.url_a, job_id)
    delete(gateways.url_a, job_id)
    return stems


def assert_each_chunk_predicted_once(proxy: CountingProxy, job_id: str) -> None:
    calls = proxy.per_chunk(job_id)
    assert calls and set(calls.values()) == {1}, f"chunks sent more than once: {calls}"


def test_upload_through_a_status_and_download_through_b(gateways, upload, undisturbed):
    job_id = submit(gateways.url_a, upload, analysis="false")
    job = wait_until(gateways.url_b, job_id, lambda j: j["status"] == "done")
    assert job["progress"] == 1.0
    assert np.array_equal(result(gateways.url_b, job_id), undisturbed)
    listed = httpx.get(gateways.url_b + "/api/jobs", timeout=30).json()["jobs"]
    assert job_id in {j["id"] for j in listed}
    # the result cache is the database's: the same audio through B is born done from A's job
    again = httpx.post(
        gateways.url_b + "/api/jobs",
        files={"file": ("again.wav", upload)},
        data={"analysis": "false"},
        timeout=120,
    ).json()
    assert again["status"] == "done" and any(job_id in note for note in again["notes"])
    delete(gateways.url_b, job_id)
    delete(gateways.url_a, again["id"])
    assert httpx.get(f"{gateways.url_a}/api/jobs/{job_id}", timeout=30).status_code == 404
    assert_each_chunk_predicted_once(gateways.proxy, job_id)


def test_two_gateways_share_queued_jobs_and_never_run_one_twice(gateways):
    """Six jobs, three accepted by each gateway, each gateway running one at a time: both run
    some, with leases renewed and claimed all along, and every chunk is predicted once."""
    uploads = [song_wav(20.0, seed=100 + k) for k in range(6)]
    ids = [submit(gateways.url_a if i % 2 else gateways.url_b, u, analysis="false")
           for i, u in enumerate(uploads)]  # fmt: skip
    runners: dict[str, set[int]] = {job_id: set() for job_id in ids}
    deadline = time.monotonic() + JOB_TIMEOUT_S
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            if (port := lease_port(gateways.db_url, job_id)) is not None:
                runners[job_id].add(port)
            job = job_status(gateways.url_a, job_id)
            if job is not None and job["status"] in ("done", "failed"):
                assert job["status"] == "done", job
                pending.discard(job_id)
        time.sleep(0.1)
    assert not pending, f"jobs not done after {JOB_TIMEOUT_S}s: {pending}"
    for job_id in ids:
        assert_each_chunk_predicted_once(gateways.proxy, job_id)
        assert len(runners[job_id]) <= 1, f"{job_id} changed hands without a fault: {runners}"
    ports = set().union(*runners.values())
    assert ports == {gateways.stack.settings.gateway_port, gateways.port_b}, runners
    for job_id in ids:
        delete(gateways.url_a, job_id)


@pytest.mark.parametrize("accepted_by", ["a", "b"])
def test_the_gateway_running_a_job_killed_hands_it_over(gateways, upload, undisturbed, accepted_by):
    """kill -9 the gateway that holds the job's lease: the other takes the job over within
    LEASE_S + CLAIM_POLL_S and finishes it, re-sending only chunks the fuser lacks."""
    hand_over(gateways, upload, undisturbed, accepted_by)


def hand_over(gateways: TwoGateways, upload: bytes, undisturbed: np.ndarray, accepted_by: str):
    entry = gateways.url_a if accepted_by == "a" else gateways.url_b
    job_id = submit(entry, upload, analysis="false")
    wait_until(entry, job_id, lambda j: 0 < j["progress"] < 0.75)
    a_port = gateways.stack.settings.gateway_port
    victim_port = lease_port(gateways.db_url, job_id)  # the one accepting it, unless it lost
    assert victim_port in (a_port, gateways.port_b)
    survivor = gateways.url_b if victim_port == a_port else gateways.url_a
    killed_at = time.monotonic()
    if victim_port == a_port:
        gateways.stack.kill("gateway", signal.SIGKILL)
    else:
        gateways.kill_b()
    try:
        deadline = killed_at + LEASE_S + CLAIM_POLL_S + 30
        while lease_port(gateways.db_url, job_id) in (victim_port, None):
            assert time.monotonic() < deadline, "no gateway took the job over"
            time.sleep(0.05)
        takeover_s = time.monotonic() - killed_at
        print(
            f"\ntakeover: {takeover_s:.1f} s after kill -9 (LEASE_S={LEASE_S:g}, "
            f"CLAIM_POLL_S={CLAIM_POLL_S:g}: bound {LEASE_S + CLAIM_POLL_S:g} s)"
        )
        job = wait_until(survivor, job_id, lambda j: j["status"] == "done")
        assert job["progress"] == 1.0
        assert np.array_equal(result(survivor, job_id), undisturbed)
    finally:
        if victim_port == a_port:
            gateways.restart_a()
        else:
            gateways.start_b()
    calls = gateways.proxy.per_chunk(job_id)
    assert set(calls.values()) <= {1, 2}
    resent = [chunk for chunk, n in calls.items() if n == 2]
    # only the chunks in flight at the kill (the fuser never got them) are sent again
    assert len(resent) <= CHUNK_CONCURRENCY, calls
    assert takeover_s < LEASE_S + CLAIM_POLL_S + 15  # the bound, with room for a busy machine
    delete(survivor, job_id)


def test_postgresql_restarted_mid_job_loses_no_job(gateways, postgres, upload, undisturbed):
    ids = [submit(gateways.url_a, upload, analysis="false")]
    ids.append(submit(gateways.url_b, upload, analysis="false"))
    wait_until(gateways.url_a, ids[0], lambda j: 0 < j["progress"] < 0.75)
    postgres.stop("fast")
    time.sleep(3.0)  # the gateways meet refused connections for a while
    postgres.start()
    wait_accepting(gateways.db_url)
    for job_id in ids:
        job = wait_until(gateways.url_b, job_id, lambda j: j["status"] == "done")
        assert job["progress"] == 1.0
        assert np.array_equal(result(gateways.url_a, job_id), undisturbed)
    for job_id in ids:
        delete(gateways.url_a, job_id)


@pytest.fixture(scope="module")
def s3_undisturbed(s3_gateways, upload) -> np.ndarray:
    job_id = submit(s3_gateways.url_a, upload, analysis="false")
    wait_until(s3_gateways.url_a, job_id, lambda j: j["status"] == "done")
    stems = result(s3_gateways.url_a, job_id)
    delete(s3_gateways.url_a, job_id)
    return stems


def test_on_s3_upload_through_a_status_and_download_through_b(s3_gateways, upload, s3_undisturbed):
    """B has a data dir of its own: what it serves comes from the bucket (the stems equal to
    local disk's: test_storage_s3)."""
    both = s3_gateways
    job_id = submit(both.url_a, upload, analysis="false")
    job = wait_until(both.url_b, job_id, lambda j: j["status"] == "done")
    assert job["progress"] == 1.0
    assert np.array_equal(result(both.url_b, job_id), s3_undisturbed)
    r = httpx.get(f"{both.url_b}/api/jobs/{job_id}/stems/vocals", params={"format": "flac"})
    assert r.status_code == 200 and r.content[:4] == b"fLaC"
    delete(both.url_b, job_id)
    assert httpx.get(f"{both.url_a}/api/jobs/{job_id}/result", timeout=30).status_code == 404
    assert_each_chunk_predicted_once(both.proxy, job_id)


def test_on_s3_the_gateway_running_a_job_killed_hands_it_over(s3_gateways, upload, s3_undisturbed):
    """The other gateway fetches the job's input from the bucket and finishes it."""
    hand_over(s3_gateways, upload, s3_undisturbed, "a")


class HookReceiver:
    """A loopback webhook receiver on a fixed port, started when the test says so."""

    def __init__(self):
        self.port = free_port()
        self.got: list[tuple[dict, bytes]] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def test_a_webhook_survives_the_kill_of_the_gateway_that_ended_the_job(gateways):
    """B is down, so A runs the job; its receiver is down, so the event is still pending when
    A is killed with -9 right after the job ends. B, started after, delivers it: at least
    once, with the same webhook-id as A's failed attempts carried."""
    receiver = HookReceiver()
    gateways.kill_b()
    try:
        job_id = submit(gateways.url_a, song_wav(5.0, seed=81), callback_url=receiver.url)
        job = wait_until(gateways.url_a, job_id, lambda j: j["status"] == "done")
        gateways.stack.kill("gateway", signal.SIGKILL)
        killed_at = time.monotonic()
        gateways.start_b()
        receiver.start()
        while not receiver.got:
            assert time.monotonic() - killed_at < 60, job_status(gateways.url_b, job_id)
            time.sleep(0.05)
        print(f"\nwebhook delivered {time.monotonic() - killed_at:.1f} s after the kill -9")
        headers, body = receiver.got[0]
        payload = standardwebhooks.Webhook(WEBHOOK_SECRET).verify(body, headers)
        assert payload["data"]["id"] == job_id and payload["data"]["status"] == "done"
        assert payload["data"]["created_at"] == job["created_at"]
        deadline = time.monotonic() + 20
        while (state := job_status(gateways.url_b, job_id)["webhook"])["status"] != "delivered":
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["attempts"] >= 1
        assert {h["webhook-id"] for h, _ in receiver.got} == {headers["webhook-id"]}
    finally:
        receiver.close()
        gateways.restart_a()
    delete(gateways.url_b, job_id)


def test_an_idempotency_key_names_one_job_across_gateways(gateways):
    song, other = song_wav(5.0, seed=82), song_wav(5.0, seed=83)
    key = {"Idempotency-Key": "import-2026-12-06-0001"}

    def post(url: str, audio: bytes) -> httpx.Response:
        return httpx.post(
            url + "/api/jobs", files={"file": ("s.wav", audio)}, headers=key, timeout=120
        )

    # both gateways at once: one makes the job; the other answers it, or 409 while it is made
    with ThreadPoolExecutor(2) as pool:
        first = list(pool.map(post, [gateways.url_a, gateways.url_b], [song, song]))
    assert {r.status_code for r in first} <= {202, 409}, [r.text for r in first]
    made = {r.json()["id"] for r in first if r.status_code == 202}
    assert len(made) == 1, [r.text for r in first]
    again = post(gateways.url_b, song)
    assert again.status_code == 202 and again.json()["id"] in made
    assert again.headers["idempotent-replayed"] == "true"
    assert post(gateways.url_a, other).status_code == 422
    job_id = made.pop()
    wait_until(gateways.url_a, job_id, lambda j: j["status"] == "done")
    delete(gateways.url_a, job_id)


def bucket_keys(s3: LocalS3, job_id: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if job_id in o["Key"]]


def test_on_s3_a_job_cancelled_while_its_gateway_is_dead_leaves_no_file(
    s3_gateways, s3server, upload
):
    """Its gateway killed -9 mid-job, the job cancelled through the other: once the dead
    gateway's lease runs out the other cleans up — the bucket, the fuser's partial result,
    its own data dir — and the dead one, started again, drops its own cache of the job."""
    both = s3_gateways
    job_id = submit(both.url_a, upload, analysis="false")
    wait_until(both.url_a, job_id, lambda j: 0 < j["progress"] < 0.75)
    a_port = both.stack.settings.gateway_port
    victim_port = lease_port(both.db_url, job_id)
    survivor = both.url_b if victim_port == a_port else both.url_a
    dirs = [Path(both.stack.settings.data_dir), Path(both.env_b["DATA_DIR"])]

    def leftovers(*skip: Path) -> list[str]:
        local = [str(p) for d in dirs if d not in skip for p in d.rglob(f"*{job_id}*")]
        return local + bucket_keys(s3server, job_id)

    assert leftovers()  # its input, the fuser's chunks, in the bucket and on disk
    if victim_port == a_port:
        both.stack.kill("gateway", signal.SIGKILL)
    else:
        both.kill_b()
    killed_at = time.monotonic()
    dead_dir = dirs[0] if victim_port == a_port else dirs[1]  # its cache: its own to clean
    try:
        cancelled = httpx.post(f"{survivor}/api/jobs/{job_id}/cancel", timeout=30)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        while left := leftovers(dead_dir):
            assert time.monotonic() - killed_at < 2 * LEASE_S + 20, left
            time.sleep(0.2)
        print(f"\ncancelled job's files gone {time.monotonic() - killed_at:.1f} s after kill -9")
    finally:
        if victim_port == a_port:
            both.restart_a()
        else:
            both.start_b()
    time.sleep(2 * CLAIM_POLL_S)
    assert not leftovers()
    job = job_status(both.url_a, job_id)
    assert job["status"] == "cancelled" and job["stage"] == "cancelled"
    delete(both.url_a, job_id)
