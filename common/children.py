"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn`: the child gets its own process group (a Ctrl-C to the launcher is not
    sent to it twice) and `sig` when its launcher dies, even by kill -9 (Linux; elsewhere only
    the process group is set). Set it after any change of user: that clears the signal. The
    signal comes when the *thread* that started the child ends: start it from one that lasts."""

    def preexec() -> None:
        os.setsid()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)

    return preexec
