"""The selector chooses exactly what the frozen reference selector chose, input for input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxflow.budget import (
    Adjustments,
    BudgetPolicy,
    Exclusion,
    LayerRatios,
    Selection,
    build_window,
    select,
    window_measure,
)
from ctxflow.budget import _window as window_module
from ctxflow.errors import BudgetExceeded
from ctxflow.layers import LayeredState, SystemLayer, TaskLayer, ToolDef
from ctxflow.model import (
    Block,
    Conversation,
    Message,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transcript,
)
from ctxflow.protocols import TokenCounter
from ctxflow.testing import FixedCounter
from ctxflow.tokens import counter_for, message_measure
from tests.compression._convgen import WORDS
from tests.compression._convgen import conversations as convgen_conversations

from . import _selection_reference as reference
from .conftest import conversations, state_for

Measure = Callable[[Message], int]

COUNTER = FixedCounter()
MEASURE = window_measure(COUNTER)
_PLAIN = message_measure(COUNTER, overhead=4)


def _merge_penalty(message: Message) -> int:
    """A measure that charges merged messages more than their parts (the assembly fallback)."""
    return _PLAIN(message) + (
        40 * len(message.metadata[reference.MERGED_FROM])
        if reference.MERGED_FROM in message.metadata
        else 0
    )


def _edit_penalty(message: Message) -> int:
    """A measure that charges trimmed messages extra (a trim must retry, or fail)."""
    return _PLAIN(message) + (25 if message.metadata.get(reference.WINDOW_EDIT) == "trimmed" else 0)


_CL100K = counter_for("cl100k_base")
#: (counter, measure) pairs: fixed rate; merges or trims charged extra; a real encoding.
MEASURES: tuple[tuple[TokenCounter, Measure], ...] = (
    (COUNTER, MEASURE),
    (COUNTER, _merge_penalty),
    (COUNTER, _edit_penalty),
    (_CL100K, window_measure(_CL100K)),
)


PHASES = ("planning", "execution", "reflection")

#: The configuration under which the selector is specified to choose as the reference did:
#: no evidence allowance (so nothing is condensed; the work allowance is the reference's
#: whole-results allowance, paying for tool results only), leftover lent to recent rounds
#: only, and the history reaching as far as the budget allows.
REFERENCE_POLICY = BudgetPolicy(
    ratios=LayerRatios(evidence=0, work=35),
    phases=Adjustments(
        points={
            "planning": {"memory": 10, "work": -10},
            "execution": {"memory": -10, "work": 10},
            "reflection": {"memory": 15, "work": -15},
        }
    ),
    lending=dict.fromkeys(PHASES, ("recent",)),
    history_reach="budget",
    work_pays="results",
)


def _select_as_reference(conversation: Conversation, *, evidence: int, **kwargs: Any) -> object:
    """The selector with the reference's one allowance as its work allowance."""
    return select(
        conversation, work=evidence, evidence=0, lend=("recent",), work_pays="results", **kwargs
    )


def _reference_select(
    index: Any,
    *,
    work: int,
    evidence: int,
    memory: int | None,
    lend: tuple[str, ...],
    work_pays: str,
    **kwargs: Any,
) -> object:
    """The reference's build step, called as the window builder calls the selector's."""
    assert evidence == 0 and lend == ("recent",), "the reference has no evidence allowance"
    assert memory is None, "the reference's history reaches as far as the budget allows"
    assert work_pays == "results", "the reference's allowance pays for tool results only"
    found = reference._select(index, evidence=work, **kwargs)
    return Selection(
        messages=found.messages,
        tokens=found.tokens,
        memory_tokens=found.memory_tokens,
        evidence_tokens=found.evidence_tokens,
        excluded={
            reason: Exclusion(units=e.units, messages=e.messages, tokens=e.tokens)
            for reason, e in found.excluded.items()
        },
    )


def _layers(report: Any) -> dict[str, object]:
    """The report's layers, with the tool results shown in work and evidence as one number.

    The reference has one allowance for whole results, so it does not say which of them
    are the latest rounds (work) and which older (evidence); their sum must agree.
    """
    layers = dict(report.layers)
    work, evidence = layers.pop("work"), layers.pop("evidence")
    layers["work+evidence"] = (
        work.allocated,
        evidence.allocated,
        work.used + evidence.used,
    )
    return layers


ANY_CONVERSATION = st.one_of(conversations(max_tasks=5), convgen_conversations())

Outcome = tuple[object, ...]


def _exclusions(excluded: object) -> dict[str, tuple[int, int, int]]:
    assert isinstance(excluded, dict)
    return {k: (v.units, v.messages, v.tokens) for k, v in excluded.items()}


def _selection(choose: Callable[..., object], conversation: Conversation, **kwargs: Any) -> Outcome:
    """A selection as plain values: messages (ids, overlays, trims), token counts, exclusions."""
    try:
        found = choose(conversation, **kwargs)
    except BudgetExceeded as exc:
        return ("refused", str(exc), exc.rule, exc.details)
    return (
        tuple(found.messages),  # type: ignore[attr-defined]
        found.tokens,  # type: ignore[attr-defined]
        found.memory_tokens,  # type: ignore[attr-defined]
        found.evidence_tokens,  # type: ignore[attr-defined]
        _exclusions(found.excluded),  # type: ignore[attr-defined]
    )


@contextlib.contextmanager
def _reference_selector() -> Iterator[None]:
    """Make :func:`build_window` select through the frozen reference."""
    saved = window_module._index, window_module._select
    window_module._index, window_module._select = reference._index, _reference_select  # type: ignore[assignment]
    try:
        yield
    finally:
        window_module._index, window_module._select = saved


def _window(build: Callable[[], object]) -> Outcome:
    """A window as plain values: what the model is sent and the report's numbers."""
    try:
        window = build()
    except BudgetExceeded as exc:
        return ("refused", str(exc), exc.rule, exc.details)
    report = window.report  # type: ignore[attr-defined]
    return (
        window,
        report.message_budget,
        _layers(report),
        dict(report.tiers),
        _exclusions(dict(report.excluded)),
    )


def _both_windows(
    state: LayeredState,
    conversation: Conversation,
    *,
    phase: str,
    counter: TokenCounter,
    budget: int,
    measure: Measure | None = None,
) -> tuple[Outcome, Outcome]:
    def build() -> object:
        return build_window(
            state,
            conversation,
            phase=phase,
            counter=counter,
            budget=budget,
            measure=measure,
            policy=REFERENCE_POLICY,
        )

    new = _window(build)
    with _reference_selector():
        old = _window(build)
    return new, old


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ANY_CONVERSATION,
    st.integers(0, 3_000),
    st.integers(0, 100_000),
    st.sampled_from(MEASURES),
    st.lists(st.sampled_from(WORDS), max_size=4),
    st.data(),
)
def test_select_matches_the_reference(
    messages: list[Message],
    budget: int,
    evidence_pct: int,
    measured: tuple[TokenCounter, Measure],
    task: list[str],
    data: st.DataObject,
) -> None:
    """Any budget, evidence, measure, task and broken pairs: the same selection or refusal."""
    counter, measure = measured
    conversation = Conversation(messages, measure=measure)
    _hide_some(conversation, messages, data)
    budget = budget + conversation.effective_tokens * (budget % 7) // 6
    evidence = conversation.effective_tokens * evidence_pct // 100_000
    kwargs = {"budget": budget, "evidence": evidence, "measure": measure, "counter": counter}
    text = " ".join(task)
    new = _selection(_select_as_reference, conversation, task=text, **kwargs)
    old = _selection(reference.select, conversation, task=text, **kwargs)
    assert new == old


def _hide_some(conversation: Conversation, messages: list[Message], data: st.DataObject) -> None:
    """Hide a few unpinned messages, which may break tool pairs in the effective view."""
    hideable = [m.id for m in messages if not m.important and m.role is not Role.SYSTEM]
    if hideable:
        hidden = data.draw(st.lists(st.sampled_from(hideable), max_size=3, unique=True))
        if hidden:
            conversation.hide(hidden, truncation_parent="cut-1")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ANY_CONVERSATION,
    st.floats(min_value=0.02, max_value=1.2),
    st.sampled_from(PHASES),
    st.data(),
)
def test_windows_match_the_reference_after_appends_and_summaries(
    messages: list[Message], fraction: float, phase: str, data: st.DataObject
) -> None:
    """Build, hide, append, condense a span, building after each: always the reference's window."""
    state = state_for()
    budget = 300 + int(sum(MEASURE(m) for m in messages) * fraction)
    half = data.draw(st.integers(0, len(messages)))
    conversation = Conversation(messages[:half], measure=MEASURE)
    for step in ("first half", "hidden", "appended", "condensed"):
        if step == "hidden":
            _hide_some(conversation, messages[:half], data)
        if step == "appended":
            conversation.extend(messages[half:])
        if step == "condensed":
            start = data.draw(st.integers(0, len(messages) - 1))
            end = data.draw(st.integers(start, len(messages) - 1))
            covers = [m.id for m in messages[start : end + 1] if not m.important]
            if not covers:
                continue
            role = data.draw(st.sampled_from([Role.USER, Role.ASSISTANT]))
            summary = Message(role=role, content="summary of earlier work", id="summary-1")
            conversation.add_summary(summary, covers)
        new, old = _both_windows(state, conversation, phase=phase, counter=COUNTER, budget=budget)
        assert new == old, step


def _corpus_state(transcript: Transcript) -> tuple[LayeredState, list[Message]]:
    system = "\n".join(m.text for m in transcript.messages if m.role is Role.SYSTEM)
    dialogue = [m for m in transcript.messages if m.role is not Role.SYSTEM]
    tools = tuple(ToolDef(name=n) for n in sorted({u.name for m in dialogue for u in m.tool_uses}))
    first = next(m for m in dialogue if m.role is Role.USER and not m.tool_results)
    task = TaskLayer(statement=first.text[:400])
    return LayeredState(system=SystemLayer(prompt=system, tools=tools), task=task), dialogue


@pytest.mark.corpus
def test_corpus_windows_match_the_reference(transcripts: list[Transcript]) -> None:
    """Every corpus conversation at 3 budgets x 3 phases: the same window as the reference."""
    counter = counter_for("cl100k_base")
    measure = window_measure(counter)
    mismatches: list[str] = []
    built = refused = 0
    for transcript in transcripts:
        state, dialogue = _corpus_state(transcript)
        conversation = Conversation(dialogue, measure=measure)
        probe = build_window(state, conversation, phase="execution", counter=counter, budget=10**9)
        fixed = probe.report.allocation.fixed.total
        compressible = conversation.effective_tokens
        for pct in (15, 45, 85):
            budget = fixed + compressible * pct // 100 + 200
            for phase in PHASES:
                new, old = _both_windows(
                    state, conversation, phase=phase, counter=counter, budget=budget
                )
                if new != old:
                    mismatches.append(f"{transcript.id} @{budget} {phase}")
                if new[0] == "refused":
                    refused += 1
                else:
                    built += 1
    assert not mismatches, mismatches[:5]
    assert built > 8 * refused


def _call(k: int, *names: str, thinking: bool = False) -> Message:
    blocks: list[Block] = (
        [ThinkingBlock(thinking="let me think", signature="s")] if thinking else []
    )
    blocks += [ToolUseBlock(id=f"c{k}_{n}", name=n, input={"k": k}) for n in names]
    return Message(role=Role.ASSISTANT, content=tuple(blocks), id=f"a{k}")


def _results(k: int, *names: str, size: int, important: bool = False) -> Message:
    blocks = tuple(
        ToolResultBlock(tool_use_id=f"c{k}_{n}", content=f"{n} says " + "y" * size) for n in names
    )
    return Message(role=Role.USER, content=blocks, id=f"r{k}", important=important)


def _edge_messages() -> list[Message]:
    """Thinking turns, a partly answered batch, a pinned result, chat turns and a pending call."""
    return [
        Message.user("fix the parser bug in module io", id="task"),
        _call(1, "bash", thinking=True),
        _results(1, "bash", size=900),
        _call(2, "read"),
        _results(2, "read", size=300),
        Message(
            role=Role.ASSISTANT,
            content=(ThinkingBlock(thinking="hm", signature="s"), TextBlock(text="found it")),
            id="t3",
        ),
        Message.user("Decision: keep the io module", id="u3"),
        _call(9, "bash", "grep"),
        _results(9, "bash", size=200),
        _call(4, "bash", "grep"),
        _results(4, "bash", "grep", size=1_500),
        _call(5, "read"),
        _results(5, "read", size=700, important=True),
        Message.assistant("and now", id="t6"),
        Message.user("go on", id="u6"),
        _call(7, "bash"),
        _results(7, "bash", size=2_500),
        _call(8, "grep"),
    ]


#: Ways to break pairs and make same-role neighbours: (messages hidden, messages appended later).
EDGE_CASES = (
    ((), 0),
    ((), 10),
    (("r1", "a2"), 13),
    (("a4",), 2),
    (("a5", "t6"), 4),
    (("a7",), 1),
    (("t3", "t6"), 0),
)


@pytest.mark.parametrize(("hidden", "later"), EDGE_CASES)
@pytest.mark.parametrize(
    "measured", MEASURES, ids=["fixed", "merge-penalty", "edit-penalty", "cl100k"]
)
def test_edge_cases_match_the_reference_at_every_budget(
    hidden: tuple[str, ...], later: int, measured: tuple[TokenCounter, Measure]
) -> None:
    """Broken pairs, clashing roles and appends: the same selection at every budget and evidence."""
    counter, measure = measured
    messages = _edge_messages()
    conversation = Conversation(messages[: len(messages) - later], measure=measure)
    if hidden:
        conversation.hide(hidden, truncation_parent="cut-1")
    for stage in ("before", "after"):
        if stage == "after":
            if not later:
                continue
            conversation.extend(messages[len(messages) - later :])
        total = conversation.effective_tokens
        for budget in range(0, total + 60, 9):
            for evidence in (0, total // 4, total):
                kwargs = {"budget": budget, "evidence": evidence, "measure": measure}
                new = _selection(_select_as_reference, conversation, counter=counter, **kwargs)
                old = _selection(reference.select, conversation, counter=counter, **kwargs)
                assert new == old, (stage, budget, evidence)
