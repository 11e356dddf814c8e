"""Window building: speed on a long conversation, and budget use over the corpus.

- ``window_build_10k``: median ms to build a Window from a 10,000-message
  conversation whose counts are cached (budget: 50% of its tokens), against
  LangChain's ``trim_messages(strategy="last", start_on="human",
  include_system=True)`` with a per-message counter reading precomputed counts,
  on the same conversation converted to LangChain messages.
- ``window_build_10k_cold``: the first build (the selector's per-conversation
  index is built: masked forms of tool results are measured once).
- ``window_build_after_append``: a build right after one more turn was appended.
- ``window_utilisation_median`` / ``_worst``: over the corpus sweep (every
  conversation, budgets = fixed costs + 10%..90% of the compressible tokens),
  ``(window tokens - fixed costs) / flexible budget``, where the fixed costs
  include the task message (critical, never compressible) and the headroom.

This module deliberately has no ``from __future__ import annotations``:
LangChain detects a per-message counter by the *evaluated* annotation of its
parameter (``BaseMessage``).
"""

import json
import statistics
from typing import Any

from benchmarks.harness import Harness
from ctxflow.budget import _selection as selection
from ctxflow.budget import build_window, window_measure
from ctxflow.errors import BudgetExceeded
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.model import Conversation, Message, Role, TextBlock, ToolResultBlock
from ctxflow.tokens import DEFAULT_MODEL, counter_for, get_profile


def _state_for(messages: list[Message]) -> LayeredState:
    names = sorted({u.name for m in messages for u in m.tool_uses})
    return LayeredState(system=SystemLayer(tools=tuple(ToolDef(name=n) for n in names)))


def _sweep_budgets(fixed: int, task: int, compressible: int) -> list[tuple[int, int]]:
    """(budget, wanted) pairs: fixed + headroom + task + p% of the compressible tokens."""
    out = []
    for pct in range(10, 100, 10):
        wanted = task + compressible * pct // 100
        headroom = 0
        for _ in range(60):
            nxt = min(2_000, (wanted + headroom) // 10)
            if nxt == headroom:
                break
            headroom = nxt
        out.append((fixed + wanted + headroom, wanted))
    return out


def corpus_utilisation(h: Harness) -> tuple[list[float], int]:
    """Utilisation of every sweep window over the corpus, and how many builds raised."""
    counter = counter_for("cl100k_base")
    measure = window_measure(counter)
    ratios: list[float] = []
    refused = 0
    transcripts = h.corpus() if not h.smoke else h.corpus()[:20]
    for transcript in transcripts:
        system = "\n".join(m.text for m in transcript.messages if m.role is Role.SYSTEM)
        dialogue = [m for m in transcript.messages if m.role is not Role.SYSTEM]
        state = _state_for(dialogue)
        state = LayeredState(system=SystemLayer(prompt=system, tools=state.system.tools))
        conversation = Conversation(dialogue, measure=measure)
        first = next(m for m in dialogue if m.role is Role.USER and not m.tool_results)
        task = conversation.tokens(first.id)
        probe = build_window(state, conversation, phase="execution", counter=counter, budget=10**9)
        fixed = probe.report.allocation.fixed.total
        compressible = conversation.effective_tokens - task
        for budget, _wanted in _sweep_budgets(fixed, task, compressible):
            try:
                window = build_window(
                    state, conversation, phase="execution", counter=counter, budget=budget
                )
            except BudgetExceeded:
                refused += 1
                continue
            flexible = window.report.allocation.flexible - task
            ratios.append((window.tokens - fixed - task) / flexible if flexible > 0 else 1.0)
    return ratios, refused


def _to_langchain(messages: list[Message], measure: Any) -> tuple[list[Any], dict[int, int]]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[Any] = []
    counts: dict[int, int] = {}
    for message in messages:
        made: list[Any] = []
        if message.role is Role.SYSTEM:
            made.append(SystemMessage(content=message.text))
        elif message.role is Role.ASSISTANT:
            calls = [
                {"name": u.name, "args": dict(u.input), "id": u.id, "type": "tool_call"}
                for u in message.tool_uses
            ]
            made.append(AIMessage(content=message.text, tool_calls=calls))
        else:
            for result in message.tool_results:
                made.append(ToolMessage(content=result.text, tool_call_id=result.tool_use_id))
            if message.text:
                made.append(HumanMessage(content=message.text))
        for lc in made:
            if isinstance(lc, ToolMessage):
                part = Message(
                    role=Role.USER,
                    content=(ToolResultBlock(tool_use_id=lc.tool_call_id, content=lc.content),),
                )
            elif isinstance(lc, AIMessage):
                part = message
            else:
                part = Message(role=Role.USER, content=(TextBlock(text=str(lc.content) or "."),))
            counts[id(lc)] = measure(part)
            out.append(lc)
    return out, counts


def _langchain_trim(messages: list[Any], counts: dict[int, int], limit: int) -> Any:
    from langchain_core.messages import BaseMessage, trim_messages

    def per_message(message: BaseMessage) -> int:
        return counts[id(message)]

    return trim_messages(
        messages,
        strategy="last",
        start_on="human",
        include_system=True,
        max_tokens=limit,
        token_counter=per_message,
    )


def run(h: Harness) -> None:
    """Time window builds on a long conversation and measure corpus budget use."""
    counter = counter_for("cl100k_base")
    measure = window_measure(counter)
    n = h.size(10_000, 500)
    messages = h.workload(n)
    state = _state_for(messages)
    conversation = Conversation(messages, measure=measure)
    tools_tokens = counter.count(
        json.dumps([{"name": t.name} for t in state.system.tools], separators=(",", ":"))
    )
    budget = conversation.total_tokens // 2 + tools_tokens

    def build() -> object:
        return build_window(state, conversation, phase="execution", counter=counter, budget=budget)

    cold = h.median_ms(
        build,
        runs=3,
        warmup=0,
        setup=lambda: selection._INDEXES.pop(conversation, None),
    )
    window = build_window(state, conversation, phase="execution", counter=counter, budget=budget)
    ours = h.median_ms(build, runs=15, repeat=10)
    peer_ms = None
    if h.has("langchain_core"):
        lc_messages, counts = _to_langchain(messages, measure)
        limit = sum(counts.values()) // 2
        peer_ms = h.median_ms(
            lambda: _langchain_trim(lc_messages, counts, limit), runs=9, repeat=10
        )
    h.record(
        f"window_build_{n}",
        ours,
        "ms",
        peer="langchain_core.trim_messages" if peer_ms is not None else None,
        peer_value=peer_ms,
        note="cached counts; budget 50% of the conversation's tokens; 10 calls per timed run",
        messages_in_window=len(window.messages),
        window_tokens=window.tokens,
    )
    h.record(f"window_build_{n}_cold", cold, "ms", note="first build after the view changed")

    profile = get_profile(DEFAULT_MODEL)
    typical = h.median_ms(
        lambda: build_window(
            state, conversation, phase="execution", counter=counter, profile=profile
        ),
        runs=15,
    )
    h.record(
        f"window_build_{n}_profile_budget",
        typical,
        "ms",
        note=f"{DEFAULT_MODEL} input budget ({profile.input_budget} tokens)",
    )

    tail = h.workload(n + 40)[n:]
    pending = [m for m in tail if m.role is not Role.SYSTEM]
    steps = iter(range(0, len(pending) - 1, 2))

    def append_turn() -> None:
        k = next(steps, None)
        if k is not None:
            conversation.extend(pending[k : k + 2])

    after = h.median_ms(build, runs=9, setup=append_turn)
    h.record(f"window_build_{n}_after_append", after, "ms", note="one turn appended before each")

    ratios, refused = corpus_utilisation(h)
    h.record(
        "window_utilisation_median",
        statistics.median(ratios),
        "ratio",
        note="(window - fixed) / flexible over the corpus sweep; goal >= 0.95",
        windows=len(ratios),
        refused=refused,
    )
    h.record(
        "window_utilisation_worst",
        min(ratios),
        "ratio",
        note="goal >= 0.80; small budgets hit turn granularity (text is never trimmed)",
        p5=sorted(ratios)[len(ratios) // 20],
    )
