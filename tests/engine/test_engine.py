"""The default chart's event table, row by row, with effects, on the sync and async engines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from statemachine.exceptions import TransitionNotAllowed

from ctxflow import errors
from ctxflow.compression import CompressionResult
from ctxflow.engine import EventNotAllowed, PhaseConfig
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.model import Message
from ctxflow.persistence import CheckpointRecord
from ctxflow.testing._engine import TransitionRecorder, assert_transition
from ctxflow.testing._logs import capture_events
from tests.engine.conftest import Driver, ratio_allocator

Make = Callable[..., Driver]
TOOLS = SystemLayer(
    prompt="You are an agent.",
    tools=(ToolDef(name="search"), ToolDef(name="edit"), ToolDef(name="notes")),
)
PHASES = {
    "planning": PhaseConfig(tools=("search", "notes")),
    "execution": PhaseConfig(tools=("search", "edit")),
    "reflection": PhaseConfig(tools=("notes",)),
}


class GuardSpy:
    """A compression guard that records its calls and returns a report when asked to."""

    def __init__(self, report: Any = None, fail_in: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.report = report
        self.fail_in = fail_in

    def __call__(self, conversation: Any, state: Any, allocation: Any, **kw: Any) -> Any:
        self.calls.append((kw["phase"], allocation))
        if kw["phase"] == self.fail_in:
            raise errors.BudgetExceeded("the last turn must fit (got too much)", rule="hard_limit")
        if self.report is None:
            return None
        return CompressionResult(state=state, report=self.report)


def engine(make: Make, **kwargs: Any) -> Driver:
    kwargs.setdefault("allocator", ratio_allocator)
    kwargs.setdefault("state", LayeredState(system=TOOLS))
    kwargs.setdefault("phases", PHASES)
    return make(**kwargs)


def walk(driver: Driver, *events: str) -> None:
    for event in events:
        driver.send(event, **({"task": "fix the bug"} if event == "start" else {}))


def test_start_sets_task_allocates_and_checkpoints(make: Make) -> None:
    """start: idle → planning sets the task, makes the first allocation and a checkpoint."""
    d = engine(make)
    assert d.engine.phase == "idle"
    assert d.engine.allocation is None
    d.send("start", task="fix the bug")
    record = assert_transition(
        d.engine, "start", from_="idle", to="planning", checkpoint=True, reallocated=True
    )
    assert record.allocation_before == {}
    assert record.allocation_after == {"memory": 400, "evidence": 600}
    assert record.checkpoint_trigger == "transition"
    assert d.engine.state.task.statement == "fix the bug"
    assert d.engine.state.runtime.phase == "planning"
    assert d.engine.configuration == ("active", "planning")


def test_plan_ready_moves_to_execution_and_projects_tools(make: Make) -> None:
    """plan_ready: planning → execution reallocates and projects execution's tool set."""
    d = engine(make)
    walk(d, "start")
    assert [t.name for t in d.engine.state.projected_tools()] == ["search", "notes"]
    d.send("plan_ready")
    record = assert_transition(
        d.engine, "plan_ready", from_="planning", to="execution", checkpoint=True, reallocated=True
    )
    assert record.allocation_before["memory"] == 400
    assert record.allocation_after["memory"] == 800
    assert d.engine.state.runtime.tools == ("search", "edit")
    assert [t.name for t in d.engine.state.projected_tools()] == ["search", "edit"]


def test_step_is_internal_runs_the_guard_and_takes_no_checkpoint(make: Make) -> None:
    """step: execution → execution is not a phase change; the guard runs, no checkpoint."""
    guard = GuardSpy()
    d = engine(make, compressor=guard)
    walk(d, "start", "plan_ready")
    guard.calls.clear()
    d.engine.add_message(Message.user("look at the failing test"))
    d.send("step")
    record = assert_transition(
        d.engine, "step", from_="execution", to="execution", checkpoint=False, reallocated=False
    )
    assert not record.phase_changed
    assert guard.calls == [("execution", {"memory": 800, "evidence": 200})]
    assert record.allocation_before == record.allocation_after
    assert d.engine.state.runtime.step == 1
    assert record.tokens_after > 0


def test_step_checkpoints_when_the_policy_fires(make: Make) -> None:
    """The checkpoint policy may add a checkpoint on step, under its own trigger name."""

    class EveryTwoMessages:
        def should_checkpoint(
            self, *, phase: str, message_count: int, tokens: int, last: Any
        ) -> Any:
            since = message_count - (last or 0)
            return "messages" if since >= 2 else None

        def mark(self, *, phase: str, message_count: int, tokens: int) -> int:
            return message_count

    d = engine(make, checkpoint_policy=EveryTwoMessages())
    walk(d, "start", "plan_ready")
    d.engine.add_message(Message.user("one"))
    d.send("step")
    assert_transition(d.engine, "step", checkpoint=False)
    d.engine.add_message(Message.assistant("two"))
    d.send("step")
    record = assert_transition(d.engine, "step", checkpoint=True)
    assert record.checkpoint_trigger == "messages"


def test_reflect_consolidates_memory(make: Make) -> None:
    """reflect: execution → reflection runs the consolidation hook and reallocates."""
    seen: list[str] = []

    def consolidate(conversation: Any, state: LayeredState) -> LayeredState:
        seen.append(state.runtime.phase)
        return state.with_fact("lesson", "run the tests first")

    d = engine(make, consolidator=consolidate)
    walk(d, "start", "plan_ready")
    d.send("reflect")
    record = assert_transition(
        d.engine, "reflect", from_="execution", to="reflection", checkpoint=True, reallocated=True
    )
    assert record.consolidated
    assert seen == ["reflection"]
    assert d.engine.state.memory.fact("lesson") is not None


def test_reflect_without_consolidator_is_a_documented_no_op(make: Make) -> None:
    """Without a consolidator, entering reflection leaves memory as it was."""
    d = engine(make)
    walk(d, "start", "plan_ready")
    before = d.engine.state.memory
    d.send("reflect")
    assert d.engine.records[-1].consolidated
    assert d.engine.state.memory == before


def test_execute_continues_the_plan(make: Make) -> None:
    """execute: reflection → execution."""
    d = engine(make)
    walk(d, "start", "plan_ready", "reflect")
    d.send("execute")
    assert_transition(
        d.engine, "execute", from_="reflection", to="execution", checkpoint=True, reallocated=True
    )


@pytest.mark.parametrize("via", [("reflect",), ()])
def test_replan_returns_to_planning(make: Make, via: tuple[str, ...]) -> None:
    """replan: reflection or execution → planning."""
    d = engine(make)
    walk(d, "start", "plan_ready", *via)
    source = d.engine.phase
    d.send("replan")
    assert_transition(d.engine, "replan", from_=source, to="planning", checkpoint=True)
    assert d.engine.state.runtime.tools == ("search", "notes")


@pytest.mark.parametrize("via", [("reflect",), ()])
def test_finish_is_final(make: Make, via: tuple[str, ...]) -> None:
    """finish: execution or reflection → done, a final state where no event is allowed."""
    d = engine(make)
    walk(d, "start", "plan_ready", *via)
    source = d.engine.phase
    d.send("finish")
    assert_transition(d.engine, "finish", from_=source, to="done", checkpoint=True)
    assert d.engine.is_final
    assert d.engine.allowed_events == []
    with pytest.raises(EventNotAllowed):
        d.send("step")


@pytest.mark.parametrize(
    "via", [("start",), ("start", "plan_ready"), ("start", "plan_ready", "reflect")]
)
def test_fail_from_any_active_phase(make: Make, via: tuple[str, ...]) -> None:
    """fail: any active phase → failed, with a checkpoint."""
    d = engine(make)
    walk(d, *via)
    source = d.engine.phase
    d.send("fail")
    assert_transition(d.engine, "fail", from_=source, to="failed", checkpoint=True)
    assert d.engine.configuration == ("failed",)


def test_recover_restores_the_latest_good_checkpoint(make: Make) -> None:
    """recover: failed → planning restores the conversation of the last good checkpoint."""
    d = engine(make)
    walk(d, "start", "plan_ready")
    d.engine.add_message(Message.user("good turn"))
    d.send("reflect")
    good = d.engine.records[-1].checkpoint_id
    d.engine.add_message(Message.assistant("a broken turn"))
    d.send("fail")
    assert len(d.engine.conversation) == 2
    d.send("recover")
    record = assert_transition(d.engine, "recover", from_="failed", to="planning", checkpoint=True)
    assert record.restored_from == good
    assert [m.text for m in d.engine.conversation.messages] == ["good turn"]
    assert d.engine.state.task.statement == "fix the bug"
    assert d.engine.state.runtime.phase == "planning"


@pytest.mark.parametrize(
    "via", [("start",), ("start", "plan_ready"), ("start", "plan_ready", "reflect")]
)
def test_pause_and_resume_return_to_the_phase_left(make: Make, via: tuple[str, ...]) -> None:
    """pause: active phase → paused; resume: back to the phase it left (history state)."""
    d = engine(make)
    walk(d, *via)
    left = d.engine.phase
    d.send("pause")
    assert_transition(d.engine, "pause", from_=left, to="paused", checkpoint=True)
    assert d.engine.history == {"resume_point": [left]}
    d.send("resume")
    assert_transition(d.engine, "resume", from_="paused", to=left, checkpoint=True)
    assert d.engine.state.runtime.phase == left


def test_pause_checkpoint_restore_resume_in_a_new_engine(make: Make) -> None:
    """pause → checkpoint → restore into a new engine → resume lands in the phase it left."""
    d = engine(make)
    walk(d, "start", "plan_ready", "reflect")
    d.engine.add_message(Message.user("hello"))
    d.send("pause")
    checkpoint = d.checkpoint()
    fresh = engine(make, checkpointer=d.engine.checkpointer)
    fresh.restore(checkpoint)
    assert fresh.engine.phase == "paused"
    assert fresh.engine.history == {"resume_point": ["reflection"]}
    assert [m.text for m in fresh.engine.conversation.messages] == ["hello"]
    assert fresh.engine.state == d.engine.state
    fresh.send("resume")
    assert_transition(fresh.engine, "resume", from_="paused", to="reflection")
    assert fresh.engine.configuration == ("active", "reflection")


def test_restore_rejects_unknown_checkpoints_and_other_charts(make: Make) -> None:
    """Restoring a missing id, or a checkpoint of another chart, fails typed and changes nothing."""
    d = engine(make)
    walk(d, "start")
    with pytest.raises(errors.CheckpointNotFound):
        d.restore("nope")
    other = make(chart="review_loop", checkpointer=d.engine.checkpointer)
    with pytest.raises(errors.CheckpointError, match="chart"):
        other.restore(d.engine.checkpoint_ids[-1])
    assert other.engine.phase == "idle"


def test_budget_exceeded_on_a_transition_changes_nothing(make: Make) -> None:
    """When the guard cannot meet the hard limit for the new phase, the event does not happen."""
    d = engine(make, compressor=GuardSpy(fail_in="reflection"))
    walk(d, "start", "plan_ready")
    before = (d.engine.phase, d.engine.configuration, d.engine.state, d.engine.allocation)
    n_records, n_checkpoints = len(d.engine.records), len(d.engine.checkpoint_ids)
    with pytest.raises(errors.BudgetExceeded):
        d.send("reflect")
    after = (d.engine.phase, d.engine.configuration, d.engine.state, d.engine.allocation)
    assert after == before
    assert len(d.engine.records) == n_records
    assert len(d.engine.checkpoint_ids) == n_checkpoints
    d.send("step")
    assert_transition(d.engine, "step", from_="execution", to="execution")


def test_budget_exceeded_on_the_way_to_a_final_state_rolls_back(make: Make) -> None:
    """A failure after the chart reached a final state restores the live configuration."""

    def refuse_done(engine: Any) -> None:
        raise errors.BudgetExceeded("no room to finish", rule="hard_limit")

    from ctxflow.engine import load_chart

    doc = load_chart("agent_loop").document
    states = dict(doc["states"])
    states["done"] = {"final": True, "enter": ["refuse"]}
    chart = load_chart({**doc, "states": states}, callbacks={"refuse": refuse_done})
    d = engine(make, chart=chart)
    walk(d, "start", "plan_ready")
    with pytest.raises(errors.BudgetExceeded):
        d.send("finish")
    assert d.engine.configuration == ("active", "execution")
    d.send("reflect")
    assert d.engine.phase == "reflection"


def test_compression_report_is_recorded_and_listened_to(make: Make) -> None:
    """A guard that ran the ladder leaves its report on the record and tells listeners."""
    recorder = TransitionRecorder()
    d = engine(make, compressor=GuardSpy(report={"saved": 12}), listeners=[recorder])
    walk(d, "start", "plan_ready")
    d.send("step")
    assert_transition(d.engine, "step", compressed=True)
    assert recorder.compressions[-1] == ({"saved": 12}, "execution")
    assert recorder.phases == ["planning", "execution"]
    assert [c[1] for c in recorder.checkpoints] == ["transition", "transition"]


def test_not_allowed_event_changes_nothing(make: Make) -> None:
    """An event without a transition in this phase raises EventNotAllowed, nothing changed."""
    d = engine(make)
    walk(d, "start")
    with pytest.raises(EventNotAllowed) as caught:
        d.send("reflect")
    assert isinstance(caught.value, errors.EventNotAllowed)
    assert isinstance(caught.value, TransitionNotAllowed)
    assert caught.value.phase == "planning"
    assert "not allowed in phase 'planning'" in str(caught.value)
    assert d.engine.phase == "planning"
    assert len(d.engine.records) == 1


@pytest.mark.parametrize(
    ("event", "kwargs", "rule"),
    [
        ("jump", {}, "unknown_event"),
        ("plan_ready", {"task": "x"}, "event_arguments"),
        ("start", {"task": ""}, "event_arguments"),
        ("start", {"tusk": "x"}, "event_arguments"),
    ],
)
def test_bad_event_arguments_fail_before_anything_changes(
    make: Make, event: str, kwargs: dict[str, Any], rule: str
) -> None:
    """Unknown events and wrong keyword arguments fail typed, before any change."""
    d = engine(make)
    with pytest.raises(errors.EventError) as caught:
        d.send(event, **kwargs)
    assert caught.value.rule == rule
    assert d.engine.phase == "idle"
    assert d.engine.records == []


def test_exception_in_a_chart_action_surfaces_typed(make: Make) -> None:
    """An exception in a chart action becomes EventError (not a vanishing error event)."""

    def explode(engine: Any) -> None:
        raise RuntimeError("boom")

    from ctxflow.engine import load_chart

    doc = load_chart("agent_loop").document
    states = dict(doc["states"])
    states["idle"] = {
        "initial": True,
        "transitions": [{"event": "start", "target": "planning", "on": ["explode"]}],
    }
    d = engine(make, chart=load_chart({**doc, "states": states}, callbacks={"explode": explode}))
    with pytest.raises(errors.EventError) as caught:
        d.send("start", task="x")
    assert caught.value.rule == "callback_failed"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert d.engine.phase == "idle"
    assert d.engine.state.task.statement == ""


def test_exception_in_a_guard_surfaces_typed(make: Make) -> None:
    """An exception in a chart guard becomes EventError and changes nothing."""

    def broken(engine: Any) -> bool:
        raise ValueError("cannot decide")

    from ctxflow.engine import load_chart

    doc = load_chart("agent_loop").document
    states = dict(doc["states"])
    states["idle"] = {
        "initial": True,
        "transitions": [{"event": "start", "target": "planning", "cond": "broken"}],
    }
    d = engine(make, chart=load_chart({**doc, "states": states}, callbacks={"broken": broken}))
    with pytest.raises(errors.EventError) as caught:
        d.send("start")
    assert isinstance(caught.value.__cause__, ValueError)
    assert d.engine.phase == "idle"


def test_a_false_guard_makes_the_event_not_allowed(make: Make) -> None:
    """A guard that says no leaves the event not allowed (has_task without a task)."""
    from ctxflow.engine import load_chart

    doc = load_chart("agent_loop").document
    states = dict(doc["states"])
    states["idle"] = {
        "initial": True,
        "transitions": [{"event": "start", "target": "planning", "cond": "has_task"}],
    }
    d = engine(make, chart=load_chart({**doc, "states": states}))
    with pytest.raises(EventNotAllowed):
        d.send("start")
    d.send("start", task="now there is one")
    assert d.engine.phase == "planning"


def test_exception_in_a_collaborator_surfaces_typed(make: Make) -> None:
    """A collaborator failing with a plain exception becomes EventError and is rolled back."""

    def allocator(state: Any, *, phase: str, policy: Any) -> Any:
        raise ZeroDivisionError("ratios")

    d = engine(make, allocator=allocator)
    with pytest.raises(errors.EventError) as caught:
        d.send("start", task="x")
    assert caught.value.rule == "effect_failed"
    assert d.engine.phase == "idle"


def test_phase_config_for_an_unknown_phase_fails_at_load(make: Make) -> None:
    """A phase configuration naming a phase the chart lacks is a ChartError."""
    with pytest.raises(errors.ChartError, match="review"):
        engine(make, phases={"review": PhaseConfig(tools=())})


def test_budget_policy_per_phase_reaches_the_allocator(make: Make) -> None:
    """Each phase's budget policy is handed to the allocator when the phase is entered."""
    d = engine(make, phases={"execution": PhaseConfig(budget_policy=2)})
    walk(d, "start", "plan_ready")
    assert d.engine.allocation == {"memory": 1600, "evidence": 200}


def test_logged_events_have_stable_keys(make: Make) -> None:
    """A phase change logs 'transition' with trigger, source, target, tokens and checkpoint."""
    d = engine(make)
    with capture_events() as logs:
        walk(d, "start")
    entry = next(e for e in logs if e["event"] == "transition")
    assert entry["trigger"] == "start"
    assert (entry["source"], entry["target"]) == ("idle", "planning")
    assert {"tokens", "checkpoint", "duration_ms"} <= set(entry)


def test_async_collaborators_are_awaited_by_the_async_engine() -> None:
    """AsyncEngine awaits async collaborators; the sync Engine refuses them with a typed error."""
    import asyncio

    from ctxflow.engine import AsyncEngine, Engine
    from ctxflow.testing import FixedCounter

    calls: list[str] = []

    async def guard(conversation: Any, state: Any, allocation: Any, **kw: Any) -> None:
        calls.append(kw["phase"])

    async def run() -> str:
        engine = AsyncEngine(counter=FixedCounter(), compressor=guard)
        await engine.send("start", task="t")
        return engine.phase

    assert asyncio.run(run()) == "planning"
    assert calls == ["planning"]
    sync = Engine(counter=FixedCounter(), compressor=guard)
    with pytest.raises(errors.PolicyError, match="AsyncEngine"):
        sync.send("start", task="t")
    assert sync.phase == "idle"


def test_a_failing_checkpoint_rolls_the_transition_back(make: Make) -> None:
    """When the checkpoint of a phase change cannot be written, the phase does not change."""
    from ctxflow.engine import StoreCheckpointer
    from ctxflow.stores import MemoryStore

    class Refusing(StoreCheckpointer):
        def capture(self, conversation: Any, **kw: Any) -> CheckpointRecord:
            if kw["phase"] == "execution":
                raise errors.StaleCheckpoint("the session moved on", rule="stale")
            return super().capture(conversation, **kw)

    d = engine(make, checkpointer=Refusing(MemoryStore()))
    walk(d, "start")
    with pytest.raises(errors.StaleCheckpoint):
        d.send("plan_ready")
    assert d.engine.phase == "planning"
    assert d.engine.allocation == {"memory": 400, "evidence": 600}
    assert len(d.engine.checkpoint_ids) == 1


def test_window_uses_the_builder_with_the_phase_allocation(make: Make) -> None:
    """window() hands the conversation, state, phase and its budget policy to the builder."""
    seen: list[Any] = []

    def builder(conversation: Any, state: Any, *, phase: str, policy: Any) -> str:
        seen.append((policy, phase, state.runtime.tools))
        return "window"

    phases = {**PHASES, "execution": PhaseConfig(tools=("search", "edit"), budget_policy=7)}
    d = engine(make, window_builder=builder, phases=phases)
    walk(d, "start", "plan_ready")
    assert d.engine.window() == "window"
    assert seen == [(7, "execution", ("search", "edit"))]


def test_listeners_need_only_the_hooks_they_use(make: Make) -> None:
    """A listener with one hook, or none, is accepted; only present hooks are called."""

    class OnlyCheckpoints:
        def __init__(self) -> None:
            self.ids: list[str] = []

        def on_checkpoint(self, checkpoint_id: str, *, trigger: str, phase: str) -> None:
            self.ids.append(checkpoint_id)

    only = OnlyCheckpoints()
    d = engine(make, listeners=[only, object()])
    walk(d, "start")
    assert only.ids == d.engine.checkpoint_ids
    assert len(d.engine.listeners) == 2
