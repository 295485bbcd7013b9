"""A job database outage blocks no other request: while a status call waits for PostgreSQL
(it retries for DB_RETRY_S in a worker thread), the gateway's event loop goes on answering
/health; once the database is back the waiting call gets its answer."""

from __future__ import annotations

import concurrent.futures
import os
import signal

import httpx

from common.ports import free_port
from test.postgres import wait_accepting
from test.stackutil import spawn_gateway, wait_process_healthy


def test_health_answers_while_a_store_call_waits_for_the_database(postgres, pg_url, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": pg_url,
        "DB_RETRY_S": "120",  # far longer than the test needs: the call waits, never fails
        "PREDICTOR_URLS": "http://127.0.0.1:9",
    }
    proc = spawn_gateway(port, env)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        wait_process_healthy(url, proc)
        assert httpx.get(url + "/api/jobs/unknownjob1", timeout=30).status_code == 404
        postgres.stop("fast")
        try:
            pending = pool.submit(httpx.get, url + "/api/jobs/unknownjob1", timeout=300)
            for _ in range(3):
                assert httpx.get(url + "/health", timeout=30).status_code == 200
            assert not pending.done(), pending.result()  # still waiting for the database
        finally:
            postgres.start()
            wait_accepting(postgres.url())
        assert pending.result(timeout=300).status_code == 404  # answered once it was back
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
