"""Pausing the cyclic garbage collector while a restore builds a long conversation.

A restore creates an object or two per message of the log (placeholders,
index facts, their strings and tuples), every one of which survives it. The
collector, triggered by that allocation, would walk them again and again
for nothing: at 100,000 messages that was a third of a reopen. :func:`paused`
turns automatic collection off for the duration and back on after, unless
it was off already (the application's choice is left as it was). Collection
is only deferred, never skipped: the next allocation after the pause can
trigger it as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]


@contextmanager
def paused() -> Iterator[None]:
    """Automatic garbage collection off inside the block, as it was after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
