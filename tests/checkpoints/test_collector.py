"""A restore pauses automatic garbage collection while it rebuilds the conversation, and
leaves it as it found it: on after (even when the restore fails), off if it was off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ctxflow.errors import CheckpointNotFound
from ctxflow.model import Conversation, Message
from ctxflow.persistence import Checkpointer, MemoryStore, restore


@pytest.fixture
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def _store() -> MemoryStore:
    store = MemoryStore()
    conversation = Conversation([Message.user(f"q{i}", id=f"m{i}") for i in range(20)])
    Checkpointer(store, "s").capture(conversation)
    return store


@pytest.mark.usefixtures("collector_on")
def test_collection_is_paused_while_the_conversation_is_rebuilt() -> None:
    seen: list[bool] = []

    def measure(message: Message) -> int:  # called for every message: no stored counts
        seen.append(gc.isenabled())
        return len(message.text)

    got = restore(_store(), "s", measure=measure)
    assert len(got.conversation) == 20
    assert seen and not any(seen)
    assert gc.isenabled()
    seen.clear()
    Checkpointer(_store(), "s").restore(measure=measure)
    assert seen and not any(seen) and gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_the_collector_is_left_as_it_was() -> None:
    store = _store()
    with pytest.raises(CheckpointNotFound):
        restore(store, "missing")
    assert gc.isenabled()
    gc.disable()
    restore(store, "s")
    assert not gc.isenabled()


def _in_generation(generation: int, target: object) -> bool:
    return any(o is target for o in gc.get_objects(generation=generation))


@pytest.mark.usefixtures("collector_on")
def test_what_a_restore_built_goes_to_the_oldest_generation() -> None:
    """No young collection walks a restored conversation: it starts in the oldest
    generation, and the young ones are empty when the restore returns."""
    got = restore(_store(), "s")
    conversation, first = got.conversation, got.conversation.messages[0]
    assert _in_generation(2, conversation) and _in_generation(2, first)
    assert not _in_generation(0, conversation) and not _in_generation(1, conversation)
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("collector_on")
def test_objects_an_application_froze_stay_frozen() -> None:
    """With objects frozen by the application, a restore promotes nothing and unfreezes
    nothing."""
    store = _store()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        got = restore(store, "s")
        assert gc.get_freeze_count() == frozen
        assert not _in_generation(2, got.conversation)
    finally:
        gc.unfreeze()
