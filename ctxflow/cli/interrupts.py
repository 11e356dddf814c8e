"""SIGINT and SIGTERM as an exception the command unwinds with, then one line and 128 + signum.

Python's default is a ``KeyboardInterrupt`` traceback for Ctrl-C and, for
SIGTERM, an exit with no cleanup at all (hidden temporary files left behind).
While a command runs, both signals raise :class:`Interrupted` instead, so every
``finally`` runs (temporary files removed, the store closed) and ``main``
prints one line.

A signal landing in a critical section (a store transaction, an engine
applying an event; see :mod:`ctxflow._critical`) is raised as soon as the main
thread leaves it, so it never cuts into a half-written change.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from ctxflow import _critical

__all__ = ["Interrupted", "signals_as_exceptions"]

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Interrupted(BaseException):
    """The command was stopped by a signal (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``)."""
        return signal.Signals(self.signum).name

    @property
    def status(self) -> int:
        """The exit status a shell expects after this signal: 128 + its number."""
        return 128 + self.signum


@contextmanager
def signals_as_exceptions(
    signums: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """Raise :class:`Interrupted` on these signals for the duration of the block.

    Only the main thread can set handlers; elsewhere the block runs unchanged.
    A second signal while the first is being acted on is ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def interrupt(signum: int) -> None:
        raise Interrupted(signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        if _critical.in_section():
            _critical.defer(lambda: interrupt(signum))
        else:
            interrupt(signum)

    previous: dict[signal.Signals, Handler] = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)
