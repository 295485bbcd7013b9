import httpx
import pytest

from test.stackutil import start_stack

MAX_UPLOAD_BYTES = 20_000_000  # small, so the 413 test need not send 500 MB


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    models = tmp_path_factory.mktemp("models")  # empty: no weights, the dsp separator runs
    stack = start_stack(data, models, max_upload_bytes=MAX_UPLOAD_BYTES, max_duration_s=900)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def client(stack):
    with httpx.Client(base_url=stack.url("gateway"), timeout=120) as c:
        yield c
