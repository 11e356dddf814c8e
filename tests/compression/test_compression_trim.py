"""The trim rung on messages other than tool results: what it cuts, what it never touches."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from _builders import tool_loop

from ctxflow.compression import (
    OVERLAY_KIND,
    TRIMMED,
    Draft,
    Ladder,
    LadderPolicy,
    RungContext,
    Skip,
    TrimOversized,
    recall,
    undo,
)
from ctxflow.errors import BudgetExceeded, CtxflowWarning
from ctxflow.layers import LayeredState
from ctxflow.model import (
    Conversation,
    Message,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

#: The target is the whole budget, so trimming alone reaches it; a far hard limit never refuses.
LENIENT = LadderPolicy(threshold=1.0, target=1.0, hard_limit=1_000.0)
BIG = 54_000
MARKER = re.compile(
    r"\n\[… ([\d,]+) characters \(≈[\d,]+ tokens\) trimmed by ctxflow; ([^\]]*) …\]\n"
)


def _prose(size: int, word: str = "reasoning") -> str:
    return (f"{word} about the failing test; " * (size // 20 + 1))[:size]


def _oversized_loop(measure: Callable[[Message], int], *, at: int = 9) -> Conversation:
    """A 19-round tool loop whose round ``at`` assistant thinks, writes 54k characters, calls."""
    base = list(tool_loop([300] * 19, measure=measure))
    big = Message(
        role=Role.ASSISTANT,
        id=f"a{at}",
        content=(
            ThinkingBlock(thinking="The diff is long; explain it in full.", signature="sig-1"),
            TextBlock(text=_prose(BIG)),
            ToolUseBlock(id=f"t{at}", name="bash", input={"command": "pytest -x", "env": {"A": 1}}),
        ),
    )
    messages = [big if m.id == f"a{at}" else m for m in base]
    return Conversation(messages, measure=measure)


def _assert_valid(conversation: Conversation) -> None:
    for api in ("anthropic", "openai"):
        report = conversation.check(api=api)  # type: ignore[arg-type]
        assert report.ok, report.violations


def test_an_earlier_assistant_text_is_cut_in_the_middle_with_a_marker(
    measure: Callable[[Message], int],
) -> None:
    """A 54k-character assistant text keeps head and tail around a marker naming its id."""
    conversation = _oversized_loop(measure)
    original = conversation.original("a9")
    result = Ladder(policy=LENIENT, rungs=[TrimOversized()]).run(
        conversation, LayeredState(), budget=4_000, fixed=0
    )
    shown = conversation.get("a9")
    text = shown.content[1]
    assert isinstance(text, TextBlock)
    found = MARKER.search(text.text)
    assert found is not None
    assert found.group(2) == "recall the whole message by its id a9"
    head, tail = text.text[: found.start()], text.text[found.end() :]
    assert original.text.startswith(head) and original.text.endswith(tail)
    assert int(found.group(1).replace(",", "")) + len(head) + len(tail) == BIG
    assert shown.metadata[OVERLAY_KIND] == TRIMMED
    assert conversation.tokens("a9") <= 2_000
    assert result.report.rungs_used == ("trim",)
    assert "a9" in result.report.overlaid
    _assert_valid(conversation)


def test_thinking_and_tool_use_input_are_never_edited(measure: Callable[[Message], int]) -> None:
    """The trimmed message shows its thinking block and tool_use input exactly as written."""
    conversation = _oversized_loop(measure)
    original = conversation.original("a9")
    Ladder(policy=LENIENT, rungs=[TrimOversized()]).run(
        conversation, LayeredState(), budget=4_000, fixed=0
    )
    shown = conversation.get("a9")
    assert shown.content[0] == original.content[0]
    assert shown.content[2] == original.content[2]
    assert shown.tool_uses[0].input == {"command": "pytest -x", "env": {"A": 1}}


def test_recall_and_undo_give_the_trimmed_message_back(measure: Callable[[Message], int]) -> None:
    """Recall by id returns the original; undo by id, or of the run, shows it again."""
    conversation = _oversized_loop(measure)
    original = conversation.original("a9")
    ladder = Ladder(policy=LENIENT, rungs=[TrimOversized()])
    report = ladder.run(conversation, LayeredState(), budget=4_000, fixed=0).report
    assert recall(conversation, "a9") == original
    undo(conversation, "a9")
    assert conversation.get("a9").content == original.content
    ladder.run(conversation, LayeredState(), budget=4_000, fixed=0)
    assert conversation.get("a9").content != original.content
    undo(conversation, report)
    assert conversation.get("a9").content == original.content


def test_a_message_trimmed_again_is_cut_from_its_original(
    measure: Callable[[Message], int],
) -> None:
    """A second, tighter run shows one marker whose count is what the original lost."""
    conversation = _oversized_loop(measure)
    ladder = Ladder(policy=LENIENT, rungs=[TrimOversized()])
    ladder.run(conversation, LayeredState(), budget=4_000, fixed=0)
    first = conversation.tokens("a9")
    with pytest.warns(CtxflowWarning, match="above its target"):
        ladder.run(conversation, LayeredState(), budget=2_000, fixed=0)
    text = conversation.get("a9").content[1]
    assert isinstance(text, TextBlock)
    markers = list(MARKER.finditer(text.text))
    assert len(markers) == 1
    kept = len(text.text) - len(markers[0].group(0))
    assert int(markers[0].group(1).replace(",", "")) + kept == BIG
    assert conversation.tokens("a9") < first
    assert recall(conversation, "a9").text == _prose(BIG)


def test_the_latest_user_text_is_never_cut_but_an_earlier_one_is(
    measure: Callable[[Message], int],
) -> None:
    """Of two 40k-character user messages, the earlier is trimmed and the latest stays whole."""
    conversation = Conversation(
        [
            Message.system("You are a careful coding agent.", id="sys"),
            Message.user(_prose(40_000, "log"), id="req"),
            Message.assistant("Read it. What next?", id="a0"),
            Message.user(_prose(40_000, "spec"), id="ask"),
        ],
        measure=measure,
    )
    with pytest.warns(CtxflowWarning, match="above its target"):
        Ladder(policy=LENIENT, rungs=[TrimOversized()]).run(
            conversation, LayeredState(), budget=4_000, fixed=0
        )
    assert "recall the whole message by its id req" in conversation.get("req").text
    assert conversation.get("ask") == conversation.original("ask")


def test_the_latest_user_turn_keeps_its_text_while_its_results_are_cut(
    measure: Callable[[Message], int],
) -> None:
    """A result message that also carries the latest user text: the result is cut, the text not."""
    note = "Decision: keep the public API stable. " + _prose(8_000, "context")
    conversation = tool_loop([300, 60_000], measure=measure, extra_user_text={1: note})
    Ladder(policy=LENIENT, rungs=[TrimOversized()]).run(
        conversation, LayeredState(), budget=4_000, fixed=0
    )
    shown = conversation.get("r1")
    result, text = shown.content
    assert isinstance(result, ToolResultBlock) and isinstance(text, TextBlock)
    assert "recall the whole result by its call id" in result.text
    assert text.text == note


def test_pinned_messages_and_summaries_are_not_trimmed(measure: Callable[[Message], int]) -> None:
    """A pinned 54k-character assistant message and a long summary stay as written."""
    summary = Message(
        role=Role.USER,
        content=(TextBlock(text="[Summary of 4 earlier messages]\n" + _prose(20_000)),),
        id="sum",
        metadata={"ctxflow.kind": "summary"},
    )
    conversation = Conversation(
        [
            Message.system("You are a careful coding agent.", id="sys"),
            summary,
            Message.assistant(_prose(BIG), id="a0", important=True),
            Message.user("Go on.", id="u1"),
        ],
        measure=measure,
    )
    ctx = RungContext(target=1_000, hard_limit=2_000, budget=2_000, fixed=0, original_request=None)
    skipped = TrimOversized().propose(Draft.of(conversation), ctx)
    assert isinstance(skipped, Skip)
    assert skipped.reason == "no message that may be cut is over its share of 500 tokens"


def test_a_refusal_names_the_fixed_costs_and_the_latest_user_turn(
    measure: Callable[[Message], int],
) -> None:
    """When the latest user text alone is over the hard limit, the error says so with numbers."""
    conversation = Conversation(
        [*tool_loop([300] * 3, measure=measure), Message.user(_prose(40_000), id="ask")],
        measure=measure,
    )
    with pytest.raises(BudgetExceeded) as caught:
        Ladder().run(conversation, LayeredState(), budget=2_000, fixed=0)
    message = str(caught.value)
    assert message.startswith(
        "the fixed costs and the latest user turn must fit the hard limit of 2,000 tokens "
        "(fixed 0 + 1 x budget 2,000); they cannot be trimmed or hidden (got "
    )
    assert f"the latest user turn {conversation.tokens('ask'):,} (ask)" in message
    assert caught.value.rule == "hard_limit"
    assert not conversation.overlays
