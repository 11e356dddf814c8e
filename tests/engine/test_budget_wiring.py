"""The engine on the real budget package: allocation per phase, windows, fixed costs too large."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from ctxflow import errors
from ctxflow.budget import Allocation, BudgetPolicy, LayerRatios, Window
from ctxflow.engine import PhaseConfig
from ctxflow.layers import LayeredState, SystemLayer, ToolDef
from ctxflow.model import Message, ToolResultBlock, ToolUseBlock
from ctxflow.testing._engine import assert_transition
from tests.engine.conftest import Driver

Make = Callable[..., Driver]
STATE = LayeredState(
    system=SystemLayer(
        prompt="You are a coding agent.",
        tools=(ToolDef(name="search"), ToolDef(name="edit"), ToolDef(name="notes")),
    )
)
PHASES = {
    "planning": PhaseConfig(tools=("search", "notes")),
    "execution": PhaseConfig(tools=("search", "edit")),
}


def test_entering_a_phase_reallocates_with_the_budget_package(make: Make) -> None:
    """Each phase gets its own Allocation; layers sum exactly to the flexible budget."""
    d = make(state=STATE, phases=PHASES, budget=8000)
    d.send("start", task="fix the bug")
    planning = d.engine.allocation
    assert isinstance(planning, Allocation)
    assert planning.phase == "planning"
    assert sum(planning.layers.values()) == planning.flexible
    d.send("plan_ready")
    record = assert_transition(d.engine, "plan_ready", reallocated=True)
    assert d.engine.allocation.phase == "execution"
    assert record.allocation_before != record.allocation_after
    assert sum(record.allocation_after.values()) == d.engine.allocation.flexible
    assert record.allocation_before["memory"] > record.allocation_after["memory"]


def test_window_carries_only_the_phase_tools_and_fits(make: Make) -> None:
    """Under ``tool_definitions="phase"`` a window lists only the phase's tools, and fits."""
    narrow = BudgetPolicy(tool_definitions="phase")
    phases = {name: attrs.evolve(config, budget_policy=narrow) for name, config in PHASES.items()}
    d = make(state=STATE, phases=phases, budget=8000)
    d.send("start", task="fix the bug")
    d.send("plan_ready")
    d.engine.add_messages(
        [
            Message.user("the test fails"),
            Message(
                role="assistant", content=(ToolUseBlock(id="u1", name="search", input={"q": "x"}),)
            ),
            Message(role="user", content=(ToolResultBlock(tool_use_id="u1", content="found"),)),
        ]
    )
    d.send("step")
    window = d.engine.window()
    assert isinstance(window, Window)
    assert [t.name for t in window.tools] == ["search", "edit"]
    assert window.tokens <= window.input_budget == 8000
    assert_transition(d.engine, "step", within_budget=True, pairs_intact=True)


def test_window_keeps_every_tool_and_names_the_phase_ones(make: Make) -> None:
    """By default a window carries every tool in L0's order and names the phase's set late."""
    d = make(state=STATE, phases=PHASES, budget=8000)
    d.send("start", task="fix the bug")
    planning = d.engine.window()
    d.send("plan_ready")
    execution = d.engine.window()
    assert isinstance(planning, Window) and isinstance(execution, Window)
    assert planning.tools == execution.tools == STATE.system.tools
    assert planning.system == execution.system
    assert planning.allowed_tools == ("search", "notes")
    assert execution.allowed_tools == ("search", "edit")
    assert "tools: search, edit" in execution.context


def test_fixed_costs_over_the_budget_refuse_the_transition(make: Make) -> None:
    """When fixed costs alone exceed the budget, start fails with BudgetExceeded and stays idle."""
    big = LayeredState(system=SystemLayer(prompt="rule " * 400))
    d = make(state=big, budget=200)
    with pytest.raises(errors.BudgetExceeded):
        d.send("start", task="t")
    assert d.engine.phase == "idle"
    assert d.engine.records == []
    assert d.engine.state.task.statement == ""


def test_a_phase_budget_policy_changes_its_allocation(make: Make) -> None:
    """A phase's own BudgetPolicy is used when that phase is entered."""
    evidence_heavy = BudgetPolicy(ratios=LayerRatios(memory=10.0, evidence=80.0))
    d = make(
        state=STATE,
        phases={"execution": PhaseConfig(budget_policy=evidence_heavy)},
        budget=8000,
    )
    d.send("start", task="t")
    default_evidence = d.engine.allocation.layers["evidence"]
    d.send("plan_ready")
    assert d.engine.allocation.layers["evidence"] > 2 * default_evidence


def test_bad_budget_is_refused_at_construction(make: Make) -> None:
    """A non-positive budget is a PolicyError before any engine exists."""
    with pytest.raises(errors.PolicyError, match="budget"):
        make(budget=0)


def test_window_for_another_phase_leaves_the_chart_where_it_is(make: Make) -> None:
    """window(phase=...) builds that phase's window (its allocation and tools); nothing moves."""
    d = make(state=STATE, phases=PHASES, budget=8000)
    d.send("start", task="fix the bug")
    d.send("plan_ready")
    records = len(d.engine.records)
    planning = d.engine.window(phase="planning")
    assert isinstance(planning, Window)
    assert planning.allowed_tools == ("search", "notes")
    assert "phase: planning" in planning.context
    assert planning.report.allocation.phase == "planning"
    assert d.engine.phase == "execution" and len(d.engine.records) == records
    with pytest.raises(errors.PolicyError) as caught:
        d.engine.window(phase="nowhere")
    assert caught.value.rule == "unknown_phase"


def test_the_plan_is_kept_shown_and_restored(make: Make) -> None:
    """set_plan keeps the plan in the work buffer: in the late context, and across a restore."""
    d = make(state=STATE, phases=PHASES, budget=8000)
    d.send("start", task="fix the bug")
    d.engine.set_plan("1. find the bug\n2. fix it")
    assert d.engine.plan == "1. find the bug\n2. fix it"
    assert "## Work buffer\nPlan:\n1. find the bug" in d.engine.window().context
    checkpoint = d.checkpoint()
    d.engine.set_plan("")
    assert "Plan:" not in d.engine.window().context
    d.restore(checkpoint)
    assert d.engine.plan == "1. find the bug\n2. fix it"
    with pytest.raises(errors.PolicyError) as caught:
        d.engine.set_plan(42)  # type: ignore[arg-type]
    assert caught.value.rule == "engine_plan" and d.engine.plan
