"""Deriving the phase events of a recorded conversation.

A transcript records messages, not phases. ``ctxflow run`` reconstructs the
agent loop the default chart describes:

- ``start`` once the system prompt and the task (first user message) are known;
  the agent is *planning* until its first tool call;
- ``plan_ready`` before the first assistant turn that calls a tool; from then
  on the agent is *executing*, with a ``step`` before every further assistant
  turn;
- every ``reflect_every`` steps (0 disables it), ``reflect`` before an
  assistant turn — that turn is built in the *reflection* phase — and
  ``execute`` before the turn after it;
- ``finish`` at the end (a conversation that never called a tool goes through
  ``plan_ready`` first, since the chart finishes only from execution or
  reflection).

Before every assistant turn the plan asks for a window: what the model would
have seen when it produced that turn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import attrs

from ctxflow.model import Message, Role

__all__ = ["Step", "plan_replay"]

Kind = Literal["event", "window", "message"]


@attrs.frozen(kw_only=True)
class Step:
    """One thing the replay does: send an event, build a window, or feed a message."""

    kind: Kind
    event: str | None = None
    message: Message | None = None
    turn: int = 0


def plan_replay(messages: Sequence[Message], *, reflect_every: int = 10) -> Iterator[Step]:
    """The steps replaying ``messages`` (system prompt excluded) through the default chart."""
    if reflect_every < 0:
        raise ValueError(f"'reflect_every' must be >= 0 (got {reflect_every})")
    phase = "idle"
    steps = 0
    turn = 0
    for message in messages:
        if message.role is Role.SYSTEM:
            continue
        if phase == "idle":
            yield Step(kind="message", message=message, turn=turn)
            yield Step(kind="event", event="start", turn=turn)
            phase = "planning"
            continue
        if message.role is Role.ASSISTANT:
            turn += 1
            if phase == "planning" and message.tool_uses:
                yield Step(kind="event", event="plan_ready", turn=turn)
                phase = "execution"
            elif phase == "reflection":
                yield Step(kind="event", event="execute", turn=turn)
                phase = "execution"
            elif phase == "execution":
                if reflect_every and steps >= reflect_every:
                    yield Step(kind="event", event="reflect", turn=turn)
                    phase = "reflection"
                    steps = 0
                else:
                    yield Step(kind="event", event="step", turn=turn)
                    steps += 1
            yield Step(kind="window", turn=turn)
        yield Step(kind="message", message=message, turn=turn)
    if phase == "planning":
        yield Step(kind="event", event="plan_ready", turn=turn)
    if phase != "idle":
        yield Step(kind="event", event="finish", turn=turn)
