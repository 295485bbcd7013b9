"""Session set-up shared by every test."""

import os

import pytest

# No test reaches the real network: weights are never fetched on first use unless a test
# turns it on against its own loopback hub (test/integration/test_fetch.py). Services started
# by tests inherit this environment.
os.environ.setdefault("AUTO_FETCH", "false")


def pytest_sessionstart(session) -> None:
    """Compile librosa's numba kernels once (each warm-up holds the machine's compile lock)
    before any test starts services: they then load a whole cache instead of compiling side by
    side, and this process does not compile them while a service does (numba/numba#10128, see
    common/jit.py)."""
    from transforms import cqt, fft

    fft.warm_up()
    cqt.warm_up()


# a real PostgreSQL for the tests that share one (the store, several gateways): test/postgres.py
from test.postgres import pg_url, postgres  # noqa: E402, F401

# a real S3 server (SeaweedFS) for the object-storage tests: test/s3server.py
from test.s3server import s3_url, s3server  # noqa: E402, F401
from test.stackutil import APPS_KEY, start_stack  # noqa: E402


@pytest.fixture(scope="session")
def keys_stack(tmp_path_factory):
    """One stack with keys on for the tests of tenants (test/integration/test_tenants.py) and
    of the page with a key (test/browser/test_page_keys.py): AUTH=keys with APPS_KEY in
    API_KEYS, one job at a time (queues and fairness show), links and webhooks to loopback
    allowed, quick webhook retries."""
    stack = start_stack(
        tmp_path_factory.mktemp("keys_data"),
        tmp_path_factory.mktemp("keys_models"),  # empty: the dsp separator runs
        auth="keys",
        api_keys=APPS_KEY,
        job_concurrency=1,
        allow_private_urls="true",
        webhook_backoff_s=1,
        webhook_timeout_s=2,
    )
    yield stack
    stack.stop()
