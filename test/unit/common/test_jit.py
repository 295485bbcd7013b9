"""The compile lock keeps two processes from compiling (and writing numba's cache) at once."""

import os
import subprocess
import sys
from pathlib import Path

from common.jit import compile_lock, lock_path

HOLDER = """
import sys, time
from common.jit import compile_lock
with compile_lock():
    with open(sys.argv[1], "a") as log:
        log.write("enter\\n"); log.flush()
        time.sleep(0.4)
        log.write("leave\\n"); log.flush()
"""


def test_processes_take_turns(tmp_path: Path) -> None:
    log = tmp_path / "log"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    root = Path(__file__).resolve().parents[3]
    holders = [
        subprocess.Popen([sys.executable, "-c", HOLDER, str(log)], cwd=root, env=env)
        for _ in range(3)
    ]
    assert [p.wait(timeout=60) for p in holders] == [0, 0, 0]
    assert log.read_text().split() == ["enter", "leave"] * 3
    assert (tmp_path / "cache" / "audiosplit-numba-compile.lock").exists()


def test_lock_lives_beside_the_numba_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert lock_path() == tmp_path / "numba" / "audiosplit-numba-compile.lock"
    with compile_lock():
        assert lock_path().exists()
