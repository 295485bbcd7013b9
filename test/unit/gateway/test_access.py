import time

import pytest
from fastapi.testclient import TestClient

from common.config import Settings
from gateway.app import create_app
from gateway.jobfiles import JobFiles
from gateway.store import JobRecord
from gateway.tenants import settings_tenant


def app_with(tmp_path, **settings):
    s = Settings(
        _env_file=None,
        data_dir=tmp_path,
        predictor_urls="http://127.0.0.1:9",  # nothing listens: these tests stop before it
        **settings,
    )
    return create_app(s)


def test_api_keys_off_by_default(tmp_path):
    with TestClient(app_with(tmp_path)) as c:
        assert c.get("/api/jobs").status_code == 200


def test_api_key_required_when_configured(tmp_path):
    with TestClient(app_with(tmp_path, api_keys="k1, k2")) as c:
        r = c.get("/api/jobs")
        assert r.status_code == 401 and "X-API-Key" in r.json()["error"]["message"]
        wrong = c.get("/api/jobs", headers={"X-API-Key": "wrong"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"].startswith(
            "the X-API-Key given is not a valid key for this service"
        )
        assert "needs an API key" in r.json()["error"]["message"]  # missing: names the header
        assert c.get("/api/jobs", headers={"X-API-Key": "k2"}).status_code == 200
        assert c.get("/health").status_code == 200  # ops endpoints stay open
        assert c.get("/").status_code == 200


def test_rate_limit_answers_429_with_retry_after(tmp_path):
    with TestClient(app_with(tmp_path, rate_limit_per_minute=2)) as c:
        codes = [c.post("/api/jobs", content=b"x").status_code for _ in range(3)]
        assert codes[:2] == [400, 400]  # counted, then refused for what they are
        r = c.post("/api/jobs", content=b"x")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert c.get("/api/jobs").status_code == 200  # polling is not limited


def test_with_keys_on_the_rate_limit_counts_per_tenant_not_per_address(tmp_path):
    """Two customers behind one address (the test client's) each get their own minute."""
    with TestClient(app_with(tmp_path, api_keys="k1,k2", rate_limit_per_minute=1)) as c:
        k1, k2 = {"X-API-Key": "k1"}, {"X-API-Key": "k2"}
        assert c.post("/api/jobs", content=b"x", headers=k1).status_code == 400
        refused = c.post("/api/jobs", content=b"x", headers=k1)
        assert refused.status_code == 429 and "from this key" in refused.text
        assert c.post("/api/jobs", content=b"x", headers=k2).status_code == 400


def test_api_keys_keys_are_tenants_that_see_only_their_own_jobs(tmp_path):
    with TestClient(app_with(tmp_path, api_keys="k1,k2")) as c:
        gw = c.app.state.gateway
        mine = c.get("/api/usage", headers={"X-API-Key": "k1"}).json()
        assert mine["admin"] is False and mine["minutes_per_day"] is None
        gw.store.insert(JobRecord("k1job000001", "done", 1.0, 1.0, tenant=settings_tenant("k1").id))
        assert c.get("/api/jobs/k1job000001", headers={"X-API-Key": "k1"}).status_code == 200
        assert c.get("/api/jobs/k1job000001", headers={"X-API-Key": "k2"}).status_code == 404
        listed = c.get("/api/jobs", headers={"X-API-Key": "k2"}).json()
        assert listed["jobs"] == [] and listed["total"] == 0


def test_cors_only_when_configured(tmp_path):
    origin = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with TestClient(app_with(tmp_path)) as c:
        assert "access-control-allow-origin" not in c.options("/api/jobs", headers=origin).headers
    with TestClient(app_with(tmp_path, cors_origins="https://app.example")) as c:
        r = c.options("/api/jobs", headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_retention_sweeps_old_finished_jobs_and_their_files(tmp_path):
    app = app_with(tmp_path, retention_hours=1)
    with TestClient(app):
        gw = app.state.gateway
        old, recent, running = time.time() - 7200, time.time(), time.time() - 7200
        for job_id, status, at in (
            ("old", "done", old),
            ("new", "done", recent),
            ("run", "running", running),
        ):
            gw.store.insert(JobRecord(id=job_id, status=status, created_at=at, updated_at=at))
            JobFiles(gw.settings.jobs_dir, job_id).dir.mkdir(parents=True)
        for job_id in ("old", "run"):
            gw.store.update(job_id, updated_at=old)
        assert gw.sweep() == ["old"]
        assert not (gw.settings.jobs_dir / "old").exists()
        assert (gw.settings.jobs_dir / "new").exists() and (gw.settings.jobs_dir / "run").exists()
        assert [j.id for j in gw.store.list()] == ["new", "run"] or {
            j.id for j in gw.store.list()
        } == {"new", "run"}


def test_background_sweeper_deletes_jobs_that_expire_while_running(tmp_path):
    app = app_with(tmp_path, retention_hours=1, sweep_every_s=0.05)
    with TestClient(app):
        gw = app.state.gateway
        at = time.time() - 7200
        gw.store.insert(JobRecord(id="stale", status="failed", created_at=at, updated_at=at))
        JobFiles(gw.settings.jobs_dir, "stale").dir.mkdir(parents=True)
        deadline = time.monotonic() + 10
        while "stale" in {j.id for j in gw.store.list()} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "stale" not in {j.id for j in gw.store.list()}
        assert not (gw.settings.jobs_dir / "stale").exists()


@pytest.mark.parametrize(
    "name, safe",
    [
        ("../../etc/passwd", "passwd"),
        ("a\\b\\ünï cødé 🎵.wav", "uni cde.wav"),
        ("", "audio"),
        (".wav", "wav"),
    ],
)
def test_file_names_are_sanitised(name, safe):
    from gateway.submit import safe_filename

    assert safe_filename(name) == safe


def test_ready_names_the_unreachable_services(tmp_path):
    with TestClient(app_with(tmp_path)) as c:
        assert c.get("/health").status_code == 200  # alive
        r = c.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["predictor http://127.0.0.1:9"].startswith("unreachable")
