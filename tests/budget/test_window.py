"""The Window builder: validity for both APIs, the budget, determinism, errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.budget import BudgetPolicy, _window, build_window, tools_json, window_measure
from ctxflow.errors import BudgetExceeded, PolicyError
from ctxflow.layers import Episode, LayeredState
from ctxflow.model import Conversation, Message, Role, ToolResultBlock, ToolUseBlock, check
from ctxflow.testing import CountingCounter, FixedCounter
from ctxflow.tokens import HeuristicCounter, TiktokenCounter

from .conftest import conversations, state_for

COUNTER = FixedCounter()
MEASURE = window_measure(COUNTER)


def counted(window_tokens_of: object) -> int:
    """Recount a window from scratch with the same counter and measure."""
    w = window_tokens_of
    assert hasattr(w, "system")
    total = COUNTER.count(w.system) if w.system else 0  # type: ignore[attr-defined]
    text = tools_json(w.tools)  # type: ignore[attr-defined]
    total += COUNTER.count(text) if text else 0
    context = w.context  # type: ignore[attr-defined]
    total += MEASURE(Message.user(context)) if context else 0
    return total + sum(MEASURE(m) for m in w.messages)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(
    conversations(),
    st.floats(min_value=0.05, max_value=1.2),
    st.sampled_from(["planning", "execution", "reflection", "idle"]),
)
def test_every_window_is_valid_and_within_budget(
    messages: list[Message], fraction: float, phase: str
) -> None:
    """Any window is valid for Anthropic and OpenAI and its recount never exceeds the budget."""
    conversation = Conversation(messages, measure=MEASURE)
    state = state_for()
    budget = 300 + int(conversation.total_tokens * fraction)
    try:
        window = build_window(state, conversation, phase=phase, counter=COUNTER, budget=budget)
    except BudgetExceeded as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert refused.rule in {"critical_exceeds", "fixed_costs"}
        return
    for api in ("anthropic", "openai"):
        report = check(window.messages, api=api, tools=window.tools)
        assert report.ok, report.violations
    assert counted(window) == window.tokens <= budget
    again = build_window(state, conversation, phase=phase, counter=COUNTER, budget=budget)
    assert again == window


@settings(max_examples=25, deadline=None)
@given(conversations())
def test_builder_is_deterministic_across_fresh_conversations(messages: list[Message]) -> None:
    """Two conversations with the same messages give the same window (no cache leaks)."""
    budget = 400 + sum(MEASURE(m) for m in messages) // 3
    outcomes: list[object] = []
    for _ in range(2):
        try:
            outcomes.append(
                build_window(
                    state_for(),
                    Conversation(messages, measure=MEASURE),
                    phase="execution",
                    counter=COUNTER,
                    budget=budget,
                )
            )
        except BudgetExceeded as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def _loop(n: int, size: int = 2_000) -> list[Message]:
    out = [Message.user("please investigate the failing parser test", id="task")]
    for k in range(n):
        out.append(
            Message(
                role=Role.ASSISTANT,
                content=(ToolUseBlock(id=f"c{k}", name="bash", input={"cmd": k}),),
                id=f"a{k}",
            )
        )
        out.append(
            Message(
                role=Role.USER,
                content=(ToolResultBlock(tool_use_id=f"c{k}", content=f"{k}:" + "x" * size),),
                id=f"r{k}",
            )
        )
    return out


def test_old_results_are_masked_with_a_placeholder_without_touching_the_conversation() -> None:
    """Results past the evidence budget become placeholders naming tool and size; originals stay."""
    messages = _loop(20)
    conversation = Conversation(messages, measure=MEASURE)
    before = list(conversation.effective())
    window = build_window(
        state_for(), conversation, phase="execution", counter=COUNTER, budget=6_000
    )
    texts = [r.text for m in window.messages for r in m.tool_results]
    assert any("bash result withheld" in t and "2,00" in t for t in texts)
    assert texts[-1].startswith("19:")  # the newest result is shown
    assert conversation.effective() == before
    assert window.report.excluded["masked_results"].units > 0
    assert window.tokens <= 6_000


def test_huge_last_result_is_middle_trimmed() -> None:
    """A last tool result bigger than the budget is cut in the middle, head and tail kept."""
    messages = _loop(3, size=10)
    messages.append(
        Message(
            role=Role.ASSISTANT,
            content=(ToolUseBlock(id="big", name="bash", input={}),),
            id="abig",
        )
    )
    messages.append(
        Message(
            role=Role.USER,
            content=(ToolResultBlock(tool_use_id="big", content="HEAD" + "z" * 400_000 + "TAIL"),),
            id="rbig",
        )
    )
    conversation = Conversation(messages, measure=MEASURE)
    window = build_window(
        state_for(), conversation, phase="execution", counter=COUNTER, budget=5_000
    )
    last = window.messages[-1].tool_results[0].text
    assert last.startswith("HEAD")
    assert last.endswith("TAIL")
    assert "chars trimmed" in last
    assert counted(window) == window.tokens <= 5_000
    assert window.report.excluded["trimmed_results"].units == 1
    assert check(window.messages, api="anthropic", tools=window.tools).ok


def test_critical_message_that_cannot_fit_raises_with_numbers() -> None:
    """An important message larger than the budget raises BudgetExceeded; nothing changes."""
    messages = [
        Message.user("start", id="u0"),
        Message.assistant("a", id="a0"),
        Message.user("k" * 40_000, id="u1", important=True),
        Message.assistant("b", id="a1"),
        Message.user("latest", id="u2"),
    ]
    conversation = Conversation(messages, measure=MEASURE)
    version = conversation.version
    with pytest.raises(BudgetExceeded) as info:
        build_window(state_for(), conversation, phase="execution", counter=COUNTER, budget=2_000)
    assert info.value.rule == "critical_exceeds"
    assert info.value.critical > info.value.budget
    assert conversation.version == version


def test_important_messages_survive_a_tight_budget() -> None:
    """Important turns and the task stay even when the recent stream must be cut."""
    messages = _loop(30, size=400)
    messages[5:5] = [
        Message.assistant("noted", id="a-imp"),
        Message.user("IMPORTANT decision", id="imp", important=True),
    ]
    conversation = Conversation(messages, measure=MEASURE)
    window = build_window(
        state_for(), conversation, phase="execution", counter=COUNTER, budget=1_500
    )
    ids = {i for m in window.messages for i in m.metadata.get("ctxflow.merged_from", [m.id])}
    assert {"task", "imp"} <= ids
    assert check(window.messages, api="openai", tools=window.tools).ok


def test_same_role_neighbours_are_merged() -> None:
    """A gap that puts two user messages side by side merges them into one window message."""
    messages = _loop(10, size=800)
    messages.append(Message.assistant("summary of findings", id="fin"))
    messages.append(Message.user("next: also check the lexer", id="u-next"))
    conversation = Conversation(messages, measure=MEASURE)
    window = build_window(state_for(), conversation, phase="execution", counter=COUNTER, budget=700)
    roles = [m.role for m in window.messages]
    assert all(a is not b for a, b in itertools.pairwise(roles))
    assert window.messages[0].role is Role.USER


def test_repeated_builds_do_not_retokenize_history() -> None:
    """A second build counts only the small system text, never the messages again."""
    counter = CountingCounter()
    measure = window_measure(counter)
    conversation = Conversation(_loop(50), measure=measure)
    state = state_for()
    build_window(state, conversation, phase="execution", counter=counter, budget=8_000)
    calls = counter.calls
    build_window(state, conversation, phase="execution", counter=counter, budget=8_000)
    assert counter.calls == calls


def test_layers_render_into_the_system_text_and_report() -> None:
    """Memory tiers and runtime render in the late context, the task in the system text."""
    state = (
        state_for()
        .with_fact("db", "postgres 16")
        .with_episode(Episode(id="e1", summary="tried the lexer; not the cause"))
    )
    state = state.with_runtime(phase="execution", step=3)
    conversation = Conversation(_loop(4, size=100), measure=MEASURE)
    window = build_window(state, conversation, phase="execution", counter=COUNTER, budget=20_000)
    assert "db: postgres 16" in window.context
    assert "tried the lexer" in window.context
    assert "phase: execution" in window.context
    assert "phase:" not in window.system and "## Task" in window.system
    assert set(window.report.layers) == {"system", "task", "runtime", "memory", "evidence", "work"}
    assert window.report.tiers["semantic"].used > 0


def test_bad_input_raises_typed_errors_before_changes() -> None:
    """Unknown phases (restricted policy) and unusable budgets raise typed errors."""
    conversation = Conversation(_loop(2), measure=MEASURE)
    strict = BudgetPolicy(known_phases={"planning"})
    with pytest.raises(PolicyError):
        build_window(
            state_for(), conversation, phase="oops", counter=COUNTER, budget=5_000, policy=strict
        )
    with pytest.raises(PolicyError):
        build_window(state_for(), conversation, phase="planning", counter=COUNTER, budget=-1)
    with pytest.raises(BudgetExceeded, match="task=2500"):
        build_window(
            state_for("t" * 10_000), conversation, phase="planning", counter=COUNTER, budget=100
        )


def test_profile_gives_the_budget_and_the_overhead() -> None:
    """Without a budget, the profile's input budget and per-message overhead are used."""
    from ctxflow.tokens import ModelProfile

    profile = ModelProfile(
        name="t-small",
        provider="test",
        context_window=8_000,
        max_output=1_000,
        per_message_overhead=3,
    )
    measure = window_measure(COUNTER, overhead=3)
    conversation = Conversation(_loop(40, size=600), measure=measure)
    window = build_window(
        state_for(), conversation, phase="execution", counter=COUNTER, profile=profile
    )
    assert window.input_budget == 7_000
    assert window.report.allocation.model_class == "small"
    assert window.tokens <= 7_000
    assert window.tokens == (
        COUNTER.count(window.system)
        + COUNTER.count(tools_json(window.tools))
        + (measure(Message.user(window.context)) if window.context else 0)
        + sum(measure(m) for m in window.messages)
    )


def test_documents_and_work_buffer_render_within_their_allowance() -> None:
    """Documents and the work buffer render in the late context; oversized ones are dropped."""
    from ctxflow.layers import Document, EvidenceLayer, WorkBuffer

    state = state_for()
    state = LayeredState(
        system=state.system,
        task=state.task,
        evidence=EvidenceLayer(
            documents=(
                Document(id="d1", title="API notes", text="parse() returns a Tree"),
                Document(id="d2", text="z" * 200_000),
            )
        ),
        work=WorkBuffer(scratchpad="step 1 done", results={"plan": "patch io.py"}),
    )
    conversation = Conversation(_loop(3, size=50), measure=MEASURE)
    window = build_window(state, conversation, phase="planning", counter=COUNTER, budget=6_000)
    assert "parse() returns a Tree" in window.context
    assert "z" * 1_000 not in window.context
    assert window.report.dropped_blocks["documents"] == 1
    assert "plan: patch io.py" in window.context
    assert "step 1 done" in window.context
    assert counted(window) == window.tokens <= 6_000


class _LineCounting(CountingCounter):
    """A counting counter that cuts lines as its inner counter does."""

    def line_cuts(self, text: str) -> list[str]:
        return TiktokenCounter("cl100k_base").line_cuts(text)


def test_a_long_text_changed_by_a_line_is_counted_by_that_line() -> None:
    """The window's counter counts a long text exactly; changed by a line, it encodes that
    line only (a settled memory item changes the system text so). A counter that cannot
    cut lines counts the whole text."""
    exact = TiktokenCounter("cl100k_base")
    recording = _LineCounting(exact)
    cached = _window._CachedCounter(recording)
    lines = [
        f"- decision_{i}: keep the fix for module {i} in src/module_{i}.py" for i in range(120)
    ]
    text = "## Semantic memory\n" + "\n".join(lines)
    assert len(text) > _window.LINES_FROM
    assert cached.count(text) == len(exact._encoding.encode_ordinary(text))
    recording.texts.clear()
    changed = text.replace("decision_7: keep", "decision_7: drop")
    assert cached.count(changed) == len(exact._encoding.encode_ordinary(changed))
    assert list(recording.texts) == [lines[7].replace("keep", "drop") + "\n"]
    whole = CountingCounter(HeuristicCounter())
    assert _window._CachedCounter(whole).count(text) == HeuristicCounter().count(text)
    assert list(whole.texts) == [text]
