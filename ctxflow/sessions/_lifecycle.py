"""What runs for a manager without a caller: autosave, the memory monitor, a flush on signals.

Each is a small component the manager owns and hands its own ``flush``,
``close`` and eviction to. The signal flush never runs inside a store
transaction or a half-applied change: a signal that lands in one is acted on
when the main thread leaves it (see :mod:`ctxflow._critical`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from ctxflow import _critical
from ctxflow._log import get_logger
from ctxflow.errors import SessionError

__all__ = ["Autosave", "Periodic", "SignalFlush"]

log = get_logger("ctxflow.sessions")


class Periodic:
    """A daemon thread that calls ``work`` every ``interval`` seconds until stopped.

    A failure in ``work`` is logged and the thread goes on: a monitor that
    died on one bad round would leave memory unwatched.
    """

    def __init__(self, name: str, work: Callable[[], object]) -> None:
        self._name = name
        self._work = work
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, interval: float) -> None:
        """Start the thread (once; a second call is a no-op)."""
        if not interval > 0:
            raise SessionError(f"'interval' must be > 0 (got {interval})", rule="interval")
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self._work()
                except Exception:
                    log.exception("periodic_failed", thread=self._name)

        self._thread = threading.Thread(target=loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for a round it is in (not when called from the thread)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


class Autosave(Periodic):
    """A daemon thread that flushes dirty sessions every ``interval`` seconds, then evicts."""

    def __init__(self, flush: Callable[[], list[str]], evict: Callable[[], None]) -> None:
        def tick() -> None:
            failed = flush()
            if failed:
                log.warning("autosave_failed", contexts=len(failed))
            evict()

        super().__init__("ctxflow-autosave", tick)


class SignalFlush:
    """On a signal: ``close`` (which flushes), then exit 128 + signum, or 1 naming the unsaved."""

    def __init__(self, close: Callable[[], list[str]]) -> None:
        self._close = close
        self.fired = False

    def install(self, signals: Sequence[signal.Signals]) -> None:
        """Handle ``signals`` in this process (call from the main thread)."""
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.fired:
            return
        if _critical.in_section():
            _critical.defer(lambda: self.shutdown(signum))
        else:
            self.shutdown(signum)

    def shutdown(self, signum: int) -> None:
        """Flush through ``close`` and exit as the signal asks."""
        if self.fired:
            return
        self.fired = True
        failed = self._close()
        log.info("shutdown_flush", signal=signum, failed=len(failed))
        if failed:
            raise SystemExit(
                f"ctxflow: {signal.Signals(signum).name} received; {len(failed)} session(s) "
                f"could not be saved: {', '.join(failed)}"
            )
        raise SystemExit(128 + signum)
