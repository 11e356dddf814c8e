"""The ladder as a whole: thresholds, typed errors, summarizer failures, thrash, recall, undo."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import pytest
from _builders import chat, tool_loop

from ctxflow.compression import (
    Condense,
    Draft,
    HardReset,
    Ladder,
    LadderPolicy,
    LLMSummarizer,
    RungContext,
    Truncate,
    fixed_tokens,
    guard,
    undo,
)
from ctxflow.errors import (
    BudgetExceeded,
    CompressionError,
    CtxflowWarning,
    InvalidConversation,
    InvalidMessage,
    PolicyError,
)
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, Role, TextBlock, ToolResultBlock, ToolUseBlock


def _snapshot(conversation: Conversation) -> tuple[object, ...]:
    return (
        [m.id for m in conversation.effective()],
        [(m.id, m.condense_parent, m.truncation_parent) for m in conversation],
        conversation.overlays,
        len(conversation),
    )


class ScriptedClient:
    """An LLM client that answers each request with the next scripted body (or raises it)."""

    def __init__(self, *answers: Mapping[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[Mapping[str, Any]] = []

    def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """Record the request and return (or raise) the next answer."""
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class AsyncScriptedClient(ScriptedClient):
    """The async form of :class:`ScriptedClient`."""

    async def complete(self, request: Mapping[str, Any]) -> Mapping[str, Any]:  # type: ignore[override]
        """Record the request and return (or raise) the next answer."""
        return ScriptedClient.complete(self, request)


class EmptySummarizer:
    """A summarizer that returns nothing usable."""

    def __init__(self, output: object) -> None:
        self.output = output

    def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """Return the configured (bad) output."""
        return self.output  # type: ignore[return-value]


def _text(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"target": 0.0}, "target"),
        ({"target": 1.5}, "target_above_hard_limit"),
        ({"threshold": 0.4, "target": 0.5}, "threshold_below_target"),
        ({"hard_limit": float("nan")}, "hard_limit"),
        ({"thrash_window": -1}, "thrash_window"),
    ],
)
def test_unusable_policies_are_typed_errors(kwargs: dict[str, float], rule: str) -> None:
    """A zero target, a target above the hard limit or a threshold below target is refused."""
    with pytest.raises(PolicyError) as caught:
        LadderPolicy(**kwargs)
    assert caught.value.rule == rule


def test_bad_budgets_raise_before_any_change(measure: Callable[[Message], int]) -> None:
    """A zero or negative budget raises PolicyError and the conversation is unchanged."""
    conversation = tool_loop([2_000] * 5, measure=measure)
    before = _snapshot(conversation)
    for budget, fixed in ((0, 0), (-5, 0), (100, -1)):
        with pytest.raises(PolicyError):
            Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed)
    assert _snapshot(conversation) == before


def test_an_invalid_conversation_is_reported_not_repaired(
    measure: Callable[[Message], int],
) -> None:
    """Two user messages in a row raise InvalidConversation with the violations listed."""
    conversation = Conversation(
        [Message.user("a " * 500, id="u1"), Message.user("b " * 500, id="u2")], measure=measure
    )
    before = _snapshot(conversation)
    with pytest.raises(InvalidConversation) as caught:
        Ladder().run(conversation, LayeredState(), budget=10)
    assert caught.value.violations[0].rule == "role_alternation"
    assert _snapshot(conversation) == before


def test_above_the_hard_limit_raises_and_changes_nothing(
    measure: Callable[[Message], int],
) -> None:
    """A pinned result too big for the hard limit raises BudgetExceeded naming it, untouched."""
    conversation = tool_loop([400] * 6 + [20_000], measure=measure, pin_request=True)
    big = conversation.original("r6")
    messages = [attrs.evolve(m, important=True) if m is big else m for m in conversation]
    conversation = Conversation(messages, measure=measure)
    before = _snapshot(conversation)
    with pytest.raises(BudgetExceeded) as caught:
        Ladder().run(conversation, LayeredState(), budget=1_000, fixed=0)
    assert "r6" in str(caught.value) or "last turn" in str(caught.value)
    assert caught.value.rule == "hard_limit"
    assert _snapshot(conversation) == before
    assert not conversation.summaries()


def test_between_target_and_hard_limit_succeeds_with_a_warning(
    measure: Callable[[Message], int],
) -> None:
    """When only the hard limit is met the run succeeds, its report says so and it warns once."""
    conversation = tool_loop([40] * 3, measure=measure, request="x " * 400, pin_request=True)
    total = conversation.effective_tokens
    with pytest.warns(CtxflowWarning, match="above its target") as caught:
        result = Ladder().run(conversation, LayeredState(), budget=total - 10, fixed=0)
    report = result.report
    assert not report.reached_target
    assert report.tokens_after <= report.hard_limit
    assert any("above the target" in w for w in report.warnings)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert f"{report.tokens_after:,} tokens" in str(caught[0].message)
    assert f"hard limit of {report.hard_limit:,}" in str(caught[0].message)


def test_guard_fires_only_above_the_threshold(measure: Callable[[Message], int]) -> None:
    """The guard compares the effective tokens to fixed + threshold * budget."""
    conversation = tool_loop([400] * 4, measure=measure)
    tokens = conversation.effective_tokens
    assert guard(conversation, budget=tokens, fixed=0) is True
    assert guard(conversation, budget=tokens * 2, fixed=0) is False
    assert Ladder().guard(conversation, budget=tokens, fixed=tokens) is False
    assert fixed_tokens(conversation) == conversation.tokens("sys") + conversation.tokens("req")


def test_report_counts_and_prefix_invalidation(measure: Callable[[Message], int]) -> None:
    """The report gives tokens before and after, affected messages and the first changed index."""
    conversation = tool_loop([3_000] * 6, measure=measure)
    before = conversation.effective_tokens
    report = Ladder().run(conversation, LayeredState(), budget=before // 2, fixed=0).report
    assert report.tokens_before == before
    assert report.tokens_after == conversation.effective_tokens < before
    assert report.messages_affected > 0
    assert report.cache_invalidated
    assert report.first_changed_index is not None
    assert report.first_changed_index >= 2
    untouched = Ladder().run(conversation, LayeredState(), budget=before * 4, fixed=0).report
    assert not untouched.changed
    assert not untouched.cache_invalidated
    assert untouched.rungs_used == ()


def test_llm_summarizer_condenses_with_a_bounded_request(
    measure: Callable[[Message], int],
) -> None:
    """The LLM summary replaces the span; the request asks for a 70-90% reduction."""
    client = ScriptedClient(_text("Decisions: fly on May 3. Facts: booking ABC123."))
    conversation = chat(30, measure=measure)
    ladder = Ladder(
        summarizer=LLMSummarizer(client, max_input_tokens=500), rungs=[Condense(keep_recent=4)]
    )
    with pytest.warns(CtxflowWarning, match="above its target"):  # one rung stops short
        result = ladder.run(conversation, LayeredState(), budget=400, fixed=0)
    assert result.report.rungs_used == ("condense",)
    request = client.requests[0]
    assert "70-90%" in request["system"]
    assert len(request["messages"][0]["content"][0]["text"]) < 2_000
    assert "booking ABC123" in conversation.effective()[1].text
    assert result.state.memory.episodic[-1].summary.startswith("Decisions:")


@pytest.mark.parametrize(
    "answer",
    [TimeoutError("model timed out"), _text("   "), {"content": [{"type": "image"}]}, {"x": 1}],
)
def test_llm_failure_falls_through_to_the_next_rung(
    measure: Callable[[Message], int], answer: Mapping[str, Any] | Exception
) -> None:
    """A failing or empty LLM answer is recorded and the hard reset still compresses."""
    conversation = chat(20, measure=measure)
    ladder = Ladder(
        summarizer=LLMSummarizer(ScriptedClient(answer)),
        rungs=[Condense(keep_recent=4), HardReset()],
    )
    report = ladder.run(conversation, LayeredState(), budget=400, fixed=0).report
    assert report.rungs_used == ("reset",)
    assert report.outcomes[0].reason.startswith("summarizer failed")
    assert not conversation.summaries()


@pytest.mark.parametrize("output", ["", None, 42])
def test_a_summarizer_returning_nothing_usable_is_a_recorded_compression_error(
    measure: Callable[[Message], int], output: object
) -> None:
    """Empty or non-text summaries never reach the conversation."""
    conversation = chat(20, measure=measure)
    ladder = Ladder(
        policy=LadderPolicy(hard_limit=100.0),
        summarizer=EmptySummarizer(output),
        rungs=[Condense(keep_recent=4)],
    )
    with pytest.warns(CtxflowWarning, match="above its target"):
        report = ladder.run(conversation, LayeredState(), budget=400, fixed=0).report
    assert "summarizer failed" in report.outcomes[0].reason
    assert "summary must" in report.outcomes[0].reason
    assert not report.changed


def test_over_long_summary_is_skipped(measure: Callable[[Message], int]) -> None:
    """A summary longer than its limit is not used, and the report says why."""
    conversation = chat(20, measure=measure)
    ladder = Ladder(
        policy=LadderPolicy(hard_limit=100.0),
        summarizer=EmptySummarizer("word " * 5_000),
        rungs=[Condense(keep_recent=4)],
    )
    with pytest.warns(CtxflowWarning, match="above its target"):
        report = ladder.run(conversation, LayeredState(), budget=400, fixed=0).report
    assert "too long" in report.outcomes[0].reason
    assert not conversation.summaries()


def test_arun_uses_an_async_summarizer(measure: Callable[[Message], int]) -> None:
    """The async ladder awaits an async LLM summarizer; run refuses it with a typed error."""
    from ctxflow.compression import AsyncLLMSummarizer

    conversation = chat(20, measure=measure)
    ladder = Ladder(
        summarizer=AsyncLLMSummarizer(AsyncScriptedClient(_text("Request: rebook."))),
        rungs=[Condense(keep_recent=4)],
    )
    with pytest.raises(PolicyError):
        ladder.run(conversation, LayeredState(), budget=400, fixed=0)
    with pytest.warns(CtxflowWarning, match="above its target"):  # one rung stops short
        result = asyncio.run(ladder.arun(conversation, LayeredState(), budget=400, fixed=0))
    assert result.report.rungs_used == ("condense",)
    with pytest.raises(CompressionError):
        asyncio.run(
            AsyncLLMSummarizer(AsyncScriptedClient(_text(""))).summarize(
                [Message.user("hi")], max_tokens=10
            )
        )


def test_firing_again_soon_escalates_to_a_later_rung(measure: Callable[[Message], int]) -> None:
    """A second firing within the thrash window starts after the rung used last time."""
    conversation = tool_loop([1_500] * 8, measure=measure)
    ladder = Ladder()
    budget = conversation.effective_tokens // 2
    first = ladder.run(conversation, LayeredState(), budget=budget, fixed=0, turn=5).report
    highest = first.rungs_used[-1]
    conversation.append(Message.user("Next, also fix the flaky test.", id="next"))
    for n in range(8, 14):
        conversation.extend(
            [
                Message(
                    role=Role.ASSISTANT,
                    id=f"a{n}",
                    content=(ToolUseBlock(id=f"t{n}", name="bash", input={"c": n}),),
                ),
                Message(
                    role=Role.USER,
                    id=f"r{n}",
                    content=(ToolResultBlock(tool_use_id=f"t{n}", content="y" * 6_000),),
                ),
            ]
        )
    second = ladder.run(conversation, LayeredState(), budget=budget, fixed=0, turn=6).report
    assert second.escalated
    names = [r.name for r in ladder.rungs]
    assert names.index(second.outcomes[0].name) > names.index(highest)
    later = ladder.run(conversation, LayeredState(), budget=budget, fixed=0, turn=60).report
    assert not later.escalated
    untracked = ladder.run(conversation, LayeredState(), budget=budget // 2, fixed=0).report
    assert not untracked.escalated


def test_undo_by_summary_id_truncation_tag_or_message_id(
    measure: Callable[[Message], int],
) -> None:
    """Undo by any id brings back the whole event; unknown ids are typed errors."""
    conversation = tool_loop([3_000] * 8, measure=measure)
    before = [m.id for m in conversation.effective()]
    report = Ladder().run(conversation, LayeredState(), budget=800, fixed=0).report
    assert report.hidden
    hidden_one = report.hidden[0]
    undo(conversation, hidden_one)
    assert hidden_one in [m.id for m in conversation.effective()]
    for message_id in report.overlaid:
        undo(conversation, message_id)
    assert [m.id for m in conversation.effective()] == before
    assert conversation.check(api="openai").ok
    with pytest.raises(InvalidMessage) as caught:
        undo(conversation, "no-such-id")
    assert caught.value.rule == "unknown_compression"


class SplitPairRung:
    """A custom rung that (wrongly) hides one tool-result message, splitting its pair."""

    name = "split"

    def propose(self, draft: Draft, ctx: RungContext) -> Draft:
        """Hide the first tool-result message in the view."""
        index = next(i for i, m in enumerate(draft.view) if m.tool_results)
        return draft.without([index], "bad")


class SplitPairTruncate(Truncate):
    """A built-in rung gone wrong: the ladder's final seam check must catch it."""

    def propose(self, draft: Draft, ctx: RungContext) -> Draft:  # type: ignore[override]
        """Hide the first tool-result message in the view."""
        return SplitPairRung().propose(draft, ctx)


def test_a_custom_rung_that_breaks_pairs_is_undone(measure: Callable[[Message], int]) -> None:
    """A custom rung's invalid draft is skipped with a reason; later rungs still run."""
    conversation = tool_loop([2_000] * 6, measure=measure)
    report = (
        Ladder(rungs=[SplitPairRung(), Truncate()])
        .run(conversation, LayeredState(), budget=2_000, fixed=0)
        .report
    )
    assert report.outcomes[0].reason == "result invalid for anthropic, openai; undone"
    assert report.rungs_used == ("truncate",)
    assert conversation.check(api="anthropic").ok


def test_the_final_seam_check_refuses_an_invalid_result(measure: Callable[[Message], int]) -> None:
    """If a trusted rung ever broke a pair, the run raises and the conversation is untouched."""
    conversation = tool_loop([2_000] * 6, measure=measure)
    before = _snapshot(conversation)
    with pytest.raises(CompressionError) as caught:
        Ladder(rungs=[SplitPairTruncate()]).run(conversation, LayeredState(), budget=2_000, fixed=0)
    assert caught.value.rule == "invalid_result"
    assert _snapshot(conversation) == before


def test_later_runs_still_catch_invalid_appends(measure: Callable[[Message], int]) -> None:
    """After a run, appended messages that break the rules are reported with their index."""
    conversation = tool_loop([3_000] * 6, measure=measure)
    ladder = Ladder()
    budget = conversation.effective_tokens // 2
    ladder.run(conversation, LayeredState(), budget=budget, fixed=0)
    conversation.append(Message.user("one more thing", id="x1"))
    ladder.run(conversation, LayeredState(), budget=budget, fixed=0)
    conversation.append(
        Message(
            role=Role.ASSISTANT,
            id="x2",
            content=(ToolUseBlock(id="tx", name="bash", input={}),),
        )
    )
    conversation.append(Message.user("no result given", id="x3"))
    before = _snapshot(conversation)
    with pytest.raises(InvalidConversation) as caught:
        ladder.run(conversation, LayeredState(), budget=budget, fixed=0)
    violation = caught.value.violations[0]
    assert violation.rule == "unanswered_tool_use"
    assert conversation.effective()[violation.index].id == "x2"
    assert _snapshot(conversation) == before


def test_a_changed_overlay_is_checked_again(measure: Callable[[Message], int]) -> None:
    """An overlay laid after a run (here with empty text) is not trusted from the last check."""
    conversation = tool_loop([3_000] * 6, measure=measure)
    ladder = Ladder()
    budget = conversation.effective_tokens // 2
    ladder.run(conversation, LayeredState(), budget=budget, fixed=0)
    conversation.set_overlay(
        "a5",
        attrs.evolve(
            conversation.get("a5"), content=(TextBlock(text=""), *conversation.get("a5").tool_uses)
        ),
    )
    with pytest.raises(InvalidConversation) as caught:
        ladder.run(conversation, LayeredState(), budget=budget, fixed=0)
    assert caught.value.violations[0].rule == "empty_text"
