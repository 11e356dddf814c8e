"""The prompt-cache layout: a step keeps the previous request as a prefix; reuse is measured."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import pytest

from ctxflow.adapters import (
    CachePolicy,
    PrefixMeter,
    canonical_json,
    prefix_reuse,
    render_anthropic,
    render_openai,
)
from ctxflow.adapters._base import append_context
from ctxflow.engine import Engine
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.testing import FixedCounter

TOOLS = (ToolDef(name="read"), ToolDef(name="edit"))
COUNT = functools.lru_cache(maxsize=None)(FixedCounter().count)


def _engine() -> Engine:
    state = LayeredState(system=SystemLayer(prompt="You are a careful agent.", tools=TOOLS))
    engine = Engine(state=state, budget=50_000)
    engine.send("start", task="fix the parser")
    engine.add_message(Message.user("fix the parser"))
    engine.send("plan_ready")
    return engine


def _round(engine: Engine, n: int) -> None:
    engine.add_messages(
        [
            Message(role="assistant", content=(ToolUseBlock(id=f"u{n}", name="read", input={}),)),
            Message(role="user", content=(ToolResultBlock(tool_use_id=f"u{n}", content="x" * 80),)),
        ]
    )


def _render(api: str, engine: Engine) -> dict[str, Any]:
    window = engine.window()
    if api == "anthropic":
        policy = CachePolicy(last_message=True)
        return render_anthropic(window, model="m", max_tokens=1_000, cache=policy)
    return render_openai(window, model="m")


@pytest.mark.parametrize("api", ["anthropic", "openai"])
def test_a_step_without_compression_keeps_the_previous_request_as_a_prefix(api: str) -> None:
    """After a step that compressed nothing, the last request (bar late context) leads the next."""
    engine = _engine()
    _round(engine, 1)
    before = _render(api, engine)
    engine.send("step")
    _round(engine, 2)
    after = _render(api, engine)
    assert engine.records[-1].compression is None
    reuse = prefix_reuse(before, after, COUNT)
    assert reuse.broke_at is None
    assert 0 < reuse.served < reuse.total
    assert after["messages"][-1] != before["messages"][-1]


def test_a_phase_change_keeps_tools_and_system_and_history() -> None:
    """Entering reflection changes only the late context: the prefix survives the phase change."""
    engine = _engine()
    _round(engine, 1)
    before = _render("anthropic", engine)
    engine.send("reflect")
    after = _render("anthropic", engine)
    assert engine.phase == "reflection"
    assert before["tools"] == after["tools"] and before["system"] == after["system"]
    assert prefix_reuse(before, after, COUNT).broke_at is None
    assert "phase: reflection" in after["messages"][-1]["content"][-1]["text"]


def test_the_last_breakpoint_ends_the_conversation_not_the_late_context() -> None:
    """The cache mark sits on the conversation's last block; the late context follows it."""
    engine = _engine()
    _round(engine, 1)
    body = _render("anthropic", engine)
    last = body["messages"][-1]["content"]
    assert last[-1]["text"].startswith("<context>") and "cache_control" not in last[-1]
    assert "cache_control" in last[-2]


def test_reuse_counts_add_up_and_name_where_a_prefix_broke() -> None:
    """Written plus the late context is the total; a changed system prompt is where reuse breaks."""
    engine = _engine()
    body = _render("anthropic", engine)
    first = prefix_reuse(None, body, COUNT)
    assert first.served == 0 and first.broke_at is None
    late = COUNT(canonical_json(body["messages"][-1]["content"][-1]).decode())
    assert first.written + late == first.total
    changed = {**body, "system": "another prompt"}
    assert prefix_reuse(body, changed, COUNT).broke_at == "system[0]"
    assert prefix_reuse(body, body, COUNT).served == first.written


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], [{"role": "user", "content": "<context>c</context>"}]),
        (
            [{"role": "assistant", "content": "hi"}],
            [
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "<context>c</context>"},
            ],
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "q"}]}],
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "q"},
                        {"type": "text", "text": "<context>c</context>"},
                    ],
                }
            ],
        ),
        (
            [{"role": "user", "content": "q"}],
            [{"role": "user", "content": "q\n\n<context>c</context>"}],
        ),
    ],
)
def test_late_context_keeps_roles_alternating(
    messages: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    """The late context joins a final user message, or comes as a user message of its own."""
    append_context(messages, "<context>c</context>")
    assert messages == expected


def test_a_meter_measures_a_sequence_as_pairs_do_and_counts_each_item_once() -> None:
    """PrefixMeter gives prefix_reuse's figures for each pair, counting an item only once."""
    engine = _engine()
    bodies = []
    for n in range(4):
        _round(engine, n)
        bodies.append(_render("anthropic", engine))
        engine.send("step")
    counted: list[str] = []

    def count(text: str) -> int:
        counted.append(text)
        return COUNT(text)

    meter = PrefixMeter(count)
    measured = [meter.measure(body) for body in bodies]
    pairs = [prefix_reuse(None, bodies[0], COUNT)]
    pairs += [prefix_reuse(a, b, COUNT) for a, b in itertools.pairwise(bodies)]
    assert measured == pairs
    assert len(counted) == len(set(counted)), [c for c in counted if counted.count(c) > 1]
