"""Prometheus metrics shared by the services (each process exposes its own at `/metrics`)."""

from __future__ import annotations

from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUEST_LATENCY = Histogram(
    "audiosplit_request_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOBS = Gauge("audiosplit_jobs", "Jobs in the store by status", ["status"])
JOBS_FINISHED = Counter("audiosplit_jobs_finished_total", "Jobs that ended", ["status"])
SEPARATION_SECONDS = Histogram(
    "audiosplit_separation_seconds",
    "Model inference time per request",
    ["model", "device"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
CHUNK_RETRIES = Counter("audiosplit_chunk_retries_total", "Downstream calls retried", ["service"])
UPLOAD_BYTES = Counter("audiosplit_upload_bytes_total", "Bytes received in uploads")
MODELS_LOADED = Gauge("audiosplit_models_loaded", "Models held in memory", ["model", "device"])


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
