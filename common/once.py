"""A value made on first use, once, however many threads ask for it at the same time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Once(Generic[T]):
    """`get()` returns `make()`'s value, calling `make` only the first time; threads that ask
    meanwhile wait for that call. A `make` that raises is called again by the next `get()`
    (a model file that was missing may be there now)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: T | None = None
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def get(self) -> T:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._value = self._make()
                    self._done = True
        return self._value  # type: ignore[return-value]  # set above
