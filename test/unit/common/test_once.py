"""A value made once on first use, however many threads ask at the same time; a failed make
is tried again."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from common.once import Once


def test_threads_asking_at_once_share_one_make():
    calls = []
    gate = threading.Event()

    def make() -> object:
        calls.append(1)
        gate.wait(5)  # every other thread asks meanwhile
        return object()

    once = Once(make)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(once.get) for _ in range(8)]
        time.sleep(0.1)
        assert not once.done
        gate.set()
        values = {id(f.result(5)) for f in futures}
    assert len(calls) == 1 and len(values) == 1 and once.done
    assert once.get() is futures[0].result()


def test_a_make_that_raises_is_tried_again():
    attempts = []

    def make() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("the model file is not there yet")
        return "loaded"

    once = Once(make)
    with pytest.raises(OSError, match="not there yet"):
        once.get()
    assert not once.done
    assert once.get() == "loaded" and once.get() == "loaded" and len(attempts) == 2
