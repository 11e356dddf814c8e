"""A checkpoint writer follows the conversation's change journal: its deltas cost the
change, and every checkpoint restores what a writer comparing the whole log writes."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.model import Conversation, Message, Role, ToolResultBlock
from ctxflow.model import _conversation as conversation_module
from ctxflow.persistence import Checkpointer, MemoryStore, restore
from ctxflow.testing import FixedCounter
from ctxflow.tokens import message_measure

OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "hide", "unhide", "overlay", "lift", "summary", "capture"]),
        st.integers(0, 10_000),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=40,
)


def _overlay(message: Message) -> Message:
    if message.tool_results:
        blocks = tuple(
            attrs.evolve(b, content="[cleared]") if isinstance(b, ToolResultBlock) else b
            for b in message.content
        )
        return attrs.evolve(message, content=blocks)
    return Message(role=message.role, content=f"[trimmed {len(message.text)}]", id=message.id)


def _apply(conversation: Conversation, op: str, pick: int, width: int, n: int) -> None:
    size = len(conversation)
    if op == "append" or size < 2:
        role = Message.user if size % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {size} " + "word " * (pick % 30), id=f"m{n}"))
        return
    start = pick % size
    ids = [m.id for m in conversation.messages[start : start + width]]
    if op == "hide":
        conversation.hide(ids, truncation_parent=f"t{pick}")
    elif op == "unhide":
        conversation.unhide(ids)
    elif op == "overlay":
        conversation.set_overlays({i: _overlay(conversation.original(i)) for i in ids})
    elif op == "lift":
        conversation.remove_overlays(i for i in ids if conversation.overlay(i) is not None)
    elif op == "summary":
        movable = [i for i in ids if not conversation.original(i).hidden]
        if movable:
            conversation.add_summary(Message.user(f"summary {n}", id=f"s{n}"), movable)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, measured=st.booleans())
def test_followed_deltas_restore_what_comparison_writes(
    ops: list[tuple[str, int, int]], measured: bool
) -> None:
    """After every capture, the followed session and a compared one restore equal."""
    measure = message_measure(FixedCounter(), overhead=4) if measured else None
    conversation = Conversation([Message.user("task", id="m0")], measure=measure)
    followed, compared = MemoryStore(), MemoryStore()
    writer = Checkpointer(followed, "s", full_every=1000, measure=measure)
    for n, (op, pick, width) in enumerate(ops, 1):
        if op != "capture":
            _apply(conversation, op, pick, width, n)
            continue
        writer.capture(conversation, state={"n": n})
        Checkpointer(compared, "s", measure=measure).capture(conversation, state={"n": n})
        ours = restore(followed, "s", measure=measure)
        theirs = restore(compared, "s", measure=measure)
        compared.erase("s")
        assert ours.conversation.messages == theirs.conversation.messages == conversation.messages
        assert ours.conversation.overlays == theirs.conversation.overlays == conversation.overlays
        assert ours.conversation.effective() == conversation.effective()
        assert ours.conversation.effective_counts() == conversation.effective_counts()
        assert ours.state == {"n": n}


def test_a_retag_is_found_without_comparing_the_log() -> None:
    """A delta after a retag names the changed tags only, found from the journal."""
    store = MemoryStore()
    conversation = Conversation(
        [
            Message(role=Role.USER if i % 2 == 0 else Role.ASSISTANT, content=f"t{i}", id=f"m{i}")
            for i in range(2000)
        ]
    )
    writer = Checkpointer(store, "s", full_every=1000)
    writer.capture(conversation)
    mark = conversation.change_mark
    conversation.hide(["m10", "m11"], truncation_parent="t")
    assert conversation.changes_since(mark) == [10, 11]
    record = writer.capture(conversation)
    assert not record.full
    with store._transaction(write=False):
        delta = store._manifests([record.id])[0]
    assert delta["tags"] == {"m10": [None, "t"], "m11": [None, "t"]}
    assert delta["hashes"] == b""
    assert restore(store, "s").conversation.effective() == conversation.effective()


def test_the_journal_forgets_marks_far_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mark the trimmed journal no longer reaches gives None (the writer compares)."""
    monkeypatch.setattr(conversation_module, "JOURNAL_SIZE", 64)
    conversation = Conversation([Message.user("a", id="a"), Message.assistant("b", id="b")])
    mark = conversation.change_mark
    for _ in range(100):
        conversation.hide(["a"], truncation_parent="t")
        conversation.unhide(["a"])
    assert conversation.changes_since(mark) is None
    assert conversation.changes_since(conversation.change_mark) == []
    assert conversation.changes_since(conversation.change_mark + 1) is None


def test_a_writer_behind_the_journal_compares_and_writes_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the journal was trimmed past the writer's mark, the capture compares in full."""
    monkeypatch.setattr(conversation_module, "JOURNAL_SIZE", 8)
    conversation = Conversation(
        [
            Message.user(f"u{i}", id=f"m{i}")
            if i % 2 == 0
            else Message.assistant(f"a{i}", id=f"m{i}")
            for i in range(40)
        ]
    )
    store = MemoryStore()
    writer = Checkpointer(store, "s", full_every=1000)
    writer.capture(conversation)
    mark = conversation.change_mark
    for i in range(0, 30, 2):
        conversation.hide([f"m{i}", f"m{i + 1}"], truncation_parent=f"t{i}")
    assert conversation.changes_since(mark) is None
    record = writer.capture(conversation)
    assert not record.full
    restored = restore(store, "s").conversation
    assert restored.messages == conversation.messages
    assert restored.effective() == conversation.effective()
