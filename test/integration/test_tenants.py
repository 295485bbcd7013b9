"""Tenants on a real stack with AUTH=keys: keys made with `audiosplit keys create` in the
stack's own database, every job route tried across tenants, quotas, a concurrency limit with
fairness, cancel and delete that leave no file, idempotency, webhooks to a loopback receiver
verified with `standardwebhooks`."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import standardwebhooks

from common.ports import free_port
from test.songgen import make_song, mixture
from test.stackutil import REPO, wait_job, wav_bytes

SONG_S = 8.0
LONG_S = 90.0  # a dsp job that is still running a few seconds after it is accepted


@pytest.fixture(scope="module")
def stack(keys_stack):
    """AUTH=keys, one worker, webhooks and links to loopback allowed (test/conftest.py)."""
    return keys_stack


def keys(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": stack.settings.data_dir.as_posix()}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_tenant(stack, name: str, *options: str) -> tuple[str, str]:
    made = keys(stack, "create", name, *options)
    assert made.returncode == 0, made.stderr
    key, secret = made.stdout.splitlines()
    assert key.startswith("as_") and secret.startswith("whsec_")
    return key, secret


@pytest.fixture(scope="module")
def tenants(stack):
    return {
        "alice": make_tenant(stack, "alice"),
        "bob": make_tenant(stack, "bob"),
        "admin": make_tenant(stack, "root", "--admin"),
    }


def client(stack, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=stack.url("gateway"), headers=headers, timeout=120)


@pytest.fixture(scope="module")
def song() -> bytes:
    return wav_bytes(mixture(make_song(SONG_S, seed=11)))


def submit(c: httpx.Client, audio: bytes, name: str = "song.wav", **fields) -> httpx.Response:
    headers = fields.pop("headers", {})
    return c.post("/api/jobs", files={"file": (name, audio)}, data=fields, headers=headers)


def test_keys_are_needed_and_each_tenant_sees_only_its_own_jobs(stack, tenants, song):
    with client(stack, None) as anonymous:
        refused = anonymous.get("/api/jobs")
        assert refused.status_code == 401 and "X-API-Key" in refused.json()["error"]["message"]
    with client(stack, "as_not-a-key") as wrong:
        assert wrong.get("/api/jobs").status_code == 401
    alice, bob, admin = (client(stack, tenants[n][0]) for n in ("alice", "bob", "admin"))
    with alice, bob, admin:
        job = submit(alice, song).json()
        done = wait_job(alice, job["id"])
        assert done["status"] == "done"
        base = f"/api/jobs/{job['id']}"
        unknown = "/api/jobs/AAAAAAAAAAAAAAAAAAAAAA"
        routes = [
            ("GET", ""),
            ("GET", "/result"),
            ("GET", "/result?format=flac"),
            ("GET", "/stems/vocals"),
            ("GET", "/download.zip"),
            ("GET", "/mix?speed=0.8"),
            ("GET", "/analysis"),
            ("POST", "/cancel"),
            ("DELETE", ""),
        ]
        for method, suffix in routes:
            theirs = bob.request(method, base + suffix)
            none = bob.request(method, unknown + suffix)
            assert theirs.status_code == none.status_code == 404, (method, suffix)
            # word for word as for a job that does not exist (but for the id itself)
            assert theirs.json()["error"]["message"].replace(job["id"], "X") == none.json()[
                "error"
            ]["message"].replace("AAAAAAAAAAAAAAAAAAAAAA", "X")
        alias = bob.get(f"/api/status/{job['id']}")
        assert alias.status_code == 404
        assert [j["id"] for j in bob.get("/api/jobs").json()["jobs"]] == []
        assert job["id"] in [j["id"] for j in alice.get("/api/jobs").json()["jobs"]]
        # the admin sees everyone's, and one tenant's on asking
        assert admin.get(base).status_code == 200
        listed = admin.get("/api/jobs", params={"tenant": "alice"}).json()
        assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["total"] == 1
        assert admin.get("/api/jobs", params={"tenant": "nobody"}).status_code == 422
        assert bob.get("/api/jobs", params={"tenant": "alice"}).status_code == 422
        # still there for alice after bob's tries
        assert alice.get(base + "/stems/vocals").status_code == 200


def test_the_result_cache_serves_another_tenant_without_naming_or_sharing_the_job(
    stack, tenants, song
):
    with client(stack, tenants["alice"][0]) as alice, client(stack, tenants["bob"][0]) as bob:
        first = wait_job(alice, submit(alice, song, "mine.wav").json()["id"])
        reused = submit(bob, song, "theirs.wav").json()
        assert reused["status"] == "done" and reused["id"] != first["id"]
        assert first["id"] not in json.dumps(reused)
        assert reused["notes"] == ["result reused from an identical earlier job"]
        stem = bob.get(f"/api/jobs/{reused['id']}/stems/vocals").content
        # deleting alice's job leaves bob's files whole, and the other way round
        assert alice.delete(f"/api/jobs/{first['id']}").status_code == 204
        assert bob.get(f"/api/jobs/{reused['id']}/stems/vocals").content == stem
        assert bob.get(f"/api/jobs/{reused['id']}/download.zip").status_code == 200


def test_a_revoked_key_is_refused_at_once(stack, song):
    key, _ = make_tenant(stack, "carol")
    with client(stack, key) as carol:
        assert carol.get("/api/jobs").status_code == 200
        listed = keys(stack, "list")
        assert "carol" in listed.stdout and key not in listed.stdout
        assert keys(stack, "revoke", "carol").returncode == 0
        refused = carol.get("/api/jobs")
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    assert "carol" not in keys(stack, "list").stdout
    assert "carol" in keys(stack, "list", "--all").stdout
    again = keys(stack, "revoke", "carol")
    assert again.returncode != 0 and "no tenant named 'carol'" in again.stderr


def test_the_daily_quota_refuses_with_what_is_used_and_when_room_frees_up(stack):
    key, _ = make_tenant(stack, "dave", "--minutes-per-day", "0.3")  # 18 s a day
    with client(stack, key) as dave:
        first = submit(dave, wav_bytes(mixture(make_song(10.0, seed=21))))
        assert first.status_code == 202
        refused = submit(dave, wav_bytes(mixture(make_song(10.0, seed=22))))
        assert refused.status_code == 429
        message = refused.json()["error"]["message"]
        assert refused.json()["error"]["code"] == "quota_exceeded"
        assert "0.3 min of audio a day" in message and "0.2 min used" in message
        assert "frees up in" in message
        assert 86000 <= int(refused.headers["Retry-After"]) <= 86400
        too_long = submit(dave, wav_bytes(mixture(make_song(20.0, seed=23))))
        assert too_long.status_code == 422 and "more than the 0.3 min" in too_long.text
        usage = dave.get("/api/usage").json()
        assert usage["tenant"] == "dave" and usage["minutes_per_day"] == 0.3
        assert usage["minutes_today"] == pytest.approx(10.0 / 60, abs=0.01)
        dave.post(f"/api/jobs/{first.json()['id']}/cancel")  # the next test's worker is free


def test_a_tenant_at_its_limit_waits_and_another_tenant_goes_first(stack):
    """One worker (JOB_CONCURRENCY=1). Erin (concurrent=1) queues three jobs, then Frank one:
    Frank's runs as soon as Erin's first ends, before her other two."""
    erin_key, _ = make_tenant(stack, "erin", "--concurrent", "1")
    frank_key, _ = make_tenant(stack, "frank")
    with client(stack, erin_key) as erin, client(stack, frank_key) as frank:
        erins = [
            submit(erin, wav_bytes(mixture(make_song(20.0, seed=30 + k)))).json()["id"]
            for k in range(3)
        ]
        franks = submit(frank, wav_bytes(mixture(make_song(5.0, seed=40)))).json()["id"]
        queued = erin.get(f"/api/jobs/{erins[2]}").json()
        assert queued["status"] == "queued" and queued["queue_position"] >= 2
        usage = erin.get("/api/usage").json()
        assert usage["concurrent"] == 1 and usage["running"] + usage["queued"] == 3
        deadline = time.monotonic() + 120
        while frank.get(f"/api/jobs/{franks}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        statuses = [erin.get(f"/api/jobs/{j}").json()["status"] for j in erins]
        assert statuses.count("done") <= 1 and statuses[2] == "queued", statuses
        for job_id in erins:  # the rest would only keep the one worker busy
            erin.post(f"/api/jobs/{job_id}/cancel")
        assert wait_job(frank, franks)["status"] == "done"


def running_job(c: httpx.Client, seed: int) -> dict:
    job = submit(c, wav_bytes(mixture(make_song(LONG_S, seed=seed)))).json()
    deadline = time.monotonic() + 60
    while (now := c.get(f"/api/jobs/{job['id']}").json())["stage"] != "separating":
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    return now


def leftovers(stack, job_id: str) -> list[str]:
    data = Path(stack.settings.data_dir)
    return [str(p) for p in data.rglob(f"*{job_id}*")]


def test_cancel_stops_a_running_job_and_leaves_no_file(stack, tenants):
    with client(stack, tenants["alice"][0]) as alice:
        job = running_job(alice, seed=50)
        assert leftovers(stack, job["id"])  # its input and the fuser's chunks are there
        started = time.monotonic()
        cancelled = alice.post(f"/api/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        while leftovers(stack, job["id"]):
            assert time.monotonic() - started < 2.0, leftovers(stack, job["id"])
            time.sleep(0.05)
        progress = alice.get(f"/api/jobs/{job['id']}").json()["progress"]
        time.sleep(1.5)
        after = alice.get(f"/api/jobs/{job['id']}").json()
        assert after["status"] == "cancelled" and after["progress"] == progress
        assert after["stage"] == "cancelled"
        assert not leftovers(stack, job["id"])
        again = alice.post(f"/api/jobs/{job['id']}/cancel")
        assert again.status_code == 200 and again.json()["status"] == "cancelled"
        listed = alice.get("/api/jobs", params={"status": "cancelled"}).json()
        assert job["id"] in [j["id"] for j in listed["jobs"]]
    fuser_log = (Path(stack.settings.data_dir) / "logs" / "fuser.log").read_text()
    assert '" 500' not in fuser_log


def test_a_chained_job_cancelled_while_its_link_runs_leaves_no_file(stack, tenants):
    """dsp, then vocals>dsp, cancelled once its result grows (the link running): the first
    stage's, the link's and the assembly's fuser state go with the rest."""
    song = wav_bytes(mixture(make_song(2 * LONG_S, seed=53)))
    with client(stack, tenants["alice"][0]) as alice:
        job = submit(alice, song, model="dsp", chain="vocals>dsp").json()
        deadline = time.monotonic() + 120
        while (now := alice.get(f"/api/jobs/{job['id']}").json())["ready_s"] == 0:
            assert time.monotonic() < deadline and now["status"] in ("queued", "running"), now
            time.sleep(0.05)
        assert now["status"] == "running", now
        assert [p for p in leftovers(stack, job["id"]) if f"{job['id']}-c0" in p]
        started = time.monotonic()
        assert alice.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
        while leftovers(stack, job["id"]):
            assert time.monotonic() - started < 2.0, leftovers(stack, job["id"])
            time.sleep(0.05)


def test_delete_of_a_running_job_cancels_it_and_leaves_no_file(stack, tenants):
    with client(stack, tenants["bob"][0]) as bob:
        job = running_job(bob, seed=51)
        assert bob.delete(f"/api/jobs/{job['id']}").status_code == 204
        assert not leftovers(stack, job["id"])
        time.sleep(1.5)  # the runner, had it gone on, would have written more by now
        assert not leftovers(stack, job["id"])
        assert bob.get(f"/api/jobs/{job['id']}").status_code == 404
        ended = wait_job(bob, submit(bob, wav_bytes(mixture(make_song(6.0, seed=52)))).json()["id"])
        conflict = bob.post(f"/api/jobs/{ended['id']}/cancel")
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "not_cancellable"


def test_an_idempotency_key_returns_the_same_job(stack, tenants, song):
    other = wav_bytes(mixture(make_song(SONG_S, seed=60)))
    with client(stack, tenants["alice"][0]) as alice, client(stack, tenants["bob"][0]) as bob:
        first = submit(alice, other, headers={"Idempotency-Key": "order-17"})
        again = submit(alice, other, headers={"Idempotency-Key": "order-17"})
        assert first.status_code == again.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        mismatch = submit(alice, song, headers={"Idempotency-Key": "order-17"})
        assert mismatch.status_code == 422 and "different request" in mismatch.text
        options = submit(alice, other, headers={"Idempotency-Key": "order-17"}, stems="vocals")
        assert options.status_code == 422
        # the key is alice's: bob's same key is his own request
        bobs = submit(bob, other, headers={"Idempotency-Key": "order-17"})
        assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]
        alice.post(f"/api/jobs/{first.json()['id']}/cancel")
        bob.post(f"/api/jobs/{bobs.json()['id']}/cancel")


class Receiver:
    """A loopback webhook receiver: records (headers, body); `mode` says how it answers."""

    def __init__(self):
        self.got: list[tuple[dict, bytes]] = []
        self.mode = "ok"
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                if receiver.mode == "hang":
                    time.sleep(5)
                    return
                receiver.got.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def test_webhooks_are_signed_and_a_hanging_receiver_delays_nothing(stack, tenants):
    key, secret = make_tenant(stack, "gina")
    receiver, hanging = Receiver(), Receiver()
    hanging.mode = "hang"
    with client(stack, key) as gina:
        slow = submit(
            gina, wav_bytes(mixture(make_song(5.0, seed=70))), callback_url=hanging.url()
        ).json()
        job = submit(
            gina, wav_bytes(mixture(make_song(5.0, seed=71))), callback_url=receiver.url()
        ).json()
        assert wait_job(gina, slow["id"])["status"] == "done"
        done = wait_job(gina, job["id"])
        assert done["status"] == "done"
        deadline = time.monotonic() + 10
        while not receiver.got:
            assert time.monotonic() < deadline, gina.get(f"/api/jobs/{job['id']}").json()
            time.sleep(0.05)
        headers, body = receiver.got[0]
        payload = standardwebhooks.Webhook(secret).verify(body, headers)
        assert payload["type"] == "job.done" and payload["data"]["id"] == job["id"]
        assert payload["data"]["status"] == "done"
        state = gina.get(f"/api/jobs/{job['id']}").json()["webhook"]
        assert state["status"] == "delivered" and state["attempts"] == 1
        stuck = gina.get(f"/api/jobs/{slow['id']}").json()["webhook"]
        assert stuck["status"] == "pending" or stuck["attempts"] >= 1
    receiver.server.shutdown()
    hanging.server.shutdown()


class SongServer:
    """A loopback server with a song at /song.wav and a page without audio at /page.html."""

    def __init__(self, song: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.startswith("/song.wav"):
                    body, kind = song, "audio/wav"
                else:
                    body, kind = b"<html><body>no music here</body></html>", "text/html"
                self.send_response(200)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_song_imported_from_a_link_is_fetched_decoded_and_counted(stack):
    """ALLOW_PRIVATE_URLS is on in this stack: a loopback server stands in for the web."""
    key, _ = make_tenant(stack, "hana", "--minutes-per-day", "5")
    audio = wav_bytes(mixture(make_song(SONG_S, seed=90)))
    server = SongServer(audio)
    link = f"http://127.0.0.1:{server.port}/song.wav"
    with client(stack, key) as hana:
        accepted = hana.post("/api/jobs", data={"url": link})
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["source_url"] == link and job["stage"] == "fetching"
        assert job["filename"] == "song" and job["title"] == "song"  # yt-dlp: the file name
        done = wait_job(hana, job["id"])
        assert done["status"] == "done", done
        assert done["duration_s"] == pytest.approx(SONG_S, abs=0.01)
        assert done["stems"] == ["vocals", "drums", "bass", "other"]
        assert hana.get("/api/usage").json()["minutes_today"] == round(SONG_S / 60, 2)
        page = hana.post("/api/jobs", data={"url": f"http://127.0.0.1:{server.port}/page.html"})
        assert page.status_code == 422 and "no audio" in page.json()["error"]["message"]
    server.server.shutdown()


def test_listing_pages_with_a_total_and_a_next_link(stack):
    key, _ = make_tenant(stack, "ivan")
    with client(stack, key) as ivan:
        ids = [
            submit(ivan, wav_bytes(mixture(make_song(3.0, seed=100 + k)))).json()["id"]
            for k in range(3)
        ]
        first = ivan.get("/api/jobs", params={"limit": 2}).json()
        assert first["total"] == 3 and len(first["jobs"]) == 2
        second = ivan.get(first["next"]).json()
        assert second["next"] is None and len(second["jobs"]) == 1
        assert {j["id"] for j in first["jobs"] + second["jobs"]} == set(ids)
        for job_id in ids:
            ivan.post(f"/api/jobs/{job_id}/cancel")
