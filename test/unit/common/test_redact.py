"""No server path in an error answer of any service: the message keeps its sense, the path
becomes `<server path>`, and the whole message goes to the log."""

import logging

from fastapi import APIRouter
from fastapi.testclient import TestClient

from common.config import REPO_ROOT, Settings
from common.errors import StorageError
from common.service import create_service_app


def test_an_error_naming_a_server_dir_answers_without_it(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", models_dir=tmp_path / "m")
    router = APIRouter()
    where = settings.data_dir / "jobs" / "abc" / "stems.wav"

    @router.get("/fails")
    async def fails():
        raise StorageError(f"could not write {where}: No space left on device")

    @router.get("/code")
    async def code():
        raise StorageError(f"{REPO_ROOT / 'common' / 'storage.py'} refused")

    app = create_service_app("test", settings, routers=[router])  # sets up the root logger
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append
    logging.getLogger("audiosplit.service").addHandler(handler)
    with TestClient(app) as client:
        body = client.get("/fails").json()["error"]
        assert body["message"] == "could not write <server path>: No space left on device"
        assert str(where) in logged[0].getMessage()  # the log keeps it whole
        assert str(REPO_ROOT) not in client.get("/code").text
        assert client.get("/nowhere").json()["error"]["code"] == "not_found"
    logging.getLogger("audiosplit.service").removeHandler(handler)
