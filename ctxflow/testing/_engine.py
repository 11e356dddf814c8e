"""Testing agents built on the engine: a transition recorder, assertions, event paths.

- :class:`TransitionRecorder` is a listener that keeps every step record,
  checkpoint and compression report it is told about.
- :func:`assert_transition` checks the last applied event and what it did
  (phase change, checkpoint, reallocation, compression, budget, tool pairs),
  with a message that says which expectation failed and what happened instead.
- :func:`event_paths` lists every event sequence through a chart up to a
  depth, and :func:`transition_cover` a short set of sequences that fires every
  transition at least once — parametrise one test with either to exercise a
  whole chart. Both follow the chart's structure (history states included) and
  ignore guards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import attrs

from ctxflow.engine import Chart, StepRecord, TransitionSpec, load_chart

__all__ = [
    "TransitionRecorder",
    "assert_transition",
    "event_paths",
    "expected_phases",
    "transition_cover",
]


@attrs.define
class TransitionRecorder:
    """A listener that records what the engine reports, in order."""

    records: list[StepRecord] = attrs.Factory(list)
    checkpoints: list[tuple[str, str, str]] = attrs.Factory(list)
    compressions: list[tuple[Any, str]] = attrs.Factory(list)

    def on_transition(self, record: StepRecord) -> None:
        """Keep a step record."""
        self.records.append(record)

    def on_checkpoint(self, checkpoint_id: str, *, trigger: str, phase: str) -> None:
        """Keep a checkpoint's id, trigger and phase."""
        self.checkpoints.append((checkpoint_id, trigger, phase))

    def on_compression(self, report: Any, *, phase: str) -> None:
        """Keep a compression report and the phase it ran for."""
        self.compressions.append((report, phase))

    @property
    def path(self) -> list[tuple[str, str, str]]:
        """``(event, source, target)`` of every recorded step."""
        return [(r.trigger, r.source, r.target) for r in self.records]

    @property
    def phases(self) -> list[str]:
        """The phases entered, in order (internal steps left out)."""
        return [r.target for r in self.records if r.phase_changed]


def _budget(engine: Any) -> int:
    allocation = engine.allocation
    budget = getattr(allocation, "input_budget", None)
    return int(budget) if budget is not None else int(engine.profile.input_budget)


def assert_transition(
    engine: Any,
    event: str,
    *,
    from_: str | None = None,
    to: str | None = None,
    checkpoint: bool | None = None,
    reallocated: bool | None = None,
    compressed: bool | None = None,
    within_budget: bool | None = None,
    pairs_intact: bool | None = None,
) -> StepRecord:
    """Assert what the last event applied to ``engine`` did; return its record.

    Each keyword left at None is not checked. ``within_budget`` compares the
    effective conversation with the allocation's input budget (the model's when
    there is no allocation); ``pairs_intact`` checks the effective conversation
    against the Anthropic rules (a trailing pending call allowed).
    """
    records: Sequence[StepRecord] = engine.records
    assert records, f"expected event {event!r} to have been applied, but no event was"
    record = records[-1]
    problems: list[str] = []
    if record.trigger != event:
        problems.append(f"event: expected {event!r}, the last event was {record.trigger!r}")
    if from_ is not None and record.source != from_:
        problems.append(f"from: expected {from_!r}, got {record.source!r}")
    if to is not None and record.target != to:
        problems.append(f"to: expected {to!r}, got {record.target!r}")
    if checkpoint is not None and (record.checkpoint_id is not None) != checkpoint:
        problems.append(
            f"checkpoint: expected {'one' if checkpoint else 'none'}, "
            f"got {record.checkpoint_id!r} (trigger {record.checkpoint_trigger!r})"
        )
    if reallocated is not None and record.reallocated != reallocated:
        problems.append(
            f"reallocated: expected {reallocated}, got {record.reallocated} "
            f"(before {dict(record.allocation_before)}, after {dict(record.allocation_after)})"
        )
    if compressed is not None and record.compressed != compressed:
        problems.append(f"compressed: expected {compressed}, got report {record.compression!r}")
    if within_budget is not None:
        tokens, budget = engine.conversation.effective_tokens, _budget(engine)
        if (tokens <= budget) != within_budget:
            problems.append(
                f"within_budget: expected {within_budget}, got {tokens} tokens "
                f"for a budget of {budget}"
            )
    if pairs_intact is not None:
        report = engine.conversation.check(api="anthropic")
        if report.ok != pairs_intact:
            problems.append(
                f"pairs_intact: expected {pairs_intact}, got violations "
                f"{sorted(report.rules()) or 'none'}"
            )
    assert not problems, f"transition {event!r}: " + "; ".join(problems)
    return record


# -- walking a chart --------------------------------------------------------------


def _chart(chart: Chart | str | Any) -> Chart:
    if isinstance(chart, Chart):
        return chart
    inner = getattr(chart, "chart", None)
    return inner if isinstance(inner, Chart) else load_chart(chart)


def _inside(chart: Chart, state: str, ancestor: str) -> bool:
    node: str | None = state
    while node is not None:
        if node == ancestor:
            return True
        node = chart.parents.get(node)
    return False


_History = tuple[tuple[str, str], ...]


def _fire(
    chart: Chart, phase: str, history: _History, spec: TransitionSpec
) -> tuple[str, _History]:
    if spec.target is None:
        return phase, history
    remembered: dict[str, str] = dict(history)
    target = chart.resolve_target(spec.target, {h: [s] for h, s in remembered.items()})
    deep = {h for h, kind in chart.history_types.items() if kind == "deep"}
    for hist, parent in chart.history.items():
        if _inside(chart, phase, parent) and not _inside(chart, target, parent):
            child = phase
            while hist not in deep and chart.parents.get(child) != parent:
                child = str(chart.parents[child])
            remembered[hist] = child
    return target, tuple(sorted(remembered.items()))


def event_paths(chart: Chart | str | Any, depth: int = 3) -> list[tuple[str, ...]]:
    """Every event sequence of at most ``depth`` events from the chart's initial phase.

    A sequence stops early only where no event is possible (a final state);
    otherwise it has exactly ``depth`` events.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"'depth' must be an integer >= 1 (got {depth!r})")
    loaded = _chart(chart)
    out: list[tuple[str, ...]] = []

    def walk(phase: str, history: _History, path: tuple[str, ...]) -> None:
        options = loaded.transitions_from(phase)
        if len(path) == depth or not options:
            if path:
                out.append(path)
            return
        for spec in options:
            target, remembered = _fire(loaded, phase, history, spec)
            walk(target, remembered, (*path, spec.event))

    walk(loaded.initial, (), ())
    return out


def transition_cover(chart: Chart | str | Any) -> list[tuple[str, ...]]:
    """Shortest event sequences that, together, fire every transition of the chart.

    One sequence per ``(source, event)`` reachable from the initial phase, each
    the shortest way there followed by that event.
    """
    loaded = _chart(chart)
    start: tuple[str, _History] = (loaded.initial, ())
    routes: dict[tuple[str, _History], tuple[str, ...]] = {start: ()}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for spec in loaded.transitions_from(node[0]):
                nxt = _fire(loaded, node[0], node[1], spec)
                if nxt not in routes:
                    routes[nxt] = (*routes[node], spec.event)
                    following.append(nxt)
        frontier = following
    best: dict[tuple[str, str], tuple[str, ...]] = {}
    for (phase, _history), route in routes.items():
        for spec in loaded.transitions_from(phase):
            key = (spec.source, spec.event)
            candidate = (*route, spec.event)
            if key not in best or len(candidate) < len(best[key]):
                best[key] = candidate
    return sorted(best.values(), key=lambda p: (len(p), p))


def expected_phases(chart: Chart | str | Any, path: Sequence[str]) -> list[str]:
    """The phases a path visits according to the chart's structure (guards ignored)."""
    loaded = _chart(chart)
    phase, history = loaded.initial, cast(_History, ())
    seen: list[str] = []
    for event in path:
        spec = next((s for s in loaded.transitions_from(phase) if s.event == event), None)
        if spec is None:
            raise ValueError(f"event {event!r} is not possible in phase {phase!r}")
        phase, history = _fire(loaded, phase, history, spec)
        seen.append(phase)
    return seen
