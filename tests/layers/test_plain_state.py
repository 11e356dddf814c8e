"""The state's plain form: memory items as sealed mappings, the same object per item."""

from __future__ import annotations

import json

import attrs
import msgpack
import pytest

from ctxflow._plain import Sealed
from ctxflow.layers import Episode, Fact, LayeredState, Procedure


def _state() -> LayeredState:
    state = LayeredState().with_facts([Fact(key="db", value="postgres 15", step=3)])
    memory = attrs.evolve(
        state.memory,
        episodic=(Episode(id="e1", summary="ran the tests", span=("m1", "m2")),),
        procedural=(Procedure(name="test", steps="run pytest", evidence=("m3",), seen=2),),
    )
    return attrs.evolve(state, memory=memory)


def test_the_plain_form_is_what_asdict_gives() -> None:
    state = _state()
    assert json.loads(json.dumps(state.to_plain())) == json.loads(json.dumps(attrs.asdict(state)))
    packed = msgpack.packb(state.to_plain(), use_bin_type=True)
    assert msgpack.unpackb(packed) == json.loads(json.dumps(attrs.asdict(state)))


def test_an_item_has_one_plain_object_and_a_changed_item_another() -> None:
    state = _state()
    first, again = state.to_plain(), state.to_plain()
    assert first["memory"]["semantic"][0] is again["memory"]["semantic"][0]
    changed = state.with_facts([Fact(key="db", value="postgres 16", step=4)])
    facts = changed.to_plain()["memory"]["semantic"]
    assert [f["value"] for f in facts] == ["postgres 16"]
    assert LayeredState.from_plain(changed.to_plain()) == changed


def test_a_sealed_mapping_refuses_every_change() -> None:
    item = _state().to_plain()["memory"]["episodic"][0]
    assert type(item) is Sealed and item["span"] == ("m1", "m2")
    for change in (
        lambda: item.__setitem__("summary", "x"),
        lambda: item.__delitem__("summary"),
        lambda: item.update(summary="x"),
        lambda: item.pop("summary"),
        lambda: item.popitem(),
        lambda: item.setdefault("new", 1),
        item.clear,
    ):
        with pytest.raises(TypeError):
            change()
    assert item["summary"] == "ran the tests"


def test_what_is_kept_for_a_memory_item_goes_with_it() -> None:
    """An item's digest and plain form are kept while it lives, and so is the digest a
    checkpoint takes of its plain form; none of them keeps a retired item alive."""
    import gc
    import weakref

    from ctxflow.layers import _DIGESTS, _PLAINS, memory_digest
    from ctxflow.persistence._manifest import _SEALED

    item = Episode(id="ep_gone", summary="a merged episode " * 100, step=3)
    state = LayeredState()
    state = attrs.evolve(state, memory=attrs.evolve(state.memory, episodic=(item,)))
    plain = state.to_plain()["memory"]["episodic"][0]
    assert memory_digest(item) == memory_digest(item)
    digest = _SEALED(plain)
    assert _SEALED(plain) == digest and _SEALED.holds(plain)
    item_id, plain_id = id(item), id(plain)
    watched, watched_plain = weakref.ref(item), weakref.ref(plain)
    assert _DIGESTS.holds(item) and _PLAINS.holds(item)
    del item, plain, state
    gc.collect()
    assert watched() is None and watched_plain() is None
    assert item_id not in _DIGESTS._kept and item_id not in _PLAINS._kept
    assert plain_id not in _SEALED._kept
