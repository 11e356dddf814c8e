"""Compression: fact retention against LangChain ``trim_messages``; ladder speed at 10k msgs.

Fact retention plants decisions and things to remember ("Decision: use port
8231 for the staging proxy", "Remember: the customer's reservation code is
QX7P2L") as text appended to user messages at random depths (seeded) of every
corpus conversation, compresses to 25% and 50% of the compressible tokens
(total minus system prompt and first user message) with the offline
extractive summarizer, and counts the planted facts still present in the
effective view or in the memory layers (semantic facts, episodic summaries).
The same facts without their label ("the customer's reservation code is
QX7P2L") measure what survives when the extractor cannot recognise them.
LangChain's ``trim_messages`` (strategy ``last``, ``start_on="human"``,
system kept) gets the same budget in the same run; it keeps only a tail, so
only the view counts for it.

Speed: clearing plus truncation of a 10,000-message conversation to 50%,
counts cached (the conversation is built once; each run is undone in the
untimed setup), next to ``trim_messages`` with cached per-message counts: a
fresh ladder each run (a full validity pass over the input), the same ladder
across runs (warm), and without validation.
"""

# No ``from __future__ import annotations`` here: trim_messages recognises a
# per-message counter by its real ``BaseMessage`` annotation.

import random
import string
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from benchmarks.harness import Harness
from ctxflow.compression import ClearToolResults, Ladder, Truncate, undo
from ctxflow.errors import BudgetExceeded
from ctxflow.layers import LayeredState
from ctxflow.model import Conversation, Message, Role, TextBlock, Transcript, check
from ctxflow.tokens import counter_for, message_measure

SEED = 20261123
FACTS_PER_CONVERSATION = 3


def _fact(rng: random.Random, n: int, labelled: bool) -> str:
    if n % 2:
        code = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))
        fact = f"Remember: the customer's reservation code is {code}"
    else:
        fact = f"Decision: use port {rng.randint(2000, 9999)} for the staging proxy {n}"
    return fact if labelled else fact.split(": ", 1)[1]


def _plant(
    transcript: Transcript, rng: random.Random, labelled: bool = True
) -> tuple[list[Message], list[str]]:
    messages = list(transcript.messages)
    users = [
        i
        for i, m in enumerate(messages)
        if m.role is Role.USER and i > 0 and messages[i - 1].role is not Role.SYSTEM
    ]
    if not users:
        return messages, []
    facts = []
    for n, index in enumerate(sorted(rng.sample(users, min(FACTS_PER_CONVERSATION, len(users))))):
        fact = _fact(rng, n, labelled)
        facts.append(fact)
        message = messages[index]
        messages[index] = attrs.evolve(message, content=(*message.content, TextBlock(text=fact)))
    return messages, facts


def _view_text(messages: Sequence[Message]) -> str:
    parts = []
    for message in messages:
        parts.append(message.text)
        parts.extend(r.text for r in message.tool_results)
    return "\n".join(parts)


def _to_langchain(messages: Sequence[Message]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[Any] = []
    for m in messages:
        if m.role is Role.SYSTEM:
            out.append(SystemMessage(m.text, id=m.id))
        elif m.role is Role.ASSISTANT:
            calls = [
                {"name": u.name, "args": dict(u.input), "id": u.id, "type": "tool_call"}
                for u in m.tool_uses
            ]
            out.append(AIMessage(content=m.text, tool_calls=calls, id=m.id))
        else:
            for r in m.tool_results:
                out.append(
                    ToolMessage(r.text, tool_call_id=r.tool_use_id, id=f"{m.id}/{r.tool_use_id}")
                )
            if m.text:
                out.append(HumanMessage(m.text, id=m.id))
    return out


def _lc_counter(messages: Sequence[Any], count: Callable[[str], int]) -> Callable[..., int]:
    from langchain_core.messages import BaseMessage

    cache: dict[str, int] = {}
    for message in messages:
        text = message.content if isinstance(message.content, str) else str(message.content)
        extra = sum(
            count(str(c["args"])) + count(c["name"]) for c in getattr(message, "tool_calls", [])
        )
        cache[message.id] = count(text) + extra + 4

    def counter(message: BaseMessage) -> int:
        return cache[message.id]

    return counter


def _retention(
    h: Harness,
    transcripts: list[Transcript],
    measure: Callable[[Message], int],
    count: Callable[[str], int],
    *,
    labelled: bool = True,
    fractions: Sequence[float] = (0.25, 0.50),
) -> None:
    with_peer = h.has("langchain_core")
    for fraction in fractions:
        rng = random.Random(SEED)
        planted = kept = peer_kept = raised = violations = 0
        for transcript in transcripts:
            messages, facts = _plant(transcript, rng, labelled)
            if not facts:
                continue
            conversation = Conversation(messages, measure=measure)
            view = conversation.effective()
            fixed = sum(conversation.tokens(m.id) for m in view[:2])
            compressible = conversation.effective_tokens - fixed
            budget = max(1, int(fraction * compressible / 0.5))
            try:
                result = Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed)
            except BudgetExceeded:
                # Nothing changed, so nothing was lost, but nothing fits either:
                # counted apart, and left out of both sides of the comparison.
                raised += 1
                continue
            planted += len(facts)
            for api in ("anthropic", "openai"):
                violations += len(check(conversation.effective(), api=api).violations)  # type: ignore[arg-type]
            memory = result.state.memory
            haystack = "\n".join(
                [
                    _view_text(conversation.effective()),
                    *(f.value for f in memory.semantic),
                    *(e.summary for e in memory.episodic),
                ]
            )
            kept += sum(fact in haystack for fact in facts)
            if with_peer:
                from langchain_core.messages import trim_messages

                lc = _to_langchain(messages)
                trimmed = trim_messages(
                    lc,
                    max_tokens=fixed + int(fraction * compressible),
                    token_counter=_lc_counter(lc, count),
                    strategy="last",
                    start_on="human",
                    include_system=True,
                )
                text = "\n".join(str(m.content) for m in trimmed)
                peer_kept += sum(fact in text for fact in facts)
        pct = int(fraction * 100)
        share = 100 * kept / planted if planted else 0.0
        kind = "" if labelled else "unlabelled_"
        h.record(
            f"compression.fact_retention_{kind}{pct}pct",
            share,
            "%",
            peer="langchain trim_messages" if with_peer else None,
            peer_value=100 * peer_kept / planted if with_peer and planted else None,
            note=f"{planted} facts planted in {len(transcripts)} conversations"
            + (
                "; goal >= 95% at 25%"
                if labelled
                else "; facts without a Decision:/Remember: label"
            ),
            planted=planted,
            budget_exceeded=raised,
            violations=violations,
        )


def _speed(h: Harness, measure: Callable[[Message], int], count: Callable[[str], int]) -> None:
    messages = h.workload(h.size(10_000, 500))
    conversation = Conversation(messages, measure=measure)
    view = conversation.effective()
    fixed = sum(conversation.tokens(m.id) for m in view[:2])
    budget = conversation.effective_tokens - fixed
    reports: list[Any] = []

    def reset() -> None:
        while reports:
            undo(conversation, reports.pop())

    def clear_and_truncate() -> None:
        ladder = Ladder(rungs=[ClearToolResults(), Truncate()])
        reports.append(ladder.run(conversation, LayeredState(), budget=budget, fixed=fixed).report)

    def full_ladder() -> None:
        reports.append(
            Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed).report
        )

    ours = h.median_ms(clear_and_truncate, runs=7, setup=reset)
    last = reports[-1]
    peer_ms = None
    if h.has("langchain_core"):
        from langchain_core.messages import trim_messages

        lc = _to_langchain(messages)
        counter = _lc_counter(lc, count)
        limit = fixed + budget // 2
        peer_ms = h.median_ms(
            lambda: trim_messages(
                lc,
                max_tokens=limit,
                token_counter=counter,
                strategy="last",
                start_on="human",
                include_system=True,
            ),
            runs=7,
        )
    h.record(
        "compression.clear_truncate_10k_ms",
        ours,
        "ms",
        peer="langchain trim_messages (cached counts)" if peer_ms is not None else None,
        peer_value=peer_ms,
        messages=len(messages),
        tokens_before=last.tokens_before,
        tokens_after=last.tokens_after,
        rungs=list(last.rungs_used),
    )
    reset()
    h.record("compression.ladder_10k_ms", h.median_ms(full_ladder, runs=7, setup=reset), "ms")
    reset()

    warm_ladder = Ladder(rungs=[ClearToolResults(), Truncate()])

    def warm() -> None:
        # One ladder per session, as the engine holds it: a view it validated
        # before is not walked again.
        run = warm_ladder.run(conversation, LayeredState(), budget=budget, fixed=fixed)
        reports.append(run.report)

    h.record(
        "compression.clear_truncate_10k_warm_ms",
        h.median_ms(warm, runs=7, setup=reset),
        "ms",
        note="the same Ladder across runs (input view validated before)",
    )
    reset()

    def unchecked() -> None:
        ladder = Ladder(rungs=[ClearToolResults(), Truncate()], validate=False)
        reports.append(ladder.run(conversation, LayeredState(), budget=budget, fixed=fixed).report)

    h.record(
        "compression.clear_truncate_10k_unvalidated_ms",
        h.median_ms(unchecked, runs=7, setup=reset),
        "ms",
        note="validate=False: no input/final validity pass (the caller checks windows)",
    )
    reset()


def run(h: Harness) -> None:
    """Record fact retention at 25% and 50%, and the 10k-message ladder times."""
    counter = counter_for("cl100k_base")
    measure = message_measure(counter, overhead=4)
    transcripts = h.corpus()
    if h.smoke:
        transcripts = transcripts[:: max(1, len(transcripts) // 20)]
    _retention(h, transcripts, measure, counter.count)
    _retention(h, transcripts, measure, counter.count, labelled=False, fractions=(0.25,))
    _speed(h, measure, counter.count)
