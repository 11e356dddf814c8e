"""Phases and models shape the window: work, evidence and memory decide what the messages hold."""

from __future__ import annotations

import pytest

from ctxflow.budget import (
    DEFAULT_LENDING,
    BudgetPolicy,
    Window,
    build_window,
    select,
    tools_json,
    window_measure,
)
from ctxflow.errors import BudgetExceeded, PolicyError
from ctxflow.model import (
    Conversation,
    Message,
    Role,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
    check,
)
from ctxflow.testing import FixedCounter
from ctxflow.tokens import counter_for, get_profile

from .conftest import corpus_state, state_for
from .test_window import _loop

COUNTER = FixedCounter()
MEASURE = window_measure(COUNTER)
EDIT = "ctxflow.window_edit"


def _build(conversation: Conversation, phase: str, **kwargs: object) -> Window:
    return build_window(
        state_for(), conversation, phase=phase, counter=COUNTER, budget=6_000, **kwargs
    )


def _results(window: Window) -> list[tuple[str, int]]:
    """Each tool result in the window: how it is shown (whole, trimmed, masked) and its size."""
    return [
        (m.metadata.get(EDIT, "whole"), len(r.text))
        for m in window.messages
        for r in m.tool_results
    ]


def _latest(window: Window, n: int = 3) -> int:
    return sum(COUNTER.count(r.text) for m in window.messages for r in m.tool_results[-n:])


def test_the_three_phases_differ_in_the_stated_direction() -> None:
    """Execution keeps the latest results whole; reflection reaches back, older output condensed."""
    conversation = Conversation(_loop(20), measure=MEASURE)
    windows = {p: _build(conversation, p) for p in ("planning", "execution", "reflection")}
    lists = {p: tuple(repr((m.role, m.content)) for m in w.messages) for p, w in windows.items()}
    assert len(set(lists.values())) == 3
    execution, reflection = windows["execution"], windows["reflection"]
    assert _latest(execution) > _latest(reflection)
    assert len(reflection.messages) >= len(execution.messages)
    for window in windows.values():
        assert window.tokens <= 6_000
        for api in ("anthropic", "openai"):
            assert check(window.messages, api=api, tools=window.tools).ok


def test_execution_shows_the_latest_rounds_whole_then_condensed_then_masked() -> None:
    """Newest first: whole rounds (the work buffer), condensed rounds at one cap, placeholders."""
    conversation = Conversation(_loop(20), measure=MEASURE)
    window = _build(conversation, "execution")
    shown = [how for how, _ in _results(window)]
    # the kinds come in order, oldest first: masked, then trimmed, then whole
    order = {"masked": 0, "trimmed": 1, "whole": 2}
    assert shown == sorted(shown, key=order.__getitem__)
    assert {"masked", "trimmed", "whole"} <= set(shown)
    condensed = [size for how, size in _results(window) if how == "trimmed"]
    older = condensed[:-1]  # the newest condensed round may hold a larger partial cut
    assert len(older) >= 2 and max(older) - min(older) <= 2  # one cap
    work = window.report.layers["work"]
    assert work.allocated > 0 and work.used >= 3 * 2_000 // 4
    assert window.report.lending == DEFAULT_LENDING["execution"]


def test_reflection_condenses_every_earlier_round_evenly() -> None:
    """Reflection: the last turn whole, every other round condensed to one common size."""
    conversation = Conversation(_loop(20), measure=MEASURE)
    window = _build(conversation, "reflection")
    shown = _results(window)
    assert shown[-1][0] == "whole"
    earlier = shown[:-1]
    assert len(earlier) == 19 and {how for how, _ in earlier} == {"trimmed"}
    assert len({size for _, size in earlier}) == 1
    assert window.report.layers["work"].allocated == 0
    # the leftover went to the spread: little of the message budget is left unused
    used = window.tokens - (window.input_budget - window.report.message_budget)
    assert used >= window.report.message_budget - window.report.allocation.headroom - 200


def test_planning_shows_rounds_whole_by_relevance_and_no_condensed_output() -> None:
    """Planning lends to relevant rounds and the history, never to raw recent output."""
    conversation = Conversation(_loop(20), measure=MEASURE)
    window = _build(conversation, "planning")
    kinds = {how for how, _ in _results(window)}
    assert kinds == {"whole", "masked"}
    assert window.report.lending == ("relevant", "memory")


def test_opus_and_haiku_windows_differ_and_haiku_stops_at_its_memory() -> None:
    """Model classes change the window; a small model's history stops at its memory allocation."""
    counter = counter_for("cl100k_base")
    messages = _loop(30, size=1_500)
    conversation = Conversation(messages, measure=window_measure(counter))
    built = {
        model: build_window(
            state_for(),
            conversation,
            phase="execution",
            counter=counter,
            profile=get_profile(model),
            budget=5_000,
        )
        for model in ("claude-opus-4", "claude-haiku-4-5")
    }
    opus, haiku = built["claude-opus-4"], built["claude-haiku-4-5"]
    assert opus.messages != haiku.messages
    assert "memory" not in haiku.report.lending and "memory" in opus.report.lending
    assert haiku.report.layers["work"].allocated > opus.report.layers["work"].allocated


@pytest.mark.parametrize("phase", ["planning", "execution", "reflection", "triage"])
def test_a_budget_that_holds_everything_shows_everything(phase: str) -> None:
    """Whatever the phase's intent, nothing is masked, condensed or left out when all fits."""
    messages = _loop(12, size=400)
    conversation = Conversation(messages, measure=MEASURE)
    window = build_window(state_for(), conversation, phase=phase, counter=COUNTER, budget=200_000)
    assert not window.report.excluded
    assert [m.id for m in window.messages] == [m.id for m in messages]


def test_condensed_rounds_render_the_same_after_another_step() -> None:
    """A round condensed in execution is cut by the cap alone: the next window repeats it."""
    messages = _loop(20)
    conversation = Conversation(messages, measure=MEASURE)
    before = _build(conversation, "execution")
    conversation.extend(_loop(21)[-2:])
    after = _build(conversation, "execution")
    cut = {m.id: m for m in before.messages if m.metadata.get(EDIT) == "trimmed"}
    again = [m for m in after.messages if m.id in cut and m.metadata.get(EDIT) == "trimmed"]
    assert len(again) >= 2
    newest = max(again, key=lambda m: int(m.id[1:]))
    assert all(m == cut[m.id] for m in again if m is not newest)


def test_a_policy_can_change_a_phase_intent() -> None:
    """``lending`` is the user's to set: execution spread evenly, like reflection."""
    conversation = Conversation(_loop(20), measure=MEASURE)
    policy = BudgetPolicy(lending={"execution": ("spread",)})
    window = _build(conversation, "execution", policy=policy)
    kinds = [how for how, _ in _results(window)]
    assert "masked" not in kinds and kinds.count("trimmed") >= 10
    assert window.report.lending == ("spread",)


def _talkative(rounds: int) -> list[Message]:
    """A history of long assistant texts and short results: the history is the cost."""
    out = [Message.user("please investigate the failing parser test", id="task")]
    for k in range(rounds):
        out.append(
            Message(
                role=Role.ASSISTANT,
                content=(
                    TextBlock(text=f"step {k}: " + "reasoning about the parser " * 30),
                    ToolUseBlock(id=f"c{k}", name="bash", input={"cmd": k}),
                ),
                id=f"a{k}",
            )
        )
        out.append(
            Message(
                role=Role.USER,
                content=(ToolResultBlock(tool_use_id=f"c{k}", content=f"{k}: ok"),),
                id=f"r{k}",
            )
        )
    return out


def test_history_reach_budget_reaches_as_far_as_the_budget() -> None:
    """``history_reach="budget"``: the history is not stopped at the memory allocation."""
    counter = counter_for("cl100k_base")
    conversation = Conversation(_talkative(40), measure=window_measure(counter))

    def build(policy: BudgetPolicy) -> Window:
        return build_window(
            state_for(),
            conversation,
            phase="execution",
            counter=counter,
            profile=get_profile("claude-haiku-4-5"),
            budget=8_000,
            policy=policy,
        )

    stopped = build(BudgetPolicy())
    reaching = build(BudgetPolicy(history_reach="budget"))
    assert len(reaching.messages) > len(stopped.messages)
    assert reaching.tokens > stopped.tokens


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"lending": {"execution": ("bogus",)}}, "lending"),
        ({"lending": {"execution": ("recent", "recent")}}, "lending"),
        ({"lending": {"execution": "recent"}}, "lending"),
        ({"lending": {"": ("recent",)}}, "lending"),
        ({"lending": ["execution"]}, "lending"),
        ({"withheld": {"small": ("nothing",)}}, "withheld"),
        ({"history_reach": "forever"}, "history_reach"),
        ({"work_pays": "everything"}, "work_pays"),
    ],
)
def test_bad_lending_settings_are_refused_by_name(kwargs: dict[str, object], field: str) -> None:
    """Each bad setting raises PolicyError naming the field."""
    with pytest.raises(PolicyError) as caught:
        BudgetPolicy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.details.get("field") == field
    assert field in str(caught.value)


def test_select_refuses_an_unknown_use_before_choosing() -> None:
    """``select(lend=...)`` checks the uses first."""
    conversation = Conversation(_loop(3), measure=MEASURE)
    with pytest.raises(PolicyError, match="'lend'"):
        select(
            conversation,
            budget=1_000,
            work=100,
            lend=("whole",),
            measure=MEASURE,
            counter=COUNTER,
        )


def test_lend_for_withholds_a_model_class_use() -> None:
    """``withheld`` removes uses from the phase's order for a model class."""
    policy = BudgetPolicy()
    assert policy.lend_for("execution") == ("recent", "condensed", "memory")
    assert policy.lend_for("execution", "small") == ("recent", "condensed")
    assert policy.lend_for("triage") == ("recent", "condensed", "memory")
    assert BudgetPolicy(withheld={}).lend_for("reflection", "small") == ("memory", "spread")


@pytest.mark.corpus
def test_every_phase_and_model_window_over_the_corpus_is_valid_and_within_budget(
    transcripts: list[Transcript],
) -> None:
    """276 conversations x 3 phases x 2 models x 3 budgets: valid for both APIs, counted right."""
    counter = counter_for("cl100k_base")
    measure = window_measure(counter)
    built = 0
    refused: list[str] = []
    for transcript in transcripts:
        state, dialogue = corpus_state(transcript)
        system, tools = state.system.prompt, state.system.tools
        conversation = Conversation(dialogue, measure=measure)
        total = (
            conversation.effective_tokens + counter.count(system) + counter.count(tools_json(tools))
        )
        for share in (0.25, 0.5, 0.75):
            budget = min(150_000, int(total * share) + 1_500)
            for phase in ("planning", "execution", "reflection"):
                for model in ("claude-sonnet-4-5", "claude-haiku-4-5"):
                    try:
                        window = build_window(
                            state.with_runtime(phase=phase),
                            conversation,
                            phase=phase,
                            counter=counter,
                            profile=get_profile(model),
                            budget=budget,
                        )
                    except BudgetExceeded as exc:
                        refused.append(exc.rule)
                        continue
                    built += 1
                    for api in ("anthropic", "openai"):
                        report = check(window.messages, api=api, tools=window.tools)
                        assert report.ok, (transcript.id, phase, model, report.violations[:1])
                    text = tools_json(window.tools)
                    recount = (
                        counter.count(window.system)
                        + (counter.count(text) if text else 0)
                        + (measure(Message.user(window.context)) if window.context else 0)
                        + sum(measure(m) for m in window.messages)
                    )
                    assert recount == window.tokens <= budget, (transcript.id, phase, model)
    assert built > 3_000
    assert set(refused) <= {"critical_exceeds", "fixed_costs"}


def test_the_latest_tool_round_counts_as_the_work_buffer() -> None:
    """The latest tool round, shown whole, is reported as the work layer's use."""
    messages = [
        Message.user("task: fix it", id="u0"),
        Message(
            role=Role.ASSISTANT,
            content=(TextBlock(text="planning"), ToolUseBlock(id="p1", name="bash", input={})),
            id="a1",
        ),
        Message(
            role=Role.USER,
            content=(ToolResultBlock(tool_use_id="p1", content="ok " * 50),),
            id="r1",
        ),
    ]
    conversation = Conversation(messages, measure=MEASURE)
    window = build_window(
        state_for(), conversation, phase="execution", counter=COUNTER, budget=2_000
    )
    layers = window.report.layers
    assert layers["work"].used > 0 and layers["evidence"].used == 0  # all of it the latest
