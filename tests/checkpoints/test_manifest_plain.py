"""Deltas composed and a full manifest extended at the plain level give what the
Manifest path gives: the same hashes, counts, index, tags, overlays and state."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.model import Conversation, Message, Role, ToolResultBlock, ToolUseBlock
from ctxflow.persistence import Checkpointer, MemoryStore
from ctxflow.persistence._manifest import Manifest, replay
from ctxflow.persistence._manifest_plain import compose_deltas, concat_index, extend_full
from ctxflow.testing import FixedCounter
from ctxflow.tokens import message_measure

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["append", "call", "hide", "unhide", "overlay", "lift", "summary", "capture"]
        ),
        st.integers(0, 10_000),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=50,
)


def _id(kind: str, n: int) -> str:
    return f"{kind}_{n:032x}"


def _apply(conversation: Conversation, op: str, pick: int, width: int, n: int) -> None:
    size = len(conversation)
    if op == "call":
        call = ToolUseBlock(id=f"call{n}", name=f"tool{pick % 3}", input={"n": n})
        result = ToolResultBlock(tool_use_id=f"call{n}", content="x" * (pick % 50))
        conversation.extend(
            [
                Message(role=Role.ASSISTANT, content=(call,), id=_id("msg", 2 * n)),
                Message(role=Role.USER, content=(result,), id=_id("res", 2 * n + 1)),
            ]
        )
        return
    if op == "append" or size < 2:
        role = Message.user if size % 2 == 0 else Message.assistant
        conversation.append(role(f"turn {size} " + "word " * (pick % 30), id=_id("msg", 2 * n)))
        return
    start = pick % size
    ids = [m.id for m in conversation.messages[start : start + width]]
    if op == "hide":
        conversation.hide(ids, truncation_parent=f"t{pick % 7}")
    elif op == "unhide":
        conversation.unhide(ids)
    elif op == "overlay":
        conversation.set_overlays(
            {i: attrs.evolve(conversation.original(i), metadata={"o": n}) for i in ids}
        )
    elif op == "lift":
        conversation.remove_overlays(i for i in ids if conversation.overlay(i) is not None)
    elif op == "summary":
        movable = [i for i in ids if not conversation.original(i).hidden]
        if movable:
            conversation.add_summary(Message.user(f"summary {n}", id=_id("sum", n)), movable)


def _records(store: MemoryStore, session: str) -> list[dict[str, Any]]:
    return [store.codec.decode(store._manifest[r.id]) for r in store._sessions[session]]


def _same(ours: Manifest, theirs: Manifest) -> None:
    assert ours == theirs
    assert ours.tags == theirs.tags
    assert ours.index == theirs.index
    assert ours.parts == theirs.parts and ours.skeleton == theirs.skeleton


@settings(max_examples=80, deadline=None)
@given(ops=OPS, measured=st.booleans())
def test_plain_extension_and_composition_match_the_manifest_path(
    ops: list[tuple[str, int, int]], measured: bool
) -> None:
    measure = message_measure(FixedCounter(), overhead=4) if measured else None
    conversation = Conversation([Message.user("task", id=_id("msg", 0))], measure=measure)
    store = MemoryStore()
    writer = Checkpointer(store, "s", full_every=10_000, full_ratio=1e9, measure=measure)
    writer.capture(conversation, state={"n": 0})
    for n, (op, pick, width) in enumerate(ops, 1):
        if op == "capture":
            writer.capture(conversation, state={"n": n, "memory": {"items": [n] * (pick % 3)}})
        else:
            _apply(conversation, op, pick, width, n)
    writer.capture(conversation, state={"n": "end"})
    records = _records(store, "s")
    full, deltas = records[0], records[1:]
    assert full["kind"] == "full" and all(d["kind"] == "delta" for d in deltas)
    expected = replay(records)
    for cut in sorted({0, 1, len(deltas) // 2, len(deltas)}):
        extended = extend_full(full, deltas[:cut])
        assert extended is not None
        _same(Manifest.from_plain(extended), replay([full, *deltas[:cut]]))
        composed = compose_deltas(deltas[cut:])
        assert composed is not None
        base = replay([full, *deltas[:cut]])
        base.apply(composed)
        _same(base, expected)


def test_ids_that_are_not_packed_take_the_manifest_path() -> None:
    index = {"ids": ["m1"], "roles": "u"}
    assert concat_index([(index, 1)]) is None
    conversation = Conversation([Message.user("a", id="m1")])
    store = MemoryStore()
    Checkpointer(store, "s").capture(conversation)
    assert extend_full(_records(store, "s")[0], []) is None
