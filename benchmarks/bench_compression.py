"""Compression: fact retention against LangChain ``trim_messages``; ladder speed at 10k msgs.

Fact retention plants facts as text appended to user messages at random
depths (seeded) of every corpus conversation, compresses to 25% and 50% of
the compressible tokens (total minus system prompt and first user message)
with the offline extractive summarizer, and counts the planted facts still
present verbatim in the effective view or in the memory layers (semantic
facts, episodic summaries). The facts vary as users write them: plain
statements, "my ... is ...", "please use ...", "the code is ...", numbers
with units, hosts, paths and confirmations ("yes, use ..."). The labelled run
prefixes each with "Decision:", "Remember:" or "Note:"; the unlabelled run
plants them as written. LangChain's ``trim_messages`` (strategy ``last``,
``start_on="human"``, system kept) gets the same budget in the same run; it
keeps only a tail, so only the view counts for it.

Speed: clearing plus truncation of a 10,000-message conversation to 50%,
counts cached (the conversation is built once; each run is undone in the
untimed setup), next to ``trim_messages`` with cached per-message counts.
``clear_truncate_10k_ms`` starts from a view whose validity is known (the
conversation keeps it up to date as turns are appended), ``_first_ms`` from a
conversation never checked (one full validity pass more), ``_unvalidated_ms``
without validity bookkeeping. ``steady_firing_10k_ms`` is what a session
pays: the ladder firing, as the guard decides, while a session grows to
10,000 messages under a 200k-token model's budget.
"""

# No ``from __future__ import annotations`` here: trim_messages recognises a
# per-message counter by its real ``BaseMessage`` annotation.

import gc
import random
import statistics
import string
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from benchmarks.harness import Harness
from ctxflow.compression import ClearToolResults, HardReset, Ladder, LadderPolicy, Truncate, undo
from ctxflow.compression import _details as details
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded
from ctxflow.layers import LayeredState
from ctxflow.memory import MemoryLimits, bound, with_counts
from ctxflow.model import Conversation, Message, Role, TextBlock, Transcript, check
from ctxflow.tokens import counter_for, message_measure
from ctxflow.tokens._counters import _short_count

SEED = 20261123
FACTS_PER_CONVERSATION = 3


_LABELS = ("Decision", "Remember", "Note")


def _code(rng: random.Random, size: int = 6) -> str:
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(size))


def _fact(rng: random.Random, n: int, labelled: bool) -> str:
    """One planted fact, in one of several ways users state things (seeded)."""
    port, size = rng.randint(2000, 9999), rng.randint(2, 512)
    word = rng.choice(("amber", "falcon", "orchid", "quartz", "tundra", "willow"))
    templates = (
        f"use port {port} for the staging proxy {n}",
        f"the customer's reservation code is {_code(rng)}",
        f"The nightly export runs on host {word}-{rng.randint(1, 99)}.internal",
        f"my employee number is {rng.randint(100_000, 999_999)}",
        f"please use the {word} profile for the load test {n}",
        f"The code is {_code(rng, 8)}",
        f"the batch size should be {size} items with a timeout of {rng.randint(5, 90)} seconds",
        f"write the report to reports/{word}/summary_{n}.csv",
        f"yes, use the {word} bucket for the backups",
        f"My manager's name is {word.title()} {rng.choice(('Okafor', 'Lindqvist', 'Tanaka'))}",
    )
    fact = templates[rng.randrange(len(templates))]
    if labelled:
        return f"{_LABELS[n % len(_LABELS)]}: {fact}"
    return fact[0].upper() + fact[1:] if rng.random() < 0.5 else fact


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
                "; labelled Decision:/Remember:/Note:"
                if labelled
                else "; facts as users write them"
            )
            + "; goal >= 95% at 25%",
            planted=planted,
            budget_exceeded=raised,
            violations=violations,
        )


def _trim(
    messages: Sequence[Message], limit: int, count: Callable[[str], int]
) -> Callable[[], object]:
    """A call of ``trim_messages`` over ``messages`` with cached per-message counts."""
    from langchain_core.messages import trim_messages

    lc = _to_langchain(messages)
    counter = _lc_counter(lc, count)
    return lambda: trim_messages(
        lc,
        max_tokens=limit,
        token_counter=counter,
        strategy="last",
        start_on="human",
        include_system=True,
    )


def _forget() -> None:
    """Empty the caches a compression fills: detail scans, short-text token counts."""
    details._cached_details.cache_clear()
    _short_count.cache_clear()


def _speed(h: Harness, measure: Callable[[Message], int], count: Callable[[str], int]) -> None:
    messages = h.workload(h.size(10_000, 500))
    conversation = Conversation(messages, measure=measure)
    view = conversation.effective()
    fixed = sum(conversation.tokens(m.id) for m in view[:2])
    budget = conversation.effective_tokens - fixed
    assert conversation.valid_for("anthropic")  # as the engine keeps it, step by step
    reports: list[Any] = []

    def reset() -> None:
        while reports:
            undo(conversation, reports.pop())
        # Each timed run meets the hidden user texts and its placeholders for the
        # first time, as a one-off compression would: no detail scan and no
        # placeholder count is served from an earlier run's cache.
        _forget()

    def clear_and_truncate() -> None:
        ladder = Ladder(rungs=[ClearToolResults(), Truncate()])
        reports.append(ladder.run(conversation, LayeredState(), budget=budget, fixed=fixed).report)

    def full_ladder() -> None:
        reports.append(
            Ladder().run(conversation, LayeredState(), budget=budget, fixed=fixed).report
        )

    peer_ms = None
    if h.has("langchain_core"):
        ours, peer_ms = h.paired_ms(
            clear_and_truncate, _trim(messages, fixed + budget // 2, count), setup=reset
        )
    else:
        ours = h.median_ms(clear_and_truncate, runs=7, setup=reset)
    last = reports[-1]
    peer_name = "langchain trim_messages (cached counts)"
    h.record(
        "compression.clear_truncate_10k_ms",
        ours,
        "ms",
        peer=peer_name if peer_ms is not None else None,
        peer_value=peer_ms,
        messages=len(messages),
        tokens_before=last.tokens_before,
        tokens_after=last.tokens_after,
        rungs=list(last.rungs_used),
        cleared=len(last.overlaid),
        hidden=len(last.hidden),
        note="one run from the uncompressed view (validity known, as the engine keeps it); "
        "every placeholder is built and counted afresh",
    )
    reset()
    h.record("compression.ladder_10k_ms", h.median_ms(full_ladder, runs=7, setup=reset), "ms")
    reset()

    # The same run on a conversation nobody checked yet: one full validity pass more.
    counts = {id(m): conversation.original_tokens(m.id) for m in messages}

    def known(message: Message) -> int:
        count = counts.get(id(message))
        return measure(message) if count is None else count

    fresh: list[Conversation] = []

    def new_conversation() -> None:
        fresh[:] = [Conversation(messages, measure=known)]
        _forget()

    def first_run() -> None:
        ladder = Ladder(rungs=[ClearToolResults(), Truncate()])
        ladder.run(fresh[0], LayeredState(), budget=budget, fixed=fixed)

    h.record(
        "compression.clear_truncate_10k_first_ms",
        h.median_ms(first_run, runs=5, setup=new_conversation),
        "ms",
        note="a conversation never checked before (counts cached): a full validity pass more",
    )

    def unchecked() -> None:
        ladder = Ladder(rungs=[ClearToolResults(), Truncate()], validate=False)
        reports.append(ladder.run(conversation, LayeredState(), budget=budget, fixed=fixed).report)

    h.record(
        "compression.clear_truncate_10k_unvalidated_ms",
        h.median_ms(unchecked, runs=7, setup=reset),
        "ms",
        note="validate=False: no validity bookkeeping (the caller checks windows)",
    )
    reset()
    _steady(h, messages, measure, count)


def _steady(
    h: Harness,
    messages: Sequence[Message],
    measure: Callable[[Message], int],
    count: Callable[[str], int],
) -> None:
    """A session growing to ``messages``: the guard after each turn, the ladder when it fires.

    The flexible budget is a 200k-token model's (150k after fixed costs and
    the answer); the firings timed are those in the last fifth of the session,
    next to ``trim_messages`` over the whole history there (what a LangChain
    loop runs before every call).
    """
    budget = h.size(150_000, 20_000)
    conversation = Conversation(messages[:2], measure=measure)
    fixed = conversation.effective_tokens
    ladder = Ladder()
    late = len(messages) * 4 // 5
    times: list[float] = []
    every: list[float] = []
    gc.collect()
    for turn, message in enumerate(messages[2:], start=2):
        conversation.append(message)
        if message.role is not Role.ASSISTANT or not ladder.guard(
            conversation, budget=budget, fixed=fixed
        ):
            continue
        gc.disable()
        start = time.perf_counter()
        ladder.run(conversation, LayeredState(), budget=budget, fixed=fixed, turn=turn)
        elapsed = (time.perf_counter() - start) * 1000
        gc.enable()
        every.append(elapsed)
        if turn >= late:
            times.append(elapsed)
    peer_ms = None
    if h.has("langchain_core"):
        peer_ms = h.median_ms(_trim(messages, fixed + budget // 2, count), runs=7)
    h.record(
        "compression.steady_firing_10k_ms",
        statistics.median(times) if times else 0.0,
        "ms",
        peer="langchain trim_messages over the whole history" if peer_ms is not None else None,
        peer_value=peer_ms,
        firings=len(times),
        worst_late_ms=round(max(times), 3) if times else None,
        worst_ms=round(max(every), 3) if every else None,
        all_firings=len(every),
        budget=budget,
        log_messages=len(conversation),
        shown_messages=conversation.effective_count,
        note="median ladder firing (guard at 75%, target 50%) over the last fifth of a "
        f"{len(messages):,}-message session; the guard itself is a comparison",
    )


def _after_reset(
    h: Harness, transcripts: list[Transcript], measure: Callable[[Message], int], counter: Any
) -> None:
    """Planted facts in the engine's next window after the ladder's last rung (hard reset)."""
    rng = random.Random(SEED)
    planted = kept = behind = refused = 0
    for transcript in transcripts:
        messages, facts = _plant(transcript, rng, labelled=False)
        if not facts:
            continue
        conversation = Conversation(messages, measure=measure)
        fixed = sum(conversation.tokens(m.id) for m in conversation.effective()[:2])
        room = int(0.25 * (conversation.effective_tokens - fixed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reset above its target warns
            result = Ladder(policy=LadderPolicy(hard_limit=1_000.0), rungs=[HardReset()]).run(
                conversation, LayeredState(), budget=2 * room, fixed=fixed
            )
        memory = with_counts(bound(result.state.memory, MemoryLimits()), counter)
        engine = Engine(
            conversation=conversation,
            state=attrs.evolve(result.state, memory=memory),
            budget=max(4_000, fixed + room),
        )
        engine.send("start", task=messages[1].text[:500] if len(messages) > 1 else "")
        try:
            window = engine.window()
        except BudgetExceeded:
            refused += 1
            continue
        found = "\n".join([window.system, window.context, _view_text(window.messages)])
        shown = _view_text(conversation.effective())
        planted += len(facts)
        kept += sum(fact in found for fact in facts)
        behind += sum(fact not in shown for fact in facts)
    h.record(
        "compression.fact_retention_after_reset_pct",
        100 * kept / planted if planted else 0.0,
        "%",
        note=f"{planted} facts as users write them, {behind} of them hidden by a hard reset "
        "at 25%; counted in the engine's next window (memory bounded, chosen by relevance); "
        "goal >= 90%",
        planted=planted,
        behind=behind,
        window_refused=refused,
    )


def run(h: Harness) -> None:
    """Record fact retention at 25% and 50%, and the 10k-message ladder times."""
    counter = counter_for("cl100k_base")
    measure = message_measure(counter, overhead=4)
    transcripts = h.corpus()
    if h.smoke:
        transcripts = transcripts[:: max(1, len(transcripts) // 20)]
    _retention(h, transcripts, measure, counter.count)
    _retention(h, transcripts, measure, counter.count, labelled=False)
    _after_reset(h, transcripts, measure, counter)
    _speed(h, measure, counter.count)
