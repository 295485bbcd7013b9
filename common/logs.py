"""JSON logs that carry the request id and job id across services."""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
job_id_var: ContextVar[str] = ContextVar("job_id", default="")

REQUEST_ID_HEADER = "x-request-id"
JOB_ID_HEADER = "x-audiosplit-job"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := request_id_var.get():
            entry["request_id"] = rid
        if jid := job_id_var.get():
            entry["job_id"] = jid
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every logger (uvicorn's too) to stderr as one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # one line per request comes from our middleware; uvicorn's access log would repeat it
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def trace_headers() -> dict[str, str]:
    """Headers that carry the current request and job id to the next service."""
    headers = {}
    if rid := request_id_var.get():
        headers[REQUEST_ID_HEADER] = rid
    if jid := job_id_var.get():
        headers[JOB_ID_HEADER] = jid
    return headers
