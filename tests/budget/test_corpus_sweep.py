"""The corpus sweep: every real conversation at nine budgets, valid and within budget."""

from __future__ import annotations

import pytest

from ctxflow.budget import build_window, tools_json, window_measure
from ctxflow.errors import BudgetExceeded
from ctxflow.model import Conversation, Message, Role, Transcript, check
from ctxflow.tokens import counter_for

from .conftest import corpus_state


def _budgets(fixed: int, task: int, compressible: int) -> list[int]:
    """Fixed costs + headroom + task message + 10%..90% of the compressible tokens."""
    out = []
    for pct in range(10, 100, 10):
        wanted = task + compressible * pct // 100
        headroom = 0
        for _ in range(60):
            nxt = min(2_000, (wanted + headroom) // 10)
            if nxt == headroom:
                break
            headroom = nxt
        out.append(fixed + wanted + headroom)
    return out


@pytest.mark.corpus
def test_corpus_sweep_has_no_violations_and_no_overruns(transcripts: list[Transcript]) -> None:
    """All 276 conversations x 9 budgets: 0 validity violations, 0 overruns, refusals justified."""
    counter = counter_for("cl100k_base")
    measure = window_measure(counter)
    violations: list[str] = []
    overruns: list[str] = []
    refusals: list[BudgetExceeded] = []
    built = 0
    for transcript in transcripts:
        state, dialogue = corpus_state(transcript)
        conversation = Conversation(dialogue, measure=measure)
        first = next(m for m in dialogue if m.role is Role.USER and not m.tool_results)
        task = conversation.tokens(first.id)
        probe = build_window(state, conversation, phase="execution", counter=counter, budget=10**9)
        fixed = probe.report.allocation.fixed.total
        for budget in _budgets(fixed, task, conversation.effective_tokens - task):
            try:
                window = build_window(
                    state, conversation, phase="execution", counter=counter, budget=budget
                )
            except BudgetExceeded as exc:
                refusals.append(exc)
                continue
            built += 1
            for api in ("anthropic", "openai"):
                report = check(window.messages, api=api, tools=window.tools)
                if not report.ok:
                    violations.append(f"{transcript.id} @{budget} {api}: {report.violations[0]}")
            text = tools_json(window.tools)
            recount = (
                counter.count(window.system)
                + (counter.count(text) if text else 0)
                + (measure(Message.user(window.context)) if window.context else 0)
                + sum(measure(m) for m in window.messages)
            )
            if recount > budget or recount != window.tokens:
                overruns.append(f"{transcript.id} @{budget}: {recount} (reported {window.tokens})")
    assert not violations, violations[:5]
    assert not overruns, overruns[:5]
    # Refusals only where the task plus the last turn (trimmed) truly cannot fit.
    assert all(e.rule == "critical_exceeds" for e in refusals)
    assert all(e.critical + e.details.get("last_turn", 0) > e.budget for e in refusals)
    assert built >= 0.95 * (built + len(refusals))
