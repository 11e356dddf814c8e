"""Conversation.lazy: hidden messages left unbuilt until read, the rest as an eager log."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from ctxflow.errors import InvalidMessage
from ctxflow.model import (
    Conversation,
    Facts,
    IndexFacts,
    Message,
    OverlayPlaceholder,
    Placeholder,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    facts_of,
)


class Bodies:
    """A source serving the messages it was given, by key, counting its reads."""

    def __init__(self, messages: dict[str, Message]) -> None:
        self.messages = messages
        self.reads = 0

    def fetch(self, wanted: Sequence[Placeholder]) -> list[Message]:
        self.reads += 1
        return [self.messages[p.key] for p in wanted]


def _round(step: int) -> list[Message]:
    call = Message(
        role=Role.ASSISTANT,
        id=f"a{step}",
        content=(
            TextBlock(text=f"step {step}"),
            ToolUseBlock(id=f"c{step}", name="read", input={}),
        ),
    )
    result = Message(
        role=Role.USER,
        id=f"r{step}",
        content=(ToolResultBlock(tool_use_id=f"c{step}", content="x" * (step + 1)),),
    )
    return [call, result]


def _eager() -> Conversation:
    """Twelve rounds: the first four condensed by a summary, the next four truncated
    (one of them overlaid), the last four shown (one overlaid)."""
    conversation = Conversation([Message.user("Fix the parser.", id="task")])
    for step in range(12):
        conversation.extend(_round(step))
    cut = ToolResultBlock(tool_use_id="c5", content="[cut]")
    conversation.set_overlay("r5", conversation.original("r5").with_content((cut,)))
    shown = ToolResultBlock(tool_use_id="c10", content="[short]")
    conversation.set_overlay("r10", conversation.original("r10").with_content((shown,)))
    spans = [f"{k}{s}" for s in range(4) for k in "ar"]
    conversation.add_summary(Message.assistant("rounds 0-3 read files", id="sum"), spans)
    conversation.apply(hidden={f"{k}{s}": "trim" for s in range(4, 8) for k in "ar"})
    return conversation


def _lazy(
    eager: Conversation, *, overlays_stored: bool = True
) -> tuple[Conversation, Bodies, list[IndexFacts | None]]:
    """``eager`` rebuilt with every hidden message left unbuilt (its overlays too)."""
    log = list(eager.messages)
    source = Bodies({f"k{at}": m for at, m in enumerate(log)})
    held: list[Message | None] = [None if m.hidden else m for m in log]
    facts: list[IndexFacts | None] = [facts_of(m) for m in log]
    tags = {m.id: (m.condense_parent, m.truncation_parent) for m in log if m.hidden}
    overlays: dict[str, Message | str] = dict(eager.overlays)
    if overlays_stored:
        for message_id in overlays:
            if eager.original(message_id).hidden:
                source.messages[f"o{message_id}"] = eager.overlays[message_id]
                overlays[message_id] = f"o{message_id}"
    lazy = Conversation.lazy(
        held,
        facts=facts,
        keys=[f"k{at}" for at in range(len(log))],
        tags=tags,
        source=source,
        counts=eager.log_counts(),
        overlays=overlays,
        overlay_counts={i: eager.tokens(i) for i in overlays},
    )
    return lazy, source, facts


def test_a_lazy_conversation_reads_as_the_eager_one_and_builds_nothing_to_do_so() -> None:
    eager = _eager()
    lazy, source, _ = _lazy(eager)
    hidden = [at for at, m in enumerate(eager.messages) if m.hidden]
    assert hidden and not any(lazy.is_built(at) for at in hidden)
    assert lazy.effective() == eager.effective()
    assert lazy.effective_counts() == eager.effective_counts()
    assert lazy.effective_tokens == eager.effective_tokens
    assert lazy.total_tokens == eager.total_tokens
    assert list(lazy.pairs()) == list(eager.pairs())
    assert lazy.valid_for("openai") == eager.valid_for("openai")
    assert lazy.tokens("r5") == eager.tokens("r5") and lazy.index_of("a2") == eager.index_of("a2")
    assert "a2" in lazy and "nope" not in lazy
    assert [m.id for m in lazy.summaries()] == ["sum"]
    unbuilt = [at for at in hidden if not lazy.is_built(at)]
    assert unbuilt == hidden and source.reads == 0
    assert [lazy.log_as_built()[at] for at in hidden] == [None] * len(hidden)


def test_reading_a_position_builds_its_placeholder_alone() -> None:
    eager = _eager()
    lazy, source, facts = _lazy(eager)
    at = eager.index_of("a5")
    one = lazy.at(at)
    assert type(one) is Placeholder and not one.loaded
    assert lazy.is_built(at) and not lazy.is_built(at + 1)
    assert facts[at] is one  # the caller's facts list holds the placeholder now
    assert lazy.original("a5") is one and lazy.history[at] is one
    assert (one.truncation_parent, one.condense_parent) == ("trim", None)
    assert source.reads == 0
    assert one.content == eager.original("a5").content and source.reads == 1
    assert lazy.since(len(lazy) - 2) == eager.since(len(eager) - 2)


def test_iterating_builds_as_it_goes_and_the_whole_log_equals_the_eager_one() -> None:
    eager = _eager()
    lazy, _, facts = _lazy(eager)
    first = next(iter(lazy))
    assert first.id == "task" and not lazy.is_built(eager.index_of("a0"))
    assert [m.id for m in lazy.history[1:3]] == ["a0", "r0"]
    assert lazy.is_built(1) and not lazy.is_built(3)
    assert list(lazy) == list(eager.messages)
    assert all(map(lazy.is_built, range(len(lazy))))
    hidden = [f for f, m in zip(facts, eager.messages, strict=True) if m.hidden]
    assert hidden and all(type(f) is Placeholder for f in hidden)
    assert lazy.messages == eager.messages


def test_changes_after_a_lazy_build_match_the_eager_ones() -> None:
    eager = _eager()
    lazy, _, _ = _lazy(eager)
    for conversation in (eager, lazy):
        conversation.extend(_round(20))
        conversation.unhide(["a6", "r6"])
        conversation.remove_overlay("r5")
        summary = Message.assistant("rounds 8-9", id="sum2")
        conversation.add_summary(summary, ["a8", "r8", "a9", "r9"])
    assert lazy.effective() == eager.effective()
    assert lazy.effective_counts() == eager.effective_counts()
    assert lazy.check(api="anthropic") == eager.check(api="anthropic")
    assert not lazy.is_built(eager.index_of("a4"))


def test_overlays_left_in_the_store_are_read_on_first_use() -> None:
    eager = _eager()
    lazy, source, _ = _lazy(eager)
    assert lazy.overlays_as_built()["r5"] is None  # no object until asked for
    assert lazy.overlays_as_built()["r10"] == eager.overlay("r10")
    assert lazy.tokens("r5") == eager.tokens("r5")
    laid = lazy.overlay("r5")
    assert lazy.overlays_as_built()["r5"] is laid
    assert type(laid) is OverlayPlaceholder and not laid.loaded
    assert lazy.overlay("r10") == eager.overlay("r10")  # shown: given whole
    assert laid == eager.overlay("r5") and source.reads == 1
    plain, _, _ = _lazy(eager, overlays_stored=False)
    assert plain.overlays == eager.overlays


def test_a_lazy_conversation_whose_log_breaks_a_rule_is_refused_as_extend_refuses_it() -> None:
    eager = _eager()
    log = list(eager.messages)
    keys = [f"k{at}" for at in range(len(log))]
    source = Bodies(dict(zip(keys, log, strict=True)))
    tags = {m.id: (m.condense_parent, m.truncation_parent) for m in log if m.hidden}
    held: list[Message | None] = [None if m.hidden else m for m in log]
    counts = eager.log_counts()

    def lazy(facts: list[IndexFacts | None], **changed: object) -> Conversation:
        given: dict[str, object] = {
            "facts": facts,
            "keys": keys,
            "tags": tags,
            "source": source,
            "counts": counts,
        }
        given.update(changed)
        return Conversation.lazy(held, **given)  # type: ignore[arg-type]

    facts = [facts_of(m) for m in log]
    a1 = eager.index_of("a1")
    orphan = list(facts)
    orphan[a1] = Facts("a1", Role.ASSISTANT, (), (), False)  # r1 answers no call now
    with pytest.raises(InvalidMessage) as refused:
        lazy(orphan)
    assert refused.value.rule == "orphan_tool_result"
    assert refused.value.details["index"] == eager.index_of("r1")
    twice = list(facts)
    twice[a1] = Facts("a2", Role.ASSISTANT, (("c1", "read"),), (), False)
    with pytest.raises(InvalidMessage) as refused:
        lazy(twice, tags={**tags, "a2": (None, "trim")})
    assert refused.value.rule == "duplicate_message_id"
    assert refused.value.details["index"] == eager.index_of("a2")
    missing = list(facts)
    missing[a1] = None
    with pytest.raises(InvalidMessage) as refused:
        lazy(missing)
    assert refused.value.rule == "unbuilt" and refused.value.details["index"] == a1
    with pytest.raises(InvalidMessage) as refused:
        lazy(facts, tags={k: v for k, v in tags.items() if k != "a1"})
    assert refused.value.rule == "unbuilt"
    with pytest.raises(InvalidMessage) as refused:
        lazy(facts, keys=keys[:-1])
    assert refused.value.rule == "unbuilt"
    with pytest.raises(InvalidMessage) as refused:
        lazy(facts, overlays={"r10": "o10"})  # r10 is built: its overlay must be given
    assert refused.value.rule == "unbuilt_overlay"
    with pytest.raises(InvalidMessage) as refused:
        lazy(facts, overlays={"r5": 5})
    assert refused.value.rule == "not_a_message"
    with pytest.raises(InvalidMessage) as refused:
        lazy(facts, counts=counts[:-1])
    assert refused.value.rule == "counts"
    assert source.reads == 0


def test_a_message_shown_again_shows_the_overlay_left_in_the_store() -> None:
    eager = _eager()
    lazy, _, _ = _lazy(eager)
    for conversation in (eager, lazy):
        conversation.unhide(["a5", "r5"])
    assert lazy.effective() == eager.effective()
    assert lazy.get("r5") == eager.get("r5")
    assert lazy.get("r5").tool_results[0].content == "[cut]"
    assert lazy.effective_counts() == eager.effective_counts()
    again, _, _ = _lazy(_eager())
    again.remove_overlay("r5")  # an unbuilt overlay is lifted without being read
    assert again.overlay("r5") is None and "r5" not in again.overlays
    assert not again.is_built(eager.index_of("r5"))
