"""Schemathesis against the gateway's own OpenAPI (`/openapi.json`) on a live stack: whatever a
client sends to any operation, the answer is never a 5xx (5xx is for our own bugs only).

Deterministic (a fixed Hypothesis seed, no example database) and bounded: MAX_EXAMPLES cases
per operation and generation mode. `POST /api/jobs` is fuzzed through the multipart form its
spec documents (a `file` and every optional field, valid and not). One finished job is created
first and offered as an example id, so the result, stem, zip and analysis routes are reached
with a job that exists, not only with ids that 404. Keys are on (a tenant's key in API_KEYS),
and every case carries it: the routes behind the key are what is fuzzed.
"""

from __future__ import annotations

import io

import httpx
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from test.songgen import make_song, mixture
from test.stackutil import start_stack, wait_job

MAX_EXAMPLES = 30  # per operation and mode: ~600 requests, ~15 s on 2 cores
# A fixed seed, not `derandomize`: that one hashes the test function's source, so any edit to
# this file would change every generated case.
SEED = 20261123
INTEGER_EXTREMES = (-(2**63) - 1, -1, 0, 2**31, 2**63 - 1, 2**63, 2**64, 10**30)
FUZZ_KEY = "fuzz-tenant-key"
KEYED = {"X-API-Key": FUZZ_KEY}
REQUESTS = {"count": 0, "by_status": {}}  # what the fuzzer sent, reported at the end


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("fuzzdata"),
        tmp_path_factory.mktemp("fuzzmodels"),  # empty: the dsp separator runs
        max_upload_bytes=2_000_000,  # a fuzzed body never needs more
        api_keys=FUZZ_KEY,
    )
    yield stack
    stack.stop()
    by_status = dict(sorted(REQUESTS["by_status"].items()))
    print(f"\nfuzz: {REQUESTS['count']} requests to the gateway, by status {by_status}")


@pytest.fixture(scope="module")
def done_job_id(fuzz_stack) -> str:
    buf = io.BytesIO()
    sf.write(buf, mixture(make_song(seconds=2.0, seed=21)).T, 44100, "PCM_16", format="WAV")
    with httpx.Client(base_url=fuzz_stack.url("gateway"), timeout=60, headers=KEYED) as client:
        r = client.post("/api/jobs", files={"file": ("fuzz.wav", buf.getvalue())})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"], timeout=120)
    assert job["status"] == "done", job
    return job["id"]


def with_examples(raw: dict, job_id: str) -> dict:
    """The gateway's schema, with `job_id` as the example id of every GET (not of DELETE: the
    other operations still need the job)."""
    assert "requestBody" in raw["paths"]["/api/jobs"]["post"]  # the form is fuzzed too
    for operations in raw["paths"].values():
        for parameter in operations.get("get", {}).get("parameters", []):
            if parameter["name"] == "job_id":
                parameter["example"] = job_id
            if parameter["name"] == "stem":
                parameter["example"] = "vocals"
    return raw


@pytest.fixture(scope="module")
def gateway_schema(fuzz_stack, done_job_id):
    url = fuzz_stack.url("gateway")
    raw = httpx.get(url + "/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(with_examples(raw, done_job_id))
    schema.config.update(base_url=url, request_timeout=60, headers=KEYED)
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=True, database="none", allow_x00=False
    )
    return schema


def count_status(status: int) -> None:
    REQUESTS["by_status"][status] = REQUESTS["by_status"].get(status, 0) + 1


def fuzz_operation(operation, mode: GenerationMode) -> list[str]:
    """Send up to MAX_EXAMPLES generated cases to one operation; the 5xx answers found."""
    failures: list[str] = []

    @seed(SEED)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(timeout=60)
        REQUESTS["count"] += 1
        count_status(response.status_code)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except FailureGroup as e:  # a BaseExceptionGroup: `except Exception` misses it
            failures.append(str(e)[:2000])

    try:
        run()
    except Unsatisfiable:
        assert mode == GenerationMode.NEGATIVE, operation.label  # nothing to get wrong in it
    return failures


def test_no_operation_answers_5xx(gateway_schema):
    failures: list[str] = []
    operations = []
    for result in gateway_schema.get_all_operations():
        operation = result.ok()  # an invalid operation in our own schema fails the test here
        operations.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += fuzz_operation(operation, mode)
    assert "POST /api/jobs" in operations and len(operations) >= 12, operations
    assert not failures, "\n\n".join(failures)


def test_integer_parameters_at_their_extremes_are_no_5xx(fuzz_stack, done_job_id):
    """Every integer query parameter of the live schema at the edges of the integer types a
    backend may store it in (SQLite and numpy take at most 64 bits): a 4xx or a normal answer,
    never a 5xx. Random fuzzing reaches such values only now and then."""
    url = fuzz_stack.url("gateway")
    raw = httpx.get(url + "/openapi.json", timeout=30).json()
    path_values = {"job_id": done_job_id, "stem": "vocals"}
    failures, probed = [], 0
    with httpx.Client(base_url=url, timeout=60, headers=KEYED) as client:
        for path, operations in raw["paths"].items():
            for method, operation in operations.items():
                if method != "get":
                    continue
                params = operation.get("parameters", [])
                integers = [
                    p["name"]
                    for p in params
                    if p["in"] == "query" and p.get("schema", {}).get("type") == "integer"
                ]
                target = path.format(**path_values)
                for name in integers:
                    for value in INTEGER_EXTREMES:
                        probe = f"GET {target}?{name}={value}"
                        probed += 1
                        REQUESTS["count"] += 1
                        try:
                            r = client.get(target, params={name: str(value)})
                        except httpx.TransportError as e:  # uvicorn drops a connection after a 500
                            failures.append(f"{probe}: {type(e).__name__} {e}")
                            continue
                        count_status(r.status_code)
                        if r.status_code >= 500:
                            failures.append(f"{probe}: {r.status_code} {r.text[:200]}")
    assert probed, "no integer query parameter in the schema: nothing was probed"
    assert not failures, failures
