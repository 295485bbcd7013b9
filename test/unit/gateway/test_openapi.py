"""The gateway's OpenAPI spec is the contract: every /api route documents exactly the statuses in
ROUTES (drift either way fails), each error one is really answered (a probe per route and status
on the app in process) with the documented error body, and the JSON the routes build has no
field the spec lacks."""

from __future__ import annotations

import copy
import io
import time

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

import gateway.api
from common.config import Settings
from common.errors import StorageError
from common.interfaces import ErrorBody, SeparatorInfo
from gateway.api import job_json
from gateway.app import create_app
from gateway.idempotency import idempotency
from gateway.jobfiles import JobFiles
from gateway.messages import public_model
from gateway.options import KNOWN_FIELDS, MAX_OVERLAP, MAX_SHIFTS, QUALITIES, parse_options
from gateway.store import JobRecord, StoreUnavailable

# Every /api operation and every status it can answer. A route that gains or loses a status
# changes this table, on purpose.
ROUTES = {
    "POST /api/jobs": {202, 400, 401, 409, 413, 415, 422, 429, 502, 503, 507},
    "GET /api/jobs": {200, 401, 422, 503},
    "GET /api/jobs/{job_id}": {200, 401, 404, 503},
    "GET /api/status/{job_id}": {200, 401, 404, 503},
    "DELETE /api/jobs/{job_id}": {204, 401, 404, 503, 507},
    "GET /api/jobs/{job_id}/result": {200, 401, 404, 409, 422, 503, 507},
    "GET /api/result/{job_id}": {200, 401, 404, 409, 422, 503, 507},
    "GET /api/jobs/{job_id}/stems/{stem}": {200, 401, 404, 409, 422, 503, 507},
    "GET /api/jobs/{job_id}/download.zip": {200, 401, 404, 409, 422, 503, 507},
    "GET /api/jobs/{job_id}/mix": {200, 401, 404, 409, 422, 503, 507},
    "GET /api/jobs/{job_id}/analysis": {200, 401, 404, 503, 507},
    "GET /api/jobs/{job_id}/midi": {200, 401, 404, 409, 503, 507},
    "GET /api/jobs/{job_id}/midi/{stem}": {200, 401, 404, 409, 503, 507},
    "GET /api/models": {200, 401, 502},
    "POST /api/jobs/{job_id}/cancel": {200, 401, 404, 409, 503},
    "GET /api/usage": {200, 401, 503},
}
# the ops routes every service has: 503 with their own body while starting / not ready
OPS = {"GET /health": {200, 503}, "GET /ready": {200, 503}}
DONE, QUEUED, UNKNOWN = "donejob0001", "queuedjob01", "nosuchjob01"
STEMS = ["vocals", "drums", "bass", "other"]
# per route, a request the route refuses with 422 (a parameter or field it does not accept)
INVALID = {
    "POST /api/jobs": {"data": {"model": "no_such_model"}},
    "GET /api/jobs": {"params": {"limit": 0}},
    "GET /api/jobs/{job_id}/result": {"params": {"from_frame": -1}},
    "GET /api/result/{job_id}": {"params": {"from_frame": -1}},
    "GET /api/jobs/{job_id}/stems/{stem}": {"params": {"format": "ogg"}},
    "GET /api/jobs/{job_id}/download.zip": {"params": {"clip": "fold"}},
    "GET /api/jobs/{job_id}/mix": {"params": {"gains": "guitar:-6"}},
}


def wav(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).uniform(-0.1, 0.1, (int(44100 * seconds), 2))
    sf.write(buf, noise.astype(np.float32), 44100, "FLOAT", format="WAV")
    return buf.getvalue()


def separator(name: str, available: bool) -> SeparatorInfo:
    return SeparatorInfo(
        name=name,
        family="dsp" if name == "dsp" else "demucs",
        stems=STEMS,
        available=available,
        reason="embedded" if available else "weights missing",
        segment=44100,
        overlap=0.25,
        normalise=name != "dsp",
    )


INFOS = {"htdemucs": separator("htdemucs", False), "dsp": separator("dsp", True)}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path_factory.mktemp("openapi"),
        predictor_urls="http://127.0.0.1:9",  # nothing listens: the 502 probes
        chunk_retries=0,
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        store, now = app.state.gateway.store, time.time()
        for job_id, status in ((DONE, "done"), (QUEUED, "queued")):
            store.insert(
                JobRecord(
                    job_id,
                    status,
                    now,
                    now,
                    stems=STEMS,
                    model="dsp",
                    duration_s=1.0,
                    options={"resolved": {"analysis": True, "midi": True}},
                )
            )
        yield c


@pytest.fixture(scope="module")
def spec(client) -> dict:
    return client.get("/openapi.json").json()


@pytest.fixture
def infos(app, monkeypatch):
    """The predictor's model list, without a predictor."""

    async def model_infos():
        return INFOS

    monkeypatch.setattr(app.state.gateway, "model_infos", model_infos)


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def call(client: TestClient, route: str, job_id: str = DONE, **kwargs):
    method, path = route.split(" ")
    url = path.format(job_id=job_id, stem=kwargs.pop("stem", "vocals"))
    if route == "POST /api/jobs":
        kwargs.setdefault("files", {"file": ("song.wav", kwargs.pop("content", wav()))})
    return client.request(method, url, **kwargs)


# --- the spec ---------------------------------------------------------------------------------


def test_every_route_documents_exactly_its_statuses(spec):
    documented = {route: {int(code) for code in op["responses"]} for route, op in operations(spec)}
    assert documented == {**ROUTES, **OPS}


def test_every_api_error_status_answers_the_error_body(spec):
    for route, op in operations(spec):
        for code, answer in op["responses"].items():
            if route in OPS:
                continue
            if int(code) >= 400:
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (route, code)
                assert answer["description"], (route, code)
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # not what we send


def test_the_api_key_scheme_covers_the_api_routes_only(spec):
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert scheme["type"] == "apiKey" and scheme["in"] == "header"
    assert scheme["name"] == "X-API-Key" and "API_KEYS" in scheme["description"]
    for route, op in operations(spec):
        on_api = route.split(" ")[1].startswith("/api/")
        assert op.get("security") == ([{"ApiKey": []}] if on_api else None), route


def test_the_upload_form_is_the_parsers(spec):
    body = spec["paths"]["/api/jobs"]["post"]["requestBody"]
    assert body["required"] is True and list(body["content"]) == ["multipart/form-data"]
    ref = body["content"]["multipart/form-data"]["schema"]
    assert ref == {"$ref": "#/components/schemas/JobSubmission"}  # a named class in clients
    form = spec["components"]["schemas"]["JobSubmission"]
    fields = form["properties"]
    # the song in `file` or a link in `url`: neither is required on its own
    assert set(fields) == KNOWN_FIELDS | {"file"} and "required" not in form
    assert "url" in fields["file"]["description"] and "file" in fields["url"]["description"]
    assert fields["file"] == {**fields["file"], "type": "string", "format": "binary"}
    assert fields["quality"]["enum"] == list(QUALITIES)
    assert (fields["shifts"]["minimum"], fields["shifts"]["maximum"]) == (0, MAX_SHIFTS)
    assert (fields["overlap"]["minimum"], fields["overlap"]["maximum"]) == (0, MAX_OVERLAP)
    assert fields["analysis"] == {**fields["analysis"], "type": "boolean", "default": True}
    assert all(f.get("description") for f in fields.values())
    # a field whose default depends on others has none in the spec (a client would send it)
    assert "default" not in fields["shifts"] and "default" not in fields["overlap"]


def test_the_upload_form_as_docs_fills_it_in_is_accepted(spec):
    """Swagger UI's "Try it out" fills every field with its default, else its first example
    (else a value of its own: the maximum, "string"); sent as filled in, the form is valid."""
    form = spec["components"]["schemas"]["JobSubmission"]["properties"]
    filled = {}
    for name, field in form.items():
        value = field["default"] if "default" in field else field.get("examples", [None])[0]
        assert value is not None or name == "file", f"/docs would fill in {name} by itself"
        if value != "" and name != "file":
            filled[name] = str(value).lower() if isinstance(value, bool) else str(value)
    options = parse_options(filled)
    assert options.model == "auto" and options.shifts == 0


def test_operation_ids_are_the_route_functions(spec):
    ids = [op["operationId"] for route, op in operations(spec) if "/api/" in route]
    assert ids[:3] == ["create_job", "list_jobs", "get_job"] and len(set(ids)) == len(ids)


# --- every documented error, answered ----------------------------------------------------------


def probe(client, app, monkeypatch, route: str, code: int):
    """Make `route` answer `code`; the response."""
    gw = app.state.gateway
    if route.startswith("DELETE") and code != 404:  # a job of its own: DELETE may delete it
        gw.store.insert(JobRecord(f"delete{code}job", "done", 0.0, 0.0))
        return probe_with(client, route, code, gw, monkeypatch, job_id=f"delete{code}job")
    return probe_with(client, route, code, gw, monkeypatch, job_id=DONE)


def probe_with(client, route: str, code: int, gw, monkeypatch, job_id: str):
    if code == 401:
        monkeypatch.setattr(gw.settings, "api_keys", "the-key")
        return call(client, route, job_id)
    if code == 404:
        return call(client, route, job_id=UNKNOWN)
    if code == 409 and route == "POST /api/jobs":  # its Idempotency-Key still being worked on
        gw.store._write(
            lambda c: c.execute(
                idempotency.insert().values(
                    tenant="", key="busy", request_hash="x", job_id=None, created_at=time.time()
                )
            )
        )
        return call(client, route, headers={"Idempotency-Key": "busy"})
    if code == 409:  # results of a job not done; cancel of a job that has ended
        return call(client, route, job_id=DONE if route.endswith("/cancel") else QUEUED)
    if code == 422:
        return call(client, route, **copy.deepcopy(INVALID[route]))
    if code == 503:

        def store_down(once):
            raise StoreUnavailable("the job database did not answer for 0 s (test)")

        monkeypatch.setattr(gw.store, "_retrying", store_down)
        return call(client, route, job_id)
    if code == 507:

        def storage_fails(*args):
            raise StorageError("cannot write: no space left on device (test)")

        for method in ("fetch", "delete", "publish"):
            monkeypatch.setattr(JobFiles, method, storage_fails)
        return call(client, route, job_id)
    if code == 400:
        return client.post("/api/jobs", content=b"not a form")
    if code == 413:
        monkeypatch.setattr(gw.settings, "max_upload_bytes", 1000)
        return call(client, route)
    if code == 415:
        return call(client, route, content=b"RIFF? no: these bytes are not audio at all")
    if code == 429:
        monkeypatch.setattr(gw.rate_limiter, "per_minute", 1)
        call(client, route, content=b"")
        return call(client, route, content=b"")
    if code == 502:
        return call(client, route)  # the predictor's model list: nothing listens there
    raise AssertionError(f"no probe for {code}")


ERRORS = [(route, code) for route, codes in ROUTES.items() for code in sorted(codes) if code >= 400]


@pytest.mark.parametrize("route,code", ERRORS, ids=[f"{r} {c}" for r, c in ERRORS])
def test_every_documented_error_is_answered(client, app, monkeypatch, request, route, code):
    if code != 502:
        request.getfixturevalue("infos")
    r = probe(client, app, monkeypatch, route, code)
    assert r.status_code == code, r.text
    ErrorBody.model_validate(r.json())
    if code == 429:
        assert int(r.headers["Retry-After"]) >= 1


def test_the_success_statuses_answer_the_documented_shapes(client, app, spec, infos):
    app.state.gateway.store.insert(JobRecord("deletejob01", "failed", 0.0, 0.0))
    for route, code, path in (
        ("GET /api/jobs", 200, "/api/jobs"),
        ("GET /api/jobs/{job_id}", 200, f"/api/jobs/{DONE}"),
        ("GET /api/status/{job_id}", 200, f"/api/status/{QUEUED}"),
        ("GET /api/models", 200, "/api/models"),
        ("DELETE /api/jobs/{job_id}", 204, "/api/jobs/deletejob01"),
    ):
        r = client.request(route.split(" ")[0], path)
        assert r.status_code == code, (route, r.text)
        schema = response_schema(spec, route, code)
        if schema is not None:
            strict_validate(r.json(), schema, spec)


def test_response_models_document_and_never_filter(client, monkeypatch, infos):
    """A field the documented models lack still reaches the client: the routes answer the
    dicts they build (FastAPI's response_model filtering would drop it)."""
    real_job, real_model = gateway.api.job_json, gateway.api.public_model
    monkeypatch.setattr(
        gateway.api, "job_json", lambda *a, **k: {**real_job(*a, **k), "brand_new": 1}
    )
    monkeypatch.setattr(gateway.api, "public_model", lambda i: {**real_model(i), "brand_new": 2})
    assert client.get(f"/api/jobs/{DONE}").json()["brand_new"] == 1
    assert client.get(f"/api/status/{DONE}").json()["brand_new"] == 1
    assert all(j["brand_new"] == 1 for j in client.get("/api/jobs").json()["jobs"])
    assert all(m["brand_new"] == 2 for m in client.get("/api/models").json()["models"])


# --- the JSON the routes build has nothing the spec lacks -------------------------------------


def strictly(node):
    """A copy of a JSON schema in which no object may have a property it does not name."""
    if isinstance(node, dict):
        node = {k: strictly(v) for k, v in node.items()}
        if "properties" in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strictly(v) for v in node]
    return node


def strict_validate(value, schema: dict, spec: dict) -> None:
    """`value` against `schema` (which may $ref the spec's components), every object closed."""
    root = strictly({**schema, "components": spec["components"]})
    jsonschema.Draft202012Validator(root).validate(value)


def response_schema(spec: dict, route: str, code: int) -> dict | None:
    method, path = route.split(" ")
    answer = spec["paths"][path][method.lower()]["responses"][str(code)]
    return answer.get("content", {}).get("application/json", {}).get("schema")


def job_records() -> list[JobRecord]:
    members = [
        {"model": "htdemucs", "weight": 1.0, "share": 0.333333},
        {"model": "dsp", "weight": 2.0, "share": 0.666667},
    ]
    resolved = {
        "model": "htdemucs,dsp",
        "model_reason": "ensemble",
        "stem": "vocals",
        "stems": ["vocals", "no_vocals"],
        "shifts": 0,
        "overlap": None,
        "analysis": False,
        "members": members,
        "ensemble_method": "median_wave",
    }
    t = time.time() - 30
    return [
        JobRecord("queued00001", "queued", t, t, model="dsp", stems=STEMS),
        JobRecord(
            "running0001",
            "running",
            t,
            t + 5,
            progress=0.5,
            stage="separating",
            model="htdemucs",
            stems=STEMS,
            ready_s=3.2,
            options={"resolved": {"stem": None, "shifts": 0, "overlap": 0.25, "analysis": True}},
        ),
        JobRecord(
            "done0000001",
            "done",
            t,
            t + 9,
            progress=1.0,
            stage="done",
            model="htdemucs,dsp",
            stems=["vocals", "no_vocals"],
            peak=1.2,
            warnings=["a warning"],
            notes=["a note"],
            options={"requested": {"model": "htdemucs,dsp"}, "resolved": resolved},
            filename="a song.wav",
            duration_s=12.5,
        ),
        JobRecord(
            "failed00001",
            "failed",
            t,
            t + 2,
            stage="failed",
            error={"code": "upstream_error", "message": "the fuser failed"},
        ),
    ]


@pytest.mark.parametrize("job", job_records(), ids=lambda j: j.status)
def test_job_json_is_the_documented_job(spec, job):
    strict_validate(job_json(job), {"$ref": "#/components/schemas/Job"}, spec)


def test_the_model_list_is_the_documented_one(spec):
    models = {"models": [public_model(i) for i in INFOS.values()]}
    strict_validate(models, {"$ref": "#/components/schemas/ModelList"}, spec)


def test_strict_validation_catches_an_undocumented_field(spec):
    job = {**job_json(job_records()[0]), "surprise": 1}
    with pytest.raises(jsonschema.ValidationError, match="surprise"):
        strict_validate(job, {"$ref": "#/components/schemas/Job"}, spec)
