"""Values kept while their object lives: made once per object, found by identity, gone
with the object, bounded when asked."""

from __future__ import annotations

import gc

from ctxflow._kept import KeptWhileAlive


class Thing:
    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Thing) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def test_made_once_per_object_and_gone_with_it() -> None:
    made: list[str] = []

    def make(thing: Thing) -> str:
        made.append(thing.name)
        return thing.name.upper()

    kept = KeptWhileAlive(make)
    one, equal = Thing("a"), Thing("a")
    assert kept(one) == kept(one) == "A" and made == ["a"]
    assert kept(equal) == "A" and made == ["a", "a"]  # by identity, not equality
    assert kept.holds(one) and kept.holds(equal) and not kept.holds(Thing("a"))
    key = id(one)
    del one
    gc.collect()
    assert key not in kept._kept and kept.holds(equal)


def test_a_bound_forgets_the_older_half() -> None:
    kept = KeptWhileAlive(lambda thing: thing.name, size=4)
    things = [Thing(str(n)) for n in range(6)]
    for thing in things:
        kept(thing)
    assert len(kept._kept) <= 4
    assert kept.holds(things[-1]) and not kept.holds(things[0])
