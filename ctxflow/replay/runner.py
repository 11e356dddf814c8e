"""Replaying a recorded conversation through the engine, turn by turn.

:func:`replay` feeds a transcript to an :class:`~ctxflow.engine.Engine` the
way the agent loop would have: phase events derived by
:func:`~ctxflow.replay.plan.plan_replay`, every message added, and before each
assistant turn the window the model would have seen is built, checked against
both APIs' rules and its input budget, and recorded with what the engine did
since the previous turn (events, compressions, checkpoints).
:func:`replay_to_turn` takes the same steps up to one turn's window and hands
back the engine, so a caller can build that window itself (in any phase).

The system prompt and tool definitions go to layer L0, not the message
stream, so they are counted once, as fixed costs. The first user message is
the task: it stays in the stream, and the window always keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import attrs

from ctxflow.adapters import (
    Adapter,
    AnthropicAdapter,
    CachePrices,
    OpenAIAdapter,
    PrefixMeter,
    PrefixReuse,
)
from ctxflow.budget import Window
from ctxflow.engine import Engine
from ctxflow.errors import FormatError
from ctxflow.layers import LayeredState, SystemLayer, Tier
from ctxflow.model import Role, check
from ctxflow.replay.inputs import RunInput
from ctxflow.replay.plan import Step, fit_plan, plan_replay

__all__ = [
    "LONG_TERM_TIERS",
    "TIERS",
    "RunResult",
    "TurnRecord",
    "replay",
    "replay_to_turn",
    "request_body",
]

API = Literal["anthropic", "openai"]

#: The memory layer's tiers, in the order reports list them.
TIERS: tuple[str, ...] = tuple(tier.value for tier in Tier)
#: The tiers kept beyond the conversation (the short-term tier is the conversation itself).
LONG_TERM_TIERS: tuple[str, ...] = tuple(t for t in TIERS if t != Tier.SHORT_TERM.value)


@attrs.frozen(kw_only=True)
class TurnRecord:
    """What happened up to one assistant turn, and the window built for it."""

    turn: int
    phase: str
    events: tuple[str, ...]
    window_tokens: int
    input_budget: int
    messages_in_window: int
    layers: Mapping[str, Mapping[str, int]]
    compression: Mapping[str, Any] | None
    checkpoint: str | None
    valid: bool
    violations: tuple[str, ...]
    within_budget: bool
    #: The rendered request's tokens (its canonical JSON, item by item), what a
    #: prefix cache filled by the previous request could serve, and what it would write.
    request_tokens: int = 0
    cache_served: int = 0
    cache_written: int = 0
    #: The first item of the previous request this one no longer repeats, and why.
    prefix_broke_at: str | None = None
    prefix_break: str | None = None
    #: Tokens each memory tier (short-term, episodic, semantic, procedural) used in the window.
    tiers: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def long_term_tokens(self) -> int:
        """Tokens the episodic, semantic and procedural tiers used in the window."""
        return sum(self.tiers.get(name, 0) for name in LONG_TERM_TIERS)

    def to_plain(self) -> dict[str, Any]:
        """The record as JSON-able data."""
        return {
            "turn": self.turn,
            "phase": self.phase,
            "event": list(self.events),
            "window_tokens": self.window_tokens,
            "input_budget": self.input_budget,
            "messages_in_window": self.messages_in_window,
            "layers": {k: dict(v) for k, v in self.layers.items()},
            "tiers": dict(self.tiers),
            "compression": dict(self.compression) if self.compression else None,
            "checkpoint": self.checkpoint,
            "valid": self.valid,
            "violations": list(self.violations),
            "within_budget": self.within_budget,
            "cache": {
                "request_tokens": self.request_tokens,
                "served": self.cache_served,
                "written": self.cache_written,
                "broke_at": self.prefix_broke_at,
                "why": self.prefix_break,
            },
        }


@attrs.frozen(kw_only=True)
class RunResult:
    """Every turn's record, and the totals."""

    conversation_id: str
    model: str
    session_id: str
    turns: tuple[TurnRecord, ...]
    messages: int
    compressions: int
    checkpoints: int
    final_phase: str
    api: API = "anthropic"

    @property
    def ok(self) -> bool:
        """True when every window was valid and within its budget."""
        return all(t.valid and t.within_budget for t in self.turns)

    def totals(self) -> dict[str, Any]:
        """Summary numbers for the report."""
        tokens = [t.window_tokens for t in self.turns]
        return {
            **self._cache_totals(),
            "memory": self._memory_totals(),
            "turns": len(self.turns),
            "messages": self.messages,
            "compressions": self.compressions,
            "checkpoints": self.checkpoints,
            "invalid_windows": sum(not t.valid for t in self.turns),
            "over_budget_windows": sum(not t.within_budget for t in self.turns),
            "max_window_tokens": max(tokens, default=0),
            "final_phase": self.final_phase,
            "ok": self.ok,
        }

    def _memory_totals(self) -> dict[str, Any]:
        """Which windows carried each memory tier, and how many carried long-term memory.

        A window counts as after the first compression or reflection when a
        compression ran before it or an earlier turn was in the reflection phase
        (reflection is where memory is consolidated, on the way out of it).
        """
        tiers = {
            name: {
                "windows": sum(t.tiers.get(name, 0) > 0 for t in self.turns),
                "max_tokens": max((t.tiers.get(name, 0) for t in self.turns), default=0),
            }
            for name in TIERS
        }
        first: int | None = None
        after = with_memory_after = 0
        for turn in self.turns:
            if first is None and turn.compression is not None:
                first = turn.turn
            if first is not None:
                after += 1
                with_memory_after += turn.long_term_tokens > 0
            if first is None and turn.phase == "reflection":
                first = turn.turn
        return {
            "tiers": tiers,
            "windows": len(self.turns),
            "windows_with_long_term_memory": sum(t.long_term_tokens > 0 for t in self.turns),
            "first_compression_or_reflection_turn": first,
            "windows_after_first_compression_or_reflection": after,
            "windows_with_long_term_memory_after_first_compression_or_reflection": (
                with_memory_after
            ),
        }

    def _cache_totals(self) -> dict[str, Any]:
        total = sum(t.request_tokens for t in self.turns)
        served = sum(t.cache_served for t in self.turns)
        written = sum(t.cache_written for t in self.turns)
        prices = CachePrices.for_api(self.api)
        cached = PrefixReuse(served=served, written=written, total=total, broke_at=None).cost(
            prices
        )
        return {
            "cache_reuse": round(served / total, 4) if total else 0.0,
            "prefix_breaks": sum(t.prefix_broke_at is not None for t in self.turns),
            "input_cost": {
                "unit": "uncached input tokens",
                "cached_price": prices.read,
                "cache_write_price": prices.write,
                "with_cache": round(cached),
                "without_cache": total,
                "ratio": round(cached / total, 4) if total else 1.0,
            },
        }


def _break_reason(new: Iterable[Any]) -> str:
    """Why a request no longer repeats the previous one: what the engine did in between."""
    records = list(new)
    if any(r.compression for r in records):
        return "compression"
    if any(r.consolidated for r in records):
        return "consolidation"
    if any(r.restored_from for r in records):
        return "restore"
    if any(r.phase_changed for r in records):
        return "phase change"
    return "window"


def _compression_summary(report: Any) -> dict[str, Any]:
    return {
        "rungs": list(getattr(report, "rungs_used", ())),
        "tokens_before": int(getattr(report, "tokens_before", 0)),
        "tokens_after": int(getattr(report, "tokens_after", 0)),
        "messages_affected": int(getattr(report, "messages_affected", 0)),
        "facts_flushed": len(getattr(report, "facts_flushed", ()) or ()),
        "warnings": list(getattr(report, "warnings", ())),
    }


def replay(
    run: RunInput,
    *,
    engine_factory: Callable[[LayeredState], Engine],
    reflect_every: int = 10,
    api: API = "anthropic",
    on_turn: Callable[[TurnRecord], None] | None = None,
    on_window: Callable[[dict[str, Any]], None] | None = None,
    plan: Iterable[Step] | None = None,
) -> RunResult:
    """Replay ``run`` through an engine made by ``engine_factory(initial_state)``.

    ``on_turn`` sees each turn's record as it is made; ``on_window`` gets each
    window rendered as a request body of ``api``. ``plan`` is the steps to
    take (default: :func:`~ctxflow.replay.plan.plan_replay` fitted to the
    engine's chart, which raises ChartError before any event is sent).
    """
    messages = run.transcript.messages
    engine = _start(run, engine_factory)
    if plan is None:
        plan = fit_plan(plan_replay(messages, reflect_every=reflect_every), engine.chart)
    turns: list[TurnRecord] = []
    seen_records = 0
    events: list[str] = []
    compressions = 0
    meter = PrefixMeter(engine.counter.count)
    for step in _taken(engine, plan):
        if step.kind == "event":
            assert step.event is not None
            events.append(step.event)
        elif step.kind == "window":
            new = engine.records.since(seen_records)
            seen_records = engine.records.total
            compression = next(
                (_compression_summary(r.compression) for r in reversed(new) if r.compression),
                None,
            )
            compressions += sum(1 for r in new if r.compression)
            checkpoint = next((r.checkpoint_id for r in reversed(new) if r.checkpoint_id), None)
            window = engine.window()
            problems = []
            for target in ("anthropic", "openai"):
                report = check(window.messages, api=target, tools=window.tools)
                problems += [f"{target}:{v.rule}@{v.index}" for v in report.violations]
            layers = {
                name: {"allocated": usage.allocated, "used": usage.used}
                for name, usage in window.report.layers.items()
            }
            tiers = dict.fromkeys(TIERS, 0)
            tiers.update({name: usage.used for name, usage in window.report.tiers.items()})
            body = request_body(window, api, engine)
            reuse = meter.measure(body)
            record = TurnRecord(
                turn=step.turn,
                phase=engine.phase,
                events=tuple(events),
                window_tokens=window.tokens,
                input_budget=window.input_budget,
                messages_in_window=len(window.messages),
                layers=layers,
                compression=compression,
                checkpoint=checkpoint,
                valid=not problems,
                violations=tuple(problems),
                within_budget=window.tokens <= window.input_budget,
                request_tokens=reuse.total,
                cache_served=reuse.served,
                cache_written=reuse.written,
                prefix_broke_at=reuse.broke_at,
                prefix_break=_break_reason(new) if reuse.broke_at is not None else None,
                tiers=tiers,
            )
            events = []
            turns.append(record)
            if on_turn is not None:
                on_turn(record)
            if on_window is not None:
                on_window(body)
    compressions += sum(1 for r in engine.records.since(seen_records) if r.compression)
    return RunResult(
        conversation_id=run.transcript.id,
        model=engine.profile.name,
        session_id=engine.session_id,
        turns=tuple(turns),
        messages=sum(1 for m in messages if m.role is not Role.SYSTEM),
        compressions=compressions,
        checkpoints=len(engine.checkpoint_ids),
        final_phase=engine.phase,
        api=api,
    )


def replay_to_turn(
    run: RunInput,
    turn: int,
    *,
    engine_factory: Callable[[LayeredState], Engine],
    reflect_every: int = 10,
    plan: Iterable[Step] | None = None,
) -> Engine:
    """The engine as :func:`replay` leaves it just before building assistant turn ``turn``'s window.

    Every step before that window is taken as :func:`replay` takes it (the
    events leading into the turn included); no window is built. Turns are
    numbered from 1, as :func:`replay` numbers them. FormatError, before the
    engine is made, when the plan has no such turn.
    """
    steps = list(
        plan_replay(run.transcript.messages, reflect_every=reflect_every) if plan is None else plan
    )
    turns = [step.turn for step in steps if step.kind == "window"]
    if turn not in turns:
        raise FormatError(
            f"'turn' must be an assistant turn of conversation {run.transcript.id!r}, "
            f"from 1 to {len(turns)} (got {turn})",
            rule="turn",
            where=run.transcript.id,
        )
    engine = _start(run, engine_factory)
    if plan is None:  # fitting keeps the window steps; it needs the engine's chart
        steps = fit_plan(steps, engine.chart)
    for step in _taken(engine, steps):
        if step.kind == "window" and step.turn == turn:
            break
    return engine


def _start(run: RunInput, engine_factory: Callable[[LayeredState], Engine]) -> Engine:
    """The replay's engine: the system prompt and tool definitions in L0, no messages yet."""
    system = next((m.text for m in run.transcript.messages if m.role is Role.SYSTEM), "")
    return engine_factory(LayeredState(system=SystemLayer(prompt=system, tools=run.tools)))


def _taken(engine: Engine, plan: Iterable[Step]) -> Iterator[Step]:
    """Each step of ``plan``, once ``engine`` has taken it (window steps are the caller's)."""
    for step in plan:
        if step.kind == "message":
            assert step.message is not None
            engine.add_message(step.message)
        elif step.kind == "event":
            assert step.event is not None
            engine.send(step.event)
        yield step


def request_body(window: Window, api: API, engine: Engine) -> dict[str, Any]:
    """The request body the loop's default adapter would send for ``window``."""
    profile = engine.profile
    adapter: Adapter = (
        AnthropicAdapter(model=profile.name, max_tokens=profile.output_reserve)
        if api == "anthropic"
        else OpenAIAdapter(model=profile.name, max_tokens=profile.output_reserve)
    )
    return adapter.render(window)
