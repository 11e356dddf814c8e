"""Pausing the cyclic garbage collector while a restore builds a long conversation.

A restore creates an object or two per message of the log (placeholders,
index facts, their strings and tuples), every one of which survives it. The
collector, triggered by that allocation, would walk them again and again
for nothing: at 100,000 messages that was a third of a reopen. :func:`paused`
turns automatic collection off for the duration and back on after, unless
it was off already (the application's choice is left as it was). Collection
is only deferred, never skipped: the next allocation after the pause can
trigger it as usual.

With ``promote``, what the block built goes straight to the oldest
generation when it ends (``gc.freeze()`` then ``gc.unfreeze()``: the
permanent generation merges back into the oldest). Otherwise the first
young collection after the pause walks all of it, and the next older one
again: at 100,000 messages each walk took 50 ms. Objects the young
generations held when the block ended go with it, and a reference cycle
among them waits for a full collection. An application that froze objects
itself (``gc.get_freeze_count()`` is not zero) keeps them frozen: nothing is
promoted then. Freeze before restores start: objects frozen by another
thread while a restore promotes (between its two calls) would be unfrozen.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]


@contextmanager
def paused(*, promote: bool = False) -> Iterator[None]:
    """Automatic garbage collection off inside the block, as it was after; with
    ``promote``, what a block that ended normally built moved to the oldest generation."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
        if promote and gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
    finally:
        if was:
            gc.enable()
