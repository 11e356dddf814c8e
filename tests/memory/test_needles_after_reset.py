"""Planted details survive a hard reset: they reach the window from memory, within bounds."""

from __future__ import annotations

import random
import warnings

import attrs
import pytest

from ctxflow.compression import HardReset, Ladder, LadderPolicy
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded
from ctxflow.layers import LayeredState
from ctxflow.memory import MemoryLimits, bound, with_counts
from ctxflow.model import Conversation, Message, Role, TextBlock, Transcript
from ctxflow.tokens import counter_for, message_measure

SEED = 20261204
GOAL = 0.90


def _needle(rng: random.Random, n: int) -> str:
    word = rng.choice(("amber", "falcon", "orchid", "quartz", "tundra", "willow"))
    return rng.choice(
        (
            f"my employee number is {rng.randint(100_000, 999_999)}",
            f"use port {rng.randint(2000, 9999)} for the staging proxy {n}",
            f"write the report to reports/{word}/summary_{n}.csv",
            f"The nightly export runs on host {word}-{rng.randint(1, 99)}.internal",
            f"Decision: keep the {word} profile for load test {n}",
        )
    )


def _planted(transcript: Transcript, rng: random.Random) -> tuple[list[Message], list[str]]:
    messages = list(transcript.messages)
    users = [
        i
        for i, m in enumerate(messages)
        if m.role is Role.USER and i > 1 and not m.tool_results and m.text.strip()
    ]
    needles = []
    for n, at in enumerate(sorted(rng.sample(users, min(3, len(users))))):
        needle = _needle(rng, n)
        needles.append(needle)
        messages[at] = attrs.evolve(
            messages[at], content=(*messages[at].content, TextBlock(text=needle))
        )
    return messages, needles


def _text(messages: tuple[Message, ...]) -> str:
    return "\n".join(
        [m.text for m in messages] + [r.text for m in messages for r in m.tool_results]
    )


@pytest.mark.corpus
def test_needles_reach_the_window_after_a_hard_reset(transcripts: list[Transcript]) -> None:
    """At 25% of the compressible tokens, after the ladder's last rung, the engine's next
    window (memory bounded and chosen by relevance) still holds at least 90% of them."""
    counter = counter_for("cl100k_base")
    measure = message_measure(counter)
    rng = random.Random(SEED)
    planted = kept = behind = 0
    for transcript in transcripts[::3]:
        messages, needles = _planted(transcript, rng)
        if not needles:
            continue
        conversation = Conversation(messages, measure=measure)
        fixed = sum(conversation.tokens(m.id) for m in conversation.effective()[:2])
        room = int(0.25 * (conversation.effective_tokens - fixed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a reset above its target warns
            result = Ladder(policy=LadderPolicy(hard_limit=1_000.0), rungs=[HardReset()]).run(
                conversation, LayeredState(), budget=2 * room, fixed=fixed
            )
        hidden = [m for m in conversation.messages if m.hidden]
        assert hidden, transcript.id
        memory = with_counts(bound(result.state.memory, MemoryLimits()), counter)
        engine = Engine(
            conversation=conversation,
            state=attrs.evolve(result.state, memory=memory),
            budget=max(4_000, fixed + room),
        )
        engine.send("start", task=messages[1].text[:500])
        try:
            window = engine.window()
        except BudgetExceeded:
            continue  # the kept messages alone do not fit: no window to look in
        found = "\n".join([window.system, window.context, _text(window.messages)])
        shown = _text(tuple(conversation.effective()))
        planted += len(needles)
        kept += sum(needle in found for needle in needles)
        behind += sum(needle not in shown for needle in needles)  # only memory can bring it
    assert planted >= 200 and behind >= 0.75 * planted, (planted, behind)
    assert kept / planted >= GOAL, f"{kept}/{planted}"
