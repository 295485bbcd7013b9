"""Schemathesis against the gateway's own OpenAPI (`/openapi.json`) on a live stack: whatever a
client sends to any operation, the answer is never a 5xx (5xx is for our own bugs only).

Deterministic (Hypothesis derandomized, no example database) and bounded: MAX_EXAMPLES cases
per operation and generation mode. The gateway reads `POST /api/jobs` as a raw multipart stream,
so its OpenAPI declares no body; the test adds the documented form (a `file` and the optional
fields) to its copy of the schema so that the fuzzer sends uploads too. One finished job is
created first and offered as an example id, so the result, stem, zip and analysis routes are
reached with a job that exists, not only with ids that 404.
"""

from __future__ import annotations

import io

import httpx
import pytest
import schemathesis
import soundfile as sf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from test.songgen import make_song, mixture
from test.stackutil import start_stack, wait_job

MAX_EXAMPLES = 25  # per operation and mode: ~1 minute for the 13 operations on 2 cores
UPLOAD_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "model": {"type": "string"},
        "quality": {"type": "string", "enum": ["preview", "render"]},
        "stems": {"type": "string"},
        "shifts": {"type": "integer", "minimum": 0, "maximum": 10},
        "overlap": {"type": "number", "minimum": 0, "maximum": 0.9},
        "analysis": {"type": "boolean"},
    },
}
REQUESTS = {"count": 0, "by_status": {}}  # what the fuzzer sent, reported at the end


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("fuzzdata"),
        tmp_path_factory.mktemp("fuzzmodels"),  # empty: the dsp separator runs
        max_upload_bytes=2_000_000,  # a fuzzed body never needs more
    )
    yield stack
    stack.stop()
    by_status = dict(sorted(REQUESTS["by_status"].items()))
    print(f"\nfuzz: {REQUESTS['count']} requests to the gateway, by status {by_status}")


@pytest.fixture(scope="module")
def done_job_id(fuzz_stack) -> str:
    buf = io.BytesIO()
    sf.write(buf, mixture(make_song(seconds=2.0, seed=21)).T, 44100, "PCM_16", format="WAV")
    with httpx.Client(base_url=fuzz_stack.url("gateway"), timeout=60) as client:
        r = client.post("/api/jobs", files={"file": ("fuzz.wav", buf.getvalue())})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"], timeout=120)
    assert job["status"] == "done", job
    return job["id"]


def with_upload_form_and_examples(raw: dict, job_id: str) -> dict:
    """The gateway's schema, plus the multipart body of `POST /api/jobs` and `job_id` as the
    example id of every GET (not of DELETE: the other operations still need the job)."""
    paths = raw["paths"]
    paths["/api/jobs"]["post"].setdefault(
        "requestBody",
        {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_FORM}}},
    )
    for operations in paths.values():
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
    schema = schemathesis.openapi.from_dict(with_upload_form_and_examples(raw, done_job_id))
    schema.config.update(base_url=url, request_timeout=60)
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=True, database="none", allow_x00=False
    )
    return schema


def fuzz_operation(operation, mode: GenerationMode) -> list[str]:
    """Send up to MAX_EXAMPLES generated cases to one operation; the 5xx answers found."""
    failures: list[str] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report, don't minimise
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(timeout=60)
        REQUESTS["count"] += 1
        by_status = REQUESTS["by_status"]
        by_status[response.status_code] = by_status.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as e:  # schemathesis raises a group of failed checks
            failures.append(f"{case.method} {case.formatted_path}: {e}"[:2000])

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
