"""Capture and restore: equal conversations, state and chart; deltas cost what changed."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxflow.errors import CheckpointError, CheckpointNotFound
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, Role, ToolResultBlock, Transcript
from ctxflow.persistence import Checkpointer, restore
from ctxflow.stores import MemoryStore, SQLiteStore, ThreadedAsyncStore
from ctxflow.testing import CountingMeasure, FixedCounter, concatenate
from ctxflow.tokens import TiktokenCounter, message_measure

CHART = {"configuration": ["paused"], "history": {"paused.h": ["execution"]}}


def _overlay_for(message: Message) -> Message | None:
    if message.role is Role.SYSTEM or message.tool_uses:
        return None
    if message.tool_results:
        blocks = tuple(
            attrs.evolve(b, content="[cleared]") if isinstance(b, ToolResultBlock) else b
            for b in message.content
        )
        return attrs.evolve(message, content=blocks)
    return Message(role=message.role, content="[trimmed]", id=message.id)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_round_trip_of_corpus_with_random_tags(
    transcripts: list[Transcript], data: st.DataObject
) -> None:
    """A corpus conversation with random summaries, truncations and overlays restores equal."""
    transcript = data.draw(st.sampled_from(transcripts))
    messages = list(transcript.messages)
    conversation = Conversation(messages)
    store = MemoryStore()
    writer = Checkpointer(
        store,
        full_every=data.draw(st.integers(1, 4)),
        full_ratio=data.draw(st.sampled_from([0, 1])),
    )
    writer.capture(conversation, state={"k": 1}, chart=CHART, phase="planning")
    movable = [m.id for m in messages if m.role is not Role.SYSTEM]
    if len(movable) >= 2:
        start = data.draw(st.integers(0, len(movable) - 2))
        end = data.draw(st.integers(start + 1, min(len(movable), start + 6)))
        conversation.add_summary(Message.user("summary", id="sum-1"), movable[start:end])
        writer.capture(conversation, state={"k": 2}, chart=CHART, phase="execution")
    rest = [i for i in movable if not conversation.original(i).hidden]
    for message_id in (
        data.draw(st.lists(st.sampled_from(rest), max_size=3, unique=True)) if rest else []
    ):
        conversation.hide([message_id], truncation_parent="trunc-1")
    for message_id in data.draw(st.lists(st.sampled_from(movable), max_size=4, unique=True)):
        overlay = _overlay_for(conversation.original(message_id))
        if overlay is not None:
            conversation.set_overlay(message_id, overlay)
    writer.capture(conversation, state={"k": 3}, chart=CHART, phase="reflection")
    restored = restore(store, writer.session_id)
    assert restored.conversation.messages == conversation.messages
    assert restored.conversation.overlays == conversation.overlays
    assert restored.conversation.effective() == conversation.effective()
    assert restored.state == {"k": 3}
    assert restored.chart == CHART
    assert restored.record.phase == "reflection"


def test_layered_state_round_trip(tmp_path: Path) -> None:
    """A LayeredState's plain form comes back equal and rebuilds the same state."""
    state = LayeredState().with_fact("lang", "python").with_runtime(phase="execution", step=3)
    with SQLiteStore(tmp_path / "s.db") as store:
        writer = Checkpointer(store)
        writer.capture(Conversation([Message.user("hi", id="u1")]), state=state.to_plain())
        restored = restore(store, writer.session_id)
    assert LayeredState.from_plain(restored.state) == state


def test_one_more_turn_costs_one_turn(transcripts: list[Transcript]) -> None:
    """After a long history, a checkpoint's added bytes are about one message, not the history."""
    messages = concatenate(transcripts, 300)
    store = MemoryStore()
    writer = Checkpointer(store, full_every=1000)
    conversation = Conversation(messages[:-1])
    first = writer.capture(conversation)
    conversation.append(messages[-1])
    second = writer.capture(conversation)
    one = len(store.codec.encode({"m": messages[-1].text})) + 400
    assert not second.full
    assert second.size < one
    assert second.size * 50 < first.size


def test_retag_only_costs_tags() -> None:
    """Hiding messages writes a delta with the tags and no bodies."""
    store = MemoryStore()
    writer = Checkpointer(store)
    conversation = Conversation(
        [
            Message.user(f"turn {i} " * 50, id=f"m{i}")
            if i % 2 == 0
            else Message.assistant(f"ok {i} " * 50, id=f"m{i}")
            for i in range(40)
        ]
    )
    writer.capture(conversation)
    before = store.size
    conversation.hide([f"m{i}" for i in range(10)], truncation_parent="t1")
    record = writer.capture(conversation)
    assert store.size - before == record.size < 400
    assert restore(store, writer.session_id).conversation.effective() == conversation.effective()


def test_restore_uses_given_measure() -> None:
    """A restored conversation counts tokens with the measure it is given."""
    store = MemoryStore()
    writer = Checkpointer(store)
    writer.capture(Conversation([Message.user("x" * 400, id="u1")]))
    measure = message_measure(FixedCounter(), overhead=4)
    restored = restore(store, writer.session_id, measure=measure)
    assert restored.conversation.total_tokens == 104


def test_non_extension_writes_full_manifest() -> None:
    """A conversation that does not extend the last checkpoint is written in full."""
    store = MemoryStore()
    writer = Checkpointer(store)
    writer.capture(Conversation([Message.user("a", id="a1")]))
    record = writer.capture(Conversation([Message.user("b", id="b1")]))
    assert record.full
    assert [m.id for m in restore(store, writer.session_id).conversation] == ["b1"]


def test_bad_state_is_refused_before_writing() -> None:
    """A state that is not a mapping, or not plain, raises before anything is stored."""
    store = MemoryStore()
    writer = Checkpointer(store)
    conversation = Conversation([Message.user("a", id="a1")])
    with pytest.raises(CheckpointError):
        writer.capture(conversation, state=["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="plain"):
        writer.capture(conversation, state={"x": object()})
    assert store.sessions() == []
    with pytest.raises(CheckpointNotFound):
        writer.restore()
    with pytest.raises(CheckpointError):
        Checkpointer(store, full_every=0)


def test_session_ids_are_unguessable() -> None:
    """Generated session ids carry 128 random bits and never repeat."""
    ids = {Checkpointer(MemoryStore()).session_id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 4 + 22 for i in ids)


def test_async_wrapper(tmp_path: Path) -> None:
    """The thread-offload async store runs the same operations."""

    async def scenario() -> None:
        sync = SQLiteStore(tmp_path / "a.db")
        store = ThreadedAsyncStore(sync)
        writer = Checkpointer(sync)
        writer.capture(Conversation([Message.user("a", id="a1")]))
        latest = await store.latest(writer.session_id)
        snapshot = await store.load(writer.session_id)
        assert snapshot.record == latest
        assert await store.sessions() == [writer.session_id]
        forked = await store.fork(writer.session_id, latest.id)
        assert len(await store.checkpoints(forked.session_id)) == 1
        assert await store.prune(writer.session_id, keep_last=1) == []
        await store.erase(forked.session_id)
        await store.close()

    asyncio.run(scenario())


def test_full_manifests_stay_linear() -> None:
    """Over a long session full manifests are spaced out so their total stays linear."""
    store = MemoryStore()
    writer = Checkpointer(store, full_every=16)
    conversation = Conversation()
    for i in range(600):
        role = Message.user if i % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {i}", id=f"m{i}"))
        writer.capture(conversation)
    records = store.checkpoints(writer.session_id)
    fulls = [r for r in records if r.full]
    assert 4 <= len(fulls) <= 12
    gaps = [b.seq - a.seq for a, b in itertools.pairwise(fulls)]
    assert min(gaps) >= 16
    assert gaps == sorted(gaps)
    snapshot = store.load(writer.session_id)
    assert snapshot.depth <= 600 // 2 + 16
    assert len(restore(store, writer.session_id).conversation) == 600


def _counts(conversation: Conversation) -> list[tuple[str, int, int]]:
    return [
        (m.id, conversation.original_tokens(m.id), conversation.tokens(m.id)) for m in conversation
    ]


def test_stored_counts_are_reused_by_the_same_measure(transcripts: list[Transcript]) -> None:
    """A restore with the capturing measure's key takes the stored counts and counts nothing."""
    measure = CountingMeasure()
    conversation = Conversation(concatenate(transcripts, 60), measure=measure)
    store = MemoryStore()
    writer = Checkpointer(store, full_every=3, full_ratio=0, measure=measure)
    marks = []
    for step in range(4):
        messages = [m for m in conversation if not m.tool_uses and not m.tool_results]
        target = messages[step * 3 + 1]
        conversation.set_overlay(target.id, attrs.evolve(target, content="[trimmed]"))
        conversation.add_summary(Message.user(f"summary {step}", id=f"s{step}"), [target.id])
        writer.capture(conversation, state={"step": step})
        marks.append((store.latest(writer.session_id).id, _counts(conversation)))
    measure.calls = 0
    for checkpoint_id, expected in marks:
        again = restore(store, writer.session_id, checkpoint_id, measure=measure).conversation
        assert _counts(again) == expected
    assert measure.calls == 0
    latest = restore(store, writer.session_id, measure=measure).conversation
    assert latest.effective_tokens == conversation.effective_tokens
    assert latest.total_tokens == conversation.total_tokens


def test_another_measure_counts_afresh() -> None:
    """A restore with a measure of another key, or none, counts every message itself."""
    measure = CountingMeasure()
    conversation = Conversation([Message.user("x" * 400, id="u1")], measure=measure)
    store = MemoryStore()
    Checkpointer(store, "s", measure=measure).capture(conversation)
    other = CountingMeasure(key="test/other")
    restored = restore(store, "s", measure=other).conversation
    assert other.calls == 1
    assert restored.total_tokens == conversation.total_tokens
    fixed = message_measure(FixedCounter(), overhead=4)
    assert restore(store, "s", measure=fixed).conversation.total_tokens == 104


def test_measure_change_writes_counts_in_full() -> None:
    """A session written without counts, continued with a keyed measure, stores them in full."""
    store = MemoryStore()
    conversation = Conversation([Message.user("hello there", id="u1")])
    Checkpointer(store, "s").capture(conversation)
    measure = CountingMeasure()
    writer = Checkpointer(store, "s", measure=measure)
    resumed = writer.restore().conversation
    resumed.append(Message.assistant("hi", id="a1"))
    record = writer.capture(resumed)
    assert record.full
    snapshot = store.load("s")
    assert snapshot.manifest.measure == measure.key
    assert snapshot.manifest.counts == [
        resumed.original_tokens("u1"),
        resumed.original_tokens("a1"),
    ]
    resumed.append(Message.user("more", id="u2"))
    assert not writer.capture(resumed).full


def test_cl100k_restore_takes_stored_counts(tmp_path: Path, transcripts: list[Transcript]) -> None:
    """Counts stored by the tiktoken measure restore equal to counting with it again."""
    measure = message_measure(TiktokenCounter("cl100k_base"))
    conversation = Conversation(concatenate(transcripts, 40), measure=measure)
    with SQLiteStore(tmp_path / "t.db") as store:
        writer = Checkpointer(store, measure=measure)
        writer.capture(conversation)
        counted = restore(store, writer.session_id, measure=measure).conversation
    fresh = Conversation(list(conversation), measure=measure)
    assert _counts(counted) == _counts(fresh) == _counts(conversation)


def test_counts_are_stored_under_the_conversations_own_measure() -> None:
    """A checkpointer told another measure still labels the counts with the conversation's."""
    counting = CountingMeasure(key="test/counting")
    told = CountingMeasure(key="test/told")
    conversation = Conversation([Message.user("x" * 400, id="u1")], measure=counting)
    store = MemoryStore()
    Checkpointer(store, "s", measure=told).capture(conversation)
    assert store.load("s").manifest.measure == "test/counting"
    counting.calls = 0
    assert restore(store, "s", measure=counting).conversation.total_tokens == (
        conversation.total_tokens
    )
    assert counting.calls == 0
    restore(store, "s", measure=told)
    assert told.calls == 1
