"""The engine on real checkpoint stores (memory and SQLite): restore, recover, policy triggers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctxflow import errors
from ctxflow.engine import StoreCheckpointer, load_chart
from ctxflow.model import Conversation, Message
from ctxflow.persistence import CheckpointPolicy
from ctxflow.stores import MemoryStore, SQLiteStore
from ctxflow.testing import CountingMeasure
from ctxflow.testing._engine import assert_transition
from ctxflow.tokens import HeuristicCounter
from tests.engine.conftest import Driver, ratio_allocator

Make = Callable[..., Driver]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A real store of each kind."""
    backend = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "c.db")
    yield backend
    backend.close()


def test_pause_checkpoint_restore_resume_through_a_store(make: Make, store: Any) -> None:
    """pause → checkpoint → a new engine on the same session restores → resume lands back."""
    d = make(store=store, allocator=ratio_allocator)
    for event in ("start", "plan_ready"):
        d.send(event, **({"task": "t"} if event == "start" else {}))
    d.engine.add_message(Message.user("working"))
    d.send("reflect")
    d.send("pause")
    checkpoint = d.engine.records[-1].checkpoint_id
    assert checkpoint is not None
    fresh = make(store=store, session_id=d.engine.session_id, allocator=ratio_allocator)
    fresh.restore(checkpoint)
    assert fresh.engine.phase == "paused"
    assert fresh.engine.history == {"resume_point": ["reflection"]}
    assert [m.text for m in fresh.engine.conversation.messages] == ["working"]
    assert fresh.engine.state == d.engine.state
    fresh.send("resume")
    assert_transition(fresh.engine, "resume", from_="paused", to="reflection", checkpoint=True)
    assert store.latest(d.engine.session_id).id == fresh.engine.records[-1].checkpoint_id


def test_recover_reads_an_older_checkpoint_and_keeps_writing(make: Make, store: Any) -> None:
    """recover restores the last good checkpoint and the session continues without a fork."""
    d = make(store=store)
    d.send("start", task="t")
    d.engine.add_message(Message.user("good"))
    d.send("plan_ready")
    good = d.engine.records[-1].checkpoint_id
    d.engine.add_message(Message.assistant("bad"))
    d.send("fail")
    d.send("recover")
    record = assert_transition(d.engine, "recover", from_="failed", to="planning", checkpoint=True)
    assert record.restored_from == good
    assert [m.text for m in d.engine.conversation.messages] == ["good"]
    assert store.latest(d.engine.session_id).id == record.checkpoint_id
    assert len(store.sessions()) == 1


def test_policy_triggers_checkpoints_on_steps(make: Make, store: Any) -> None:
    """The checkpoints package's policy adds a 'messages' checkpoint on a step."""
    d = make(store=store, checkpoint_policy=CheckpointPolicy(every_messages=2))
    d.send("start", task="t")
    d.send("plan_ready")
    d.engine.add_message(Message.user("one"))
    d.send("step")
    assert_transition(d.engine, "step", checkpoint=False)
    d.engine.add_message(Message.assistant("two"))
    d.send("step")
    record = assert_transition(d.engine, "step", checkpoint=True)
    assert record.checkpoint_trigger == "messages"
    kept = store.checkpoints(d.engine.session_id)
    assert [c.trigger for c in kept] == ["transition", "transition", "messages"]


def test_checkpoints_carry_the_engine_measure_counts(make: Make, store: Any) -> None:
    """An engine's checkpoints hold its measure's counts; a restored engine has them all."""
    d = make(store=store, counter=HeuristicCounter())
    d.send("start", task="t")
    d.engine.add_message(Message.user("some words to count " * 9))
    d.engine.add_message(Message.assistant("an answer"))
    d.send("plan_ready")
    checkpoint = d.engine.records[-1].checkpoint_id
    assert checkpoint is not None
    manifest = store.load(d.engine.session_id).manifest
    assert manifest.measure == d.engine.measure.key is not None
    conversation = d.engine.conversation
    assert manifest.counts == [conversation.original_tokens(m.id) for m in conversation]
    fresh = make(store=store, session_id=d.engine.session_id, counter=HeuristicCounter())
    fresh.restore(checkpoint)
    again = fresh.engine.conversation
    assert [again.tokens(m.id) for m in again] == [conversation.tokens(m.id) for m in conversation]


def test_store_and_checkpointer_are_exclusive(make: Make) -> None:
    """Giving both a store and a checkpointer is a PolicyError."""
    with pytest.raises(errors.PolicyError, match="not both"):
        make(store=MemoryStore(), checkpointer=StoreCheckpointer(MemoryStore()))


def test_memory_checkpoints_restore_the_counts_of_the_same_measure() -> None:
    """In-memory checkpoints give their counts back to the same measure; another recounts."""
    measure = CountingMeasure(key="test/a")
    conversation = Conversation(
        [Message.user("x " * 300, id="u1"), Message.assistant("ok", id="a1")], measure=measure
    )
    conversation.set_overlay("u1", Message.user("[short]", id="u1"))
    checkpoints = StoreCheckpointer(MemoryStore(), measure=measure)
    checkpoint = checkpoints.capture(
        conversation, state={}, chart={}, phase="execution", trigger="phase"
    ).id
    measure.calls = 0
    again = checkpoints.restore(checkpoint, measure=measure).conversation
    assert measure.calls == 0
    assert [again.tokens(m.id) for m in again] == [conversation.tokens(m.id) for m in conversation]
    assert again.get("u1").text == "[short]"
    other = CountingMeasure(key="test/b")
    checkpoints.restore(checkpoint, measure=other)
    assert other.calls == 3  # two messages and the overlay


def test_from_checkpoint_opens_the_latest_with_data_and_version(make: Make) -> None:
    """Without an id, from_checkpoint opens the session's latest checkpoint, data and version
    included, and the engine is not dirty (on both drivers)."""
    store = MemoryStore()
    d = make(store=store, data={"user": "ana"})
    d.send("start", task="t")
    d.engine.set_data("status", "planning")
    d.send("plan_ready")
    again = d.reopen(store=store, session_id=d.engine.session_id)
    assert again.engine.phase == "execution"
    assert dict(again.engine.data) == {"user": "ana", "status": "planning"}
    assert again.engine.version == d.engine.version and not again.engine.dirty
    assert again.engine.checkpoint_ids == [d.engine.checkpoint_ids[-1]]


def test_a_reopened_session_builds_its_machine_on_the_first_event(make: Make) -> None:
    """An engine opened from a checkpoint holds plain state ids until its first event, then
    the event lands where the checkpoint left the chart, history included."""
    store, chart = MemoryStore(), load_chart("agent_loop")  # one chart, as a manager shares it
    d = make(store=store, chart=chart)
    d.send("start", task="t")
    d.send("plan_ready")
    d.send("pause")
    again = d.reopen(store=store, session_id=d.engine.session_id, chart=chart)
    machine = again.engine._machine
    assert machine._machine is None  # reading and appending need no machine
    assert again.engine.phase == "paused"
    assert again.engine.history == {"resume_point": ["execution"]}
    again.send("resume")
    assert machine._machine is not None
    assert again.engine.phase == "execution"


def test_from_checkpoint_with_a_store_needs_the_session_id() -> None:
    """Opening a store's checkpoint without its session id is a typed error naming what is
    missing (not a random new session's id)."""
    from ctxflow.engine import Engine

    store = MemoryStore()
    engine = Engine(store=store)
    checkpoint = engine.checkpoint()
    with pytest.raises(errors.CheckpointError, match="needs the 'session_id'") as caught:
        Engine.from_checkpoint(checkpoint, store=store)
    assert caught.value.rule == "session_id_required"
    with pytest.raises(errors.CheckpointError, match="needs the 'session_id'"):
        Engine.from_checkpoint(store=store)
