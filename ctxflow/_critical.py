"""Critical sections that a signal handler must not cut into.

Python runs a signal handler in the main thread between two bytecodes, so a
SIGTERM can land while that thread is inside a store transaction or half way
through applying an event to an engine. A handler that saves sessions there
re-enters locks the interrupted code holds (re-entrant locks let it) and
works on half-changed state: every save fails, or worse, one succeeds with
data that the interrupted code then rolls back.

So the work that must not be cut into — holding an engine's lock, the
manager's cache lock, a store call — runs inside a *critical section*. A
handler asks :func:`in_section` first; inside one it :func:`defer`\\ s its work,
which then runs in the main thread as soon as it leaves its outermost
section, with every lock released and every transaction finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

__all__ = ["CriticalLock", "defer", "in_section", "section"]

_local = threading.local()
_deferred: list[Callable[[], None]] = []


def _depth() -> int:
    depth: int = getattr(_local, "depth", 0)
    return depth


def _enter() -> None:
    _local.depth = _depth() + 1


def _leave() -> None:
    depth = _depth() - 1
    _local.depth = depth
    if depth == 0 and _deferred and threading.current_thread() is threading.main_thread():
        actions = list(_deferred)
        _deferred.clear()
        for action in actions:
            action()


def in_section() -> bool:
    """True while the calling thread is inside a critical section."""
    return _depth() > 0


def defer(action: Callable[[], None]) -> None:
    """Run ``action`` in the main thread when it leaves its outermost critical section."""
    _deferred.append(action)


@contextmanager
def section() -> Iterator[None]:
    """A critical section without a lock (e.g. around a store call)."""
    _enter()
    try:
        yield
    finally:
        _leave()


class CriticalLock:
    """A re-entrant lock whose holder is inside a critical section while it holds it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (as ``threading.RLock.acquire``); entered a section when True."""
        _enter()
        try:
            taken = self._lock.acquire(blocking, timeout)
        except BaseException:
            _leave()
            raise
        if not taken:
            _leave()
        return taken

    def release(self) -> None:
        """Give the lock back; leaving the outermost section runs deferred work."""
        self._lock.release()
        _leave()

    def __enter__(self) -> CriticalLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
