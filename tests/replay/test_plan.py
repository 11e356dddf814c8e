"""Tests for deriving phase events from a recorded conversation."""

from __future__ import annotations

import pytest

from ctxflow.model import Message, ToolResultBlock, ToolUseBlock, Transcript
from ctxflow.replay.plan import plan_replay


def call(i: int) -> Message:
    return Message(
        role="assistant", content=(ToolUseBlock(id=f"t{i}", name="bash", input={"c": i}),)
    )


def result(i: int) -> Message:
    return Message(role="user", content=(ToolResultBlock(tool_use_id=f"t{i}", content="ok"),))


def events(messages: list[Message], **kw: int) -> list[str]:
    return [s.event or s.kind for s in plan_replay(messages, **kw) if s.kind != "message"]


def test_planning_then_execution_with_steps() -> None:
    """Text turns plan; the first tool call moves to execution; later turns are steps."""
    msgs = [
        Message.system("s"),
        Message.user("task"),
        Message.assistant("plan"),
        Message.user("ok"),
    ]
    msgs += [call(1), result(1), call(2), result(2), Message.assistant("done")]
    assert events(msgs) == [
        "start",
        "window",
        "plan_ready",
        "window",
        "step",
        "window",
        "step",
        "window",
        "finish",
    ]


def test_reflection_every_k_steps() -> None:
    """Every K steps a turn is built in reflection, and the next one returns to execution."""
    msgs = [Message.user("task")]
    for i in range(6):
        msgs += [call(i), result(i)]
    got = [e for e in events(msgs, reflect_every=2) if e != "window"]
    assert got == ["start", "plan_ready", "step", "step", "reflect", "execute", "step", "finish"]


def test_no_tool_calls_still_finishes() -> None:
    """A conversation without tool calls passes through execution to finish."""
    got = events([Message.user("hi"), Message.assistant("hello")])
    assert got == ["start", "window", "plan_ready", "finish"]


def test_every_message_fed_once_in_order() -> None:
    """The plan feeds each non-system message exactly once, in order."""
    msgs = [Message.system("s"), Message.user("task"), call(1), result(1)]
    fed = [s.message for s in plan_replay(msgs) if s.kind == "message"]
    assert fed == msgs[1:]


def test_negative_reflect_every_rejected() -> None:
    """reflect_every below zero is refused."""
    with pytest.raises(ValueError, match="reflect_every"):
        list(plan_replay([], reflect_every=-1))


@pytest.mark.corpus
def test_every_corpus_conversation_plans_a_legal_path(corpus: list[Transcript]) -> None:
    """Every corpus conversation yields a path the default chart's event table allows."""
    allowed = {
        ("idle", "start"): "planning",
        ("planning", "plan_ready"): "execution",
        ("execution", "step"): "execution",
        ("execution", "reflect"): "reflection",
        ("reflection", "execute"): "execution",
        ("execution", "finish"): "done",
        ("reflection", "finish"): "done",
    }
    for transcript in corpus:
        phase = "idle"
        for step in plan_replay(transcript.messages, reflect_every=5):
            if step.kind == "event":
                assert step.event is not None
                phase = allowed[(phase, step.event)]
        assert phase == "done", transcript.id
