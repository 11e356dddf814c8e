"""Values derived from an object, kept while the object lives.

A memory item's digest and plain form, and the digest a checkpoint takes of
that plain form, are asked for again and again until the item is retired.
:class:`KeptWhileAlive` keeps such a value by the object's identity (a lookup
neither hashes the object nor compares it) and drops it when the object
goes (a weak reference's callback). An entry holds nothing of the object, so
a cache of retired items cannot keep them alive, as a fixed-size cache would.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["KeptWhileAlive"]

V = TypeVar("V")


class KeptWhileAlive(Generic[V]):
    """``make(obj)``, computed once per object and kept while the object lives.

    The object must be weakly referenceable. ``size`` bounds the entries (the
    older half is forgotten past it; None: no bound). Safe to share between
    threads.
    """

    def __init__(self, make: Callable[[Any], V], *, size: int | None = None) -> None:
        self._make = make
        self.size = size
        self._kept: dict[int, tuple[weakref.ref[Any], V]] = {}
        self._lock = threading.RLock()  # an object may go while the lock is held

    def __call__(self, obj: Any) -> V:
        key = id(obj)
        found = self._kept.get(key)
        if found is not None and found[0]() is obj:
            return found[1]
        made = self._make(obj)
        kept, lock = self._kept, self._lock

        def gone(ref: weakref.ref[Any]) -> None:
            with lock:
                entry = kept.get(key)
                if entry is not None and entry[0] is ref:
                    del kept[key]

        with lock:
            if self.size is not None and len(kept) >= self.size:
                for old in list(kept)[: self.size // 2]:
                    del kept[old]
            kept[key] = (weakref.ref(obj, gone), made)
        return made

    def holds(self, obj: Any) -> bool:
        """Whether a value is kept for ``obj`` (this object, not an equal one)."""
        found = self._kept.get(id(obj))
        return found is not None and found[0]() is obj
