"""Each rung alone: what it tags, what it keeps, and that every original survives."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import pytest
from _builders import chat, tool_loop

from ctxflow.compression import (
    ClearToolResults,
    Condense,
    HardReset,
    Ladder,
    LadderPolicy,
    TrimOversized,
    Truncate,
    expand,
    recall,
)
from ctxflow.compression._rungs import CLEARED, OVERLAY_KIND, TRIMMED, _approx
from ctxflow.errors import CtxflowWarning
from ctxflow.layers import LayeredState
from ctxflow.model import SUMMARY_OF, Conversation, Message, check

#: One rung alone may not reach the target; a far hard limit lets it show what it does
#: (a run that stops above the target warns: the tests below expect it where it happens).
LENIENT = LadderPolicy(hard_limit=1_000.0)


class ScriptedSummarizer:
    """Returns the scripted summaries in order, whatever the messages."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    def summarize(self, messages: Sequence[Message], *, max_tokens: int) -> str:
        """The next scripted summary."""
        return self.texts.pop(0)


def _valid(conversation: object) -> None:
    for api in ("anthropic", "openai"):
        report = conversation.check(api=api)  # type: ignore[attr-defined]
        assert report.ok, report.violations


def test_trim_cuts_the_middle_of_an_oversized_result_and_names_the_recall_id(
    measure: Callable[[Message], int],
) -> None:
    """An 800 KB result keeps its head and tail, with a marker giving size and recall id."""
    conversation = tool_loop([200, 800_000, 200], measure=measure)
    result = Ladder(policy=LENIENT, rungs=[TrimOversized()]).run(
        conversation, LayeredState(), budget=4_000, fixed=0
    )
    shown = conversation.get("r1")
    text = shown.tool_results[0].text
    assert shown.metadata[OVERLAY_KIND] == TRIMMED
    assert "trimmed by ctxflow; recall the whole result by its call id" in text
    assert text.startswith("line 1 ")
    assert text.rstrip().endswith(recall(conversation, "r1").tool_results[0].text.rstrip()[-20:])
    assert conversation.tokens("r1") <= 1_200
    assert len(recall(conversation, "r1").tool_results[0].text) == 800_000
    assert result.report.rungs_used == ("trim",)
    _valid(conversation)


def test_clear_keeps_the_latest_results_and_pinned_tools(
    measure: Callable[[Message], int],
) -> None:
    """Older results become placeholders; the last K and the pinned tool's result stay."""
    conversation = tool_loop(
        [2_000] * 6, measure=measure, tools=["bash", "memory", "bash", "bash", "bash", "bash"]
    )
    rung = ClearToolResults(keep_results=2, pinned_tools={"memory"})
    with pytest.warns(CtxflowWarning, match="above its target"):
        Ladder(policy=LENIENT, rungs=[rung]).run(conversation, LayeredState(), budget=100, fixed=0)
    cleared = [f"r{n}" for n in range(6) if conversation.overlay(f"r{n}") is not None]
    assert cleared == ["r0", "r2", "r3"]
    placeholder = conversation.get("r0").tool_results[0].text
    assert placeholder == (
        "[bash result cleared by ctxflow: 2.0k characters; recall it by its call id]"
    )
    call_id = conversation.get("r0").tool_results[0].tool_use_id
    assert recall(conversation, call_id) == conversation.original("r0")
    assert conversation.get("r0").metadata[OVERLAY_KIND] == CLEARED
    _valid(conversation)


def test_a_placeholder_names_the_size_recall_gives_back(
    measure: Callable[[Message], int],
) -> None:
    """A result trimmed before it is cleared: the placeholder gives the original's size."""
    conversation = tool_loop([2_000] * 5 + [40_000] + [2_000] * 4, measure=measure)
    ladder = Ladder(policy=LENIENT, rungs=[TrimOversized(share=0.1), ClearToolResults()])
    with pytest.warns(CtxflowWarning, match="above its target"):
        report = ladder.run(conversation, LayeredState(), budget=2_000, fixed=0).report
    assert report.rungs_used == ("trim", "clear")
    shown = conversation.get("r5").tool_results[0].text
    assert conversation.get("r5").metadata[OVERLAY_KIND] == CLEARED
    assert shown == "[bash result cleared by ctxflow: 40k characters; recall it by its call id]"
    assert len(recall(conversation, "t5").tool_results[0].text) == 40_000
    _valid(conversation)


def test_truncate_hides_whole_turns_and_keeps_request_and_decisions(
    measure: Callable[[Message], int],
) -> None:
    """The oldest tool rounds go as pairs; the request and a decision stay visible."""
    conversation = tool_loop(
        [400] * 8, measure=measure, extra_user_text={2: "Decision: keep the public API stable."}
    )
    result = Ladder(policy=LENIENT, rungs=[Truncate()]).run(
        conversation, LayeredState(), budget=400, fixed=0
    )
    visible = [m.id for m in conversation.effective()]
    assert visible[:2] == ["sys", "req"]
    assert "r2" in visible
    assert "a2" in visible
    for n in range(8):
        assert (f"a{n}" in visible) == (f"r{n}" in visible)
    assert result.report.hidden
    assert all(conversation.original(i).truncation_parent for i in result.report.hidden)
    _valid(conversation)


def test_condense_replaces_a_span_with_a_marked_user_summary_and_flushes_memory(
    measure: Callable[[Message], int],
) -> None:
    """The summary starts with its marker, stands first, and its facts and episode reach memory."""
    conversation = chat(12, measure=measure, decision_at=1)
    with pytest.warns(CtxflowWarning, match="above its target"):
        result = Ladder(policy=LENIENT, rungs=[Condense(keep_recent=4)]).run(
            conversation, LayeredState(), budget=300, fixed=0
        )
    view = conversation.effective()
    summary = view[1]
    assert summary.text.startswith("[Summary of ")
    assert summary.role.value == "user"
    assert view[2].role.value == "assistant"
    covered = [m.id for m in expand(conversation, summary.id)]
    assert covered[0] == "u0"
    assert all(conversation.original(i).condense_parent == summary.id for i in covered)
    memory = result.state.memory
    assert any("port 8231" in f.value for f in memory.semantic)
    assert memory.episodic[-1].id == summary.id
    assert list(memory.episodic[-1].span) == covered
    assert result.report.facts_flushed
    _valid(conversation)


def test_condense_twice_folds_the_earlier_summary_into_the_new_one(
    measure: Callable[[Message], int],
) -> None:
    """A second condensation covers the first summary; expand reaches every original."""
    conversation = chat(14, measure=measure)
    ladder = Ladder(policy=LENIENT, rungs=[Condense(keep_recent=4)])
    with pytest.warns(CtxflowWarning, match="above its target"):
        ladder.run(conversation, LayeredState(), budget=600, fixed=0)
    for n in range(14, 20):
        conversation.extend(
            [
                Message.user(f"more question {n} " * 20, id=f"u{n}"),
                Message.assistant(f"more answer {n} " * 20, id=f"b{n}"),
            ]
        )
    with pytest.warns(CtxflowWarning, match="above its target"):
        ladder.run(conversation, LayeredState(), budget=600, fixed=0, turn=10)
    summaries = conversation.summaries()
    assert len(summaries) == 2
    assert summaries[0].id in summaries[1].metadata[SUMMARY_OF]
    expanded = {m.id for m in expand(conversation, summaries[1].id)}
    assert {"u0", "b0", "u14"} <= expanded
    _valid(conversation)


def test_hard_reset_keeps_pinned_messages_and_the_last_turn(
    measure: Callable[[Message], int],
) -> None:
    """Only the system prompt, the pinned request and the last complete turn stay."""
    conversation = tool_loop([300] * 10, measure=measure, pin_request=True)
    with pytest.warns(CtxflowWarning, match="above its target"):
        Ladder(policy=LENIENT, rungs=[HardReset()]).run(
            conversation, LayeredState(), budget=50, fixed=0
        )
    assert [m.id for m in conversation.effective()] == ["sys", "req", "final"]
    _valid(conversation)


def test_pinned_messages_are_never_trimmed_cleared_or_hidden(
    measure: Callable[[Message], int],
) -> None:
    """A pinned huge result stays intact under every rung."""
    plain = tool_loop([5_000] * 4, measure=measure)
    messages = [attrs.evolve(m, important=True) if m.id == "r1" else m for m in plain]
    conversation = Conversation(messages, measure=measure)
    pinned = conversation.original("r1")
    with pytest.warns(CtxflowWarning, match="above its target"):  # the pinned result alone is over
        Ladder().run(conversation, LayeredState(), budget=1_800, fixed=0)
    assert conversation.get("r1") == pinned
    assert not conversation.original("r1").hidden
    assert check(conversation.effective(), api="openai").ok


def test_condense_never_covers_only_an_earlier_summary(
    measure: Callable[[Message], int],
) -> None:
    """A span holding nothing but a summary is not condensed again (it would vanish)."""
    messages = [
        Message.system("You are a helpful agent.", id="sys"),
        Message.user(
            "\n".join(f"Decision: option {n} uses port {8000 + n} on host {n}" for n in range(20)),
            id="u0",
        ),
        Message.assistant("pinned plan", id="b0", important=True),
        Message.user("short", id="u1"),
        Message.assistant("short", id="b1"),
    ]
    conversation = Conversation(messages, measure=measure)
    ladder = Ladder(
        policy=LENIENT,
        summarizer=ScriptedSummarizer("earlier work " * 15, "tiny"),
        rungs=[Condense(keep_recent=0)],
    )
    with pytest.warns(CtxflowWarning, match="above its target"):
        first = ladder.run(conversation, LayeredState(), budget=50, fixed=0, turn=0).report
    assert first.rungs_used == ("condense",)
    with pytest.warns(CtxflowWarning, match="above its target"):
        second = ladder.run(conversation, LayeredState(), budget=10, fixed=0, turn=10).report
    assert second.rungs_used == ()
    assert conversation.effective()[1].text.startswith("[Summary of 1 earlier messages]")
    assert second.tokens_after == conversation.effective_tokens
    _valid(conversation)


def test_truncate_flushes_unlabelled_user_details_to_semantic_memory(
    measure: Callable[[Message], int],
) -> None:
    """A code a user stated without a label leaves the view but reaches semantic memory."""
    conversation = tool_loop(
        [400] * 8, measure=measure, extra_user_text={1: "the reservation code is QX7P2L"}
    )
    result = Ladder(policy=LENIENT, rungs=[Truncate()]).run(
        conversation, LayeredState(), budget=400, fixed=0
    )
    assert "r1" in result.report.hidden
    values = [f.value for f in result.state.memory.semantic]
    assert "the reservation code is QX7P2L" in values
    off = Ladder(policy=LENIENT, rungs=[Truncate(detail_chars=0)]).run(
        tool_loop(
            [400] * 8, measure=measure, extra_user_text={1: "the reservation code is QX7P2L"}
        ),
        LayeredState(),
        budget=400,
        fixed=0,
    )
    assert not off.state.memory.semantic


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (999, "999"),
        (1_000, "1.0k"),
        (1_234, "1.2k"),
        (9_960, "10k"),
        (12_345, "12k"),
        (99_500, "100k"),
        (868_000, "870k"),
        (1_234_567, "1.2M"),
    ],
)
def test_placeholders_give_the_size_to_two_significant_digits(size: int, shown: str) -> None:
    """The size cleared, rounded: placeholders repeat (their counts are cached)."""
    assert _approx(size) == shown


def _renamed(conversation: Conversation, prefix: str) -> Conversation:
    """The same messages under other ids (an application whose ids are random)."""
    return Conversation(
        [attrs.evolve(m, id=f"{prefix}-{m.id}") for m in conversation.messages],
        measure=conversation.measure,
    )


def test_a_summary_id_follows_what_it_covers_not_the_message_ids(
    measure: Callable[[Message], int],
) -> None:
    """One conversation under two sets of ids condenses to the same summary and window."""
    first = _renamed(chat(12, measure=measure), "run1")
    second = _renamed(chat(12, measure=measure), "run2")
    ladder = Ladder(policy=LENIENT, rungs=[Condense(keep_recent=4)])
    states = []
    for conversation in (first, second):
        with pytest.warns(CtxflowWarning, match="above its target"):
            states.append(ladder.run(conversation, LayeredState(), budget=300, fixed=0).state)
    (one,), (two,) = first.summaries(), second.summaries()
    assert one.id == two.id and one.id.startswith("sum_")
    assert states[0].memory.episodic[-1].id == states[1].memory.episodic[-1].id == one.id
    assert first.effective_tokens == second.effective_tokens
    assert [m.text for m in first.effective()] == [m.text for m in second.effective()]


def test_a_summary_id_already_in_the_conversation_is_not_reused(
    measure: Callable[[Message], int],
) -> None:
    """Where the content's id is taken, the summarised messages' ids make it unique."""
    probe = chat(12, measure=measure)
    ladder = Ladder(policy=LENIENT, rungs=[Condense(keep_recent=4)])
    with pytest.warns(CtxflowWarning, match="above its target"):
        ladder.run(probe, LayeredState(), budget=300, fixed=0)
    (taken,) = probe.summaries()
    messages = list(chat(12, measure=measure).messages)
    messages[0] = attrs.evolve(messages[0], id=taken.id)  # the system message holds the id
    conversation = Conversation(messages, measure=measure)
    with pytest.warns(CtxflowWarning, match="above its target"):
        ladder.run(conversation, LayeredState(), budget=300, fixed=0)
    (summary,) = conversation.summaries()
    assert summary.id != taken.id and summary.id.startswith("sum_")
    assert summary.text == taken.text
    _valid(conversation)
