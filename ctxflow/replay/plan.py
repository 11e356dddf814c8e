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

Another chart may name its events differently or take more steps to finish
(``review_loop`` finishes with ``submit`` then ``approve``). :func:`fit_plan`
rewrites a plan into a chart's events before anything runs: a planned event
stays where the chart takes it; otherwise it becomes the chart's shortest
route to the phase the event leads to in the default chart (``finish``: to a
final state). An event with neither is reported, all of them at once, as a
:class:`~ctxflow.errors.ChartError`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import attrs

from ctxflow.engine import Chart
from ctxflow.errors import ChartError
from ctxflow.model import Message, Role

__all__ = ["Step", "fit_plan", "plan_replay"]

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


# Where each planned event leads in the default chart: a phase, a final state
# (``_FINAL``), or nowhere new (``None``: the step has no route, only its name).
_FINAL = ""
_LEADS_TO: dict[str, str | None] = {
    "start": "planning",
    "plan_ready": "execution",
    "step": None,
    "reflect": "reflection",
    "execute": "execution",
    "finish": _FINAL,
}


def _taken(chart: Chart, phase: str, event: str) -> str | None:
    """The phase ``event`` leads to from ``phase`` (None: the chart does not take it there)."""
    for spec in chart.transitions_from(phase):
        if spec.event == event:
            return phase if spec.target is None else chart.resolve_target(spec.target, {})
    return None


def _route(chart: Chart, phase: str, goal: str) -> tuple[list[str], str] | None:
    """The shortest list of events from ``phase`` to ``goal`` (``_FINAL``: any final state)."""
    reached = {phase: list[str]()}
    queue = deque([phase])
    while queue:
        here = queue.popleft()
        if here == goal or (goal == _FINAL and here in chart.finals):
            return reached[here], here
        for spec in chart.transitions_from(here):
            if spec.target is None:
                continue
            there = chart.resolve_target(spec.target, {})
            if there not in reached:
                reached[there] = [*reached[here], spec.event]
                queue.append(there)
    return None


def fit_plan(steps: Iterable[Step], chart: Chart) -> list[Step]:
    """``steps`` in ``chart``'s events; ChartError naming every event it cannot follow.

    Guards are not evaluated: the fit follows the chart's transition table.
    """
    out: list[Step] = []
    missing: dict[tuple[str, str], None] = {}
    phase = chart.initial
    for step in steps:
        if step.kind != "event" or step.event is None:
            out.append(step)
            continue
        target = _taken(chart, phase, step.event)
        if target is not None:
            out.append(step)
            phase = target
            continue
        goal = _LEADS_TO.get(step.event)
        found = _route(chart, phase, goal) if goal is not None else None
        if found is None:
            missing[(step.event, phase)] = None
            if goal and goal in chart.phases:
                phase = goal
            continue
        events, phase = found
        out += [Step(kind="event", event=event, turn=step.turn) for event in events]
    if missing:
        needed = ", ".join(f"{event!r} in phase {phase!r}" for event, phase in missing)
        raise ChartError(
            f"a replay through chart {chart.name!r} needs its events, or a route to where they "
            f"lead, in these phases (missing: {needed}; the chart's events: "
            f"{', '.join(chart.events)})",
            rule="replay_events",
            chart=chart.name,
            missing=[event for event, _ in missing],
        )
    return out
