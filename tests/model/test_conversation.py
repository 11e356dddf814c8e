"""Tests for the Conversation: append-only log, pair index, effective view, counts."""

from __future__ import annotations

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    SUMMARY_OF,
    Conversation,
    Message,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
)
from ctxflow.testing import CountingCounter, concatenate
from ctxflow.tokens import message_measure


def call(tool_id: str) -> Message:
    return Message(
        role="assistant", content=(ToolUseBlock(id=tool_id, name="bash", input={"c": 1}),)
    )


def result(tool_id: str, text: str = "ok") -> Message:
    return Message(role="user", content=(ToolResultBlock(tool_use_id=tool_id, content=text),))


def loop() -> Conversation:
    return Conversation(
        [Message.user("task", id="u0"), call("a"), result("a"), Message.assistant("done")]
    )


def test_append_indexes_pairs_and_counts() -> None:
    """Appending indexes each tool pair and caches each message's count."""
    conversation = loop()
    pair = conversation.pair("a")
    assert pair.name == "bash"
    assert conversation.original(pair.use_message).tool_uses[0].id == "a"
    assert pair.result_message is not None
    assert conversation.total_tokens == sum(conversation.tokens(m.id) for m in conversation)
    assert conversation.effective_tokens == conversation.total_tokens


def test_orphan_result_rejected_before_change() -> None:
    """A result answering no call raises and leaves the log unchanged."""
    conversation = loop()
    before = list(conversation)
    with pytest.raises(InvalidMessage, match="message 4") as info:
        conversation.append(result("nope"))
    assert info.value.rule == "orphan_tool_result"
    assert list(conversation) == before


def test_duplicates_rejected_atomically() -> None:
    """A batch with a duplicate id is refused whole."""
    conversation = loop()
    with pytest.raises(InvalidMessage) as info:
        conversation.extend([Message.user("x", id="new"), call("a")])
    assert info.value.rule == "duplicate_tool_use_id"
    assert "new" not in conversation
    with pytest.raises(InvalidMessage) as info:
        conversation.append(Message.user("again", id="u0"))
    assert info.value.rule == "duplicate_message_id"
    with pytest.raises(InvalidMessage) as info:
        conversation.extend([call("b"), result("b"), result("b")])
    assert info.value.rule == "duplicate_tool_result"


def test_system_only_first() -> None:
    """A system message after the first position is refused."""
    with pytest.raises(InvalidMessage) as info:
        Conversation([Message.user("x"), Message.system("s")])
    assert info.value.rule == "system_position"


def test_hide_and_unhide_keep_originals() -> None:
    """Hidden messages leave the effective view but stay fetchable; unhide restores them."""
    conversation = loop()
    ids = [m.id for m in conversation][1:3]
    conversation.hide(ids, truncation_parent="trunc-1")
    assert [m.id for m in conversation.effective()] == ["u0", conversation.messages[3].id]
    assert conversation.original(ids[0]).truncation_parent == "trunc-1"
    assert len(conversation) == 4
    assert conversation.effective_tokens < conversation.total_tokens
    conversation.unhide(ids)
    assert len(conversation.effective()) == 4
    assert conversation.effective_tokens == conversation.total_tokens


def test_pinned_messages_cannot_be_hidden() -> None:
    """An important message refuses to be hidden or condensed."""
    conversation = Conversation([Message.user("keep me", important=True, id="p")])
    with pytest.raises(InvalidMessage) as info:
        conversation.hide(["p"], truncation_parent="t")
    assert info.value.rule == "pinned"
    with pytest.raises(InvalidMessage):
        conversation.add_summary(Message.user("s"), ["p"])
    assert conversation.effective()[0].id == "p"


def test_summary_stands_where_its_span_began() -> None:
    """A summary replaces its span in place; the covered originals are recoverable."""
    conversation = loop()
    conversation.append(Message.user("next"))
    span = [m.id for m in conversation.messages[1:4]]
    summary = conversation.add_summary(Message.assistant("[summary] ran bash"), span)
    view = [m.id for m in conversation.effective()]
    assert view == ["u0", summary.id, conversation.messages[4].id]
    assert [m.id for m in conversation.covered_by(summary.id)] == span
    assert conversation.original(summary.id).metadata[SUMMARY_OF] == span
    assert conversation.summaries()[0].id == summary.id


def test_overlay_replaces_view_only() -> None:
    """An overlay changes what the view shows, not the stored original."""
    conversation = loop()
    result_id = conversation.messages[2].id
    cleared = Message(
        role="user",
        id=result_id,
        content=(ToolResultBlock(tool_use_id="a", content="[cleared]"),),
    )
    conversation.set_overlay(result_id, cleared)
    assert conversation.get(result_id) == cleared
    assert conversation.original(result_id).tool_results[0].content == "ok"
    assert conversation.effective()[2] == cleared
    conversation.remove_overlay(result_id)
    assert conversation.effective()[2].tool_results[0].content == "ok"


def test_overlay_must_keep_pairs() -> None:
    """An overlay that changes tool ids is refused."""
    conversation = loop()
    result_id = conversation.messages[2].id
    with pytest.raises(InvalidMessage) as info:
        conversation.set_overlay(result_id, Message.user("x", id=result_id))
    assert info.value.rule == "overlay_pairs"


def test_unknown_ids_are_typed_errors() -> None:
    """Asking for an unknown message or tool id is an InvalidMessage."""
    conversation = loop()
    with pytest.raises(InvalidMessage):
        conversation.original("nope")
    with pytest.raises(InvalidMessage):
        conversation.pair("nope")


@pytest.mark.corpus
def test_each_message_tokenized_exactly_once(corpus: list[Transcript]) -> None:
    """Appending 10,000 messages counts every text once, and building views counts nothing."""
    messages = concatenate(corpus, 10_000)
    counter = CountingCounter()
    conversation = Conversation(measure=message_measure(counter))
    for message in messages:
        conversation.append(message)
    expected = sum(
        len(m.content) + sum(isinstance(b, ToolUseBlock) for b in m.content) for m in messages
    )
    assert counter.calls == expected
    conversation.effective()
    _ = conversation.effective_tokens
    assert counter.calls == expected
    assert len(conversation) == 10_000


def test_given_counts_are_taken_instead_of_measuring() -> None:
    """Counts handed to the constructor are cached as they are; the measure is not called."""
    calls: list[str] = []

    def measure(message: Message) -> int:
        calls.append(message.id)
        return 1

    messages = list(loop())
    conversation = Conversation(messages, measure=measure, counts=[5, 6, 7, 8])
    assert calls == []
    assert [conversation.tokens(m.id) for m in messages] == [5, 6, 7, 8]
    assert conversation.effective_tokens == conversation.total_tokens == 26


@pytest.mark.parametrize("counts", [[1, 2, 3], [1, 2, 3, -1], [1, 2, 3, True], [1, 2, 3, 4.0]])
def test_bad_counts_are_refused_before_any_change(counts: list[object]) -> None:
    """Too few counts, a negative one or a non-integer raise InvalidMessage and add nothing."""
    conversation = loop()
    before = list(conversation)
    more = [Message.user("next", id="n1"), Message.assistant("ok", id="n2")]
    with pytest.raises(InvalidMessage) as caught:
        conversation.extend(
            [*more, Message.user("again", id="n3"), Message.assistant("b")], counts=counts
        )  # type: ignore[arg-type]
    assert caught.value.rule == "counts"
    assert list(conversation) == before


def test_a_batch_reports_its_first_error_whichever_part_owns_it() -> None:
    """A broken pair before a duplicate id is reported first, and a duplicate id before one."""
    conversation = loop()
    with pytest.raises(InvalidMessage) as caught:
        conversation.extend([result("nope"), Message.user("again", id="u0")])
    assert (caught.value.rule, caught.value.details["index"]) == ("orphan_tool_result", 4)
    with pytest.raises(InvalidMessage) as caught:
        conversation.extend([Message.user("again", id="u0"), result("nope")])
    assert (caught.value.rule, caught.value.details["index"]) == ("duplicate_message_id", 4)
    assert len(conversation) == 4


def test_the_conversation_is_one_class_at_both_addresses() -> None:
    """ctxflow.model.Conversation is the class of ctxflow.model._conversation."""
    from ctxflow.model import _conversation as module

    assert module.Conversation is Conversation
    assert module.SUMMARY_OF == SUMMARY_OF


def test_hide_refuses_bad_tags_before_tagging_anything() -> None:
    """hide with both tags, neither, or a condense parent that is no summary is a typed error,
    and the conversation is as it was (the view still builds)."""
    conversation = Conversation([Message.user("a", id="u1"), Message.assistant("b", id="a1")])
    with pytest.raises(InvalidMessage, match="exactly one"):
        conversation.hide(["u1"])
    with pytest.raises(InvalidMessage, match="exactly one"):
        conversation.hide(["u1"], condense_parent="s", truncation_parent="t")
    with pytest.raises(InvalidMessage, match="must name a summary") as caught:
        conversation.hide(["u1"], condense_parent="nowhere")
    assert caught.value.rule == "condense_parent"
    with pytest.raises(InvalidMessage, match="must name a summary"):
        conversation.hide(["u1"], condense_parent="a1")  # a message, but not a summary
    assert [m.id for m in conversation.effective()] == ["u1", "a1"]
    assert not any(m.hidden for m in conversation)
