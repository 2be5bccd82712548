"""One instance per process of something that holds sandboxed workers, shared by every caller."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Closable(Protocol):
    def close(self) -> None: ...


Workers = TypeVar("Workers", bound=_Closable)


class ProcessWide(Generic[Workers]):
    """Started on first use (by `start`, which may return None where it cannot run here) and
    closed at exit, so that no worker outlives the process; `close` ends it sooner."""

    def __init__(self, start: Callable[[], Workers | None]) -> None:
        self._start = start
        self._instance: Workers | None = None
        self._lock = threading.Lock()

    def get(self) -> Workers | None:
        with self._lock:
            if self._instance is None:
                self._instance = self._start()
                if self._instance is not None:
                    atexit.register(self._instance.close)
            return self._instance

    def close(self) -> None:
        """Close the instance, if started; the next `get` starts a new one."""
        with self._lock:
            if self._instance is not None:
                self._instance.close()
            self._instance = None
