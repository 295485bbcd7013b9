"""One numba compile at a time on this machine.

librosa's kernels are `@guvectorize(cache=True)`: the first process to call one compiles it and
writes two cache files (the kernel and its ufunc wrapper) with separate renames. Two processes
compiling at once can leave a pair from different processes, and every later process that loads
that pair crashes with SIGSEGV (numba/numba#10128, librosa/librosa#1998) — our CI met it when a
test started several fft and cqt services together. Services therefore compile (warm up) while
holding an exclusive lock on one file per machine; the next one waits and loads a whole pair.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path() -> Path:
    """Beside numba's cache when `NUMBA_CACHE_DIR` names one, else in the temp directory (the
    default cache lives in site-packages, shared by every process of one environment)."""
    base = os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir()
    return Path(base) / "audiosplit-numba-compile.lock"


@contextmanager
def compile_lock() -> Iterator[None]:
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
