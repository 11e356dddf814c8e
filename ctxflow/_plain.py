"""Sealed plain mappings: plain data its producer promises never to change again.

The layered state is converted to plain data at every checkpoint, and most of
it (the memory tiers' items) did not change since the last one. A producer
that keeps the plain form of an immutable item hands out the same
:class:`Sealed` mapping each time; a checkpoint writer may then remember what
it computed from it (a digest) by its identity. A sealed mapping refuses to
change, and holds only immutable values (tuples, not lists), so what was
computed from it stays true.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["Sealed"]


class Sealed(dict[str, Any]):
    """A plain mapping that refuses every change (a ``dict`` to msgpack and JSON).

    It can be weakly referenced: what is derived from one (a checkpoint's
    digest of it) is kept while it lives.
    """

    __slots__ = ("__weakref__",)

    def _refuse(self, *_args: object, **_kwargs: object) -> NoReturn:
        raise TypeError("a sealed plain mapping cannot change")

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse
