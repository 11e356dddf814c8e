"""Allocation: exact integer sums, quotas, tiers, fixed costs and bad budgets.

A budget above the model's input budget is refused the same way through every
door: plan_budget, build_window, the engine and ``ctxflow run --budget``.
"""

from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxflow.budget import (
    BudgetPolicy,
    LayerRatios,
    allocate,
    build_window,
    largest_remainder,
    plan_budget,
    window_measure,
)
from ctxflow.cli import main
from ctxflow.engine import Engine
from ctxflow.errors import BudgetExceeded, PolicyError
from ctxflow.layers import Layer, LayeredState, SystemLayer, TaskLayer, Tier, ToolDef
from ctxflow.model import Conversation, Message
from ctxflow.testing import FixedCounter
from ctxflow.tokens import ModelProfile, get_profile

ratio = st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False)
phases = st.sampled_from(["planning", "execution", "reflection", "idle", "custom"])
classes = st.sampled_from(["small", "standard", "large"])


@st.composite
def policies(draw: st.DrawFn) -> BudgetPolicy:
    values = [draw(ratio) for _ in Layer]
    if sum(values) == 0:
        values[3] = 1.0
    ratios = LayerRatios(**{layer.value: v for layer, v in zip(Layer, values, strict=True)})
    return BudgetPolicy(ratios=ratios, phases=BudgetPolicy().phases)


def _usable(policy: BudgetPolicy, phase: str, model_class: str) -> bool:
    try:
        policy.ratios_for(phase, model_class)
    except PolicyError:
        return False
    return True


@settings(max_examples=80, deadline=None)
@given(policies(), phases, classes, st.integers(min_value=0, max_value=2_000_000))
def test_allocations_are_non_negative_and_sum_exactly(
    policy: BudgetPolicy, phase: str, model_class: str, total: int
) -> None:
    """For any valid policy, phase and total, layers and tiers sum exactly and never go negative."""
    if not _usable(policy, phase, model_class):
        return
    ratios, layers, tiers = allocate(total, phase=phase, model_class=model_class, policy=policy)
    assert sum(layers.values()) == total
    assert all(v >= 0 for v in layers.values())
    assert sum(tiers.values()) == layers[Layer.MEMORY]
    assert all(v >= 0 for v in tiers.values())
    assert abs(sum(ratios.values()) - 1) < 1e-9


@settings(max_examples=60, deadline=None)
@given(policies(), phases, st.integers(min_value=0, max_value=500_000), st.integers(1, 5_000))
def test_allocation_is_monotonic_within_one_token(
    policy: BudgetPolicy, phase: str, total: int, step: int
) -> None:
    """Growing the total never shrinks a layer by more than one token (largest remainder).

    Strict per-layer monotonicity is impossible with largest remainder (the
    Alabama paradox); each layer stays within one token of its exact quota.
    """
    if not _usable(policy, phase, "standard"):
        return
    _, small, _ = allocate(total, phase=phase, policy=policy)
    _, large, _ = allocate(total + step, phase=phase, policy=policy)
    adjusted = policy.ratios_for(phase)
    weight_sum = sum(Fraction(v) for v in adjusted.values())
    for layer in Layer:
        assert large[layer] >= small[layer] - 1
        quota = Fraction(adjusted[layer]) * (total + step) / weight_sum
        assert abs(large[layer] - quota) < 1
    assert sum(large.values()) > sum(small.values())


def test_largest_remainder_breaks_ties_by_order() -> None:
    """Equal remainders go to the earlier key, deterministically."""
    assert largest_remainder(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert largest_remainder(0, {"a": 1, "b": 0}) == {"a": 0, "b": 0}


def test_memory_split_uses_only_non_empty_tiers() -> None:
    """The memory layer is split by weight over the tiers that hold something."""
    _, layers, tiers = allocate(
        1_000, phase="idle", tiers_present=[Tier.SHORT_TERM, Tier.PROCEDURAL]
    )
    assert tiers[Tier.EPISODIC] == tiers[Tier.SEMANTIC] == 0
    assert tiers[Tier.SHORT_TERM] + tiers[Tier.PROCEDURAL] == layers[Layer.MEMORY]
    assert tiers[Tier.SHORT_TERM] > tiers[Tier.PROCEDURAL]  # weight 1.5 against 1.2


def test_plan_budget_orders_fixed_headroom_flexible() -> None:
    """Fixed costs are measured, headroom set aside, and the rest shared exactly."""
    counter = FixedCounter()
    state = LayeredState(
        system=SystemLayer(prompt="p" * 400, tools=(ToolDef(name="bash"),)),
        task=TaskLayer(statement="t" * 200, pinned=("x" * 40,)),
    )
    plan = plan_budget(state, phase="planning", counter=counter, budget=10_000)
    assert plan.fixed.system_prompt == 100
    assert plan.fixed.task == 50
    assert plan.fixed.pinned == (10,)
    remaining = 10_000 - plan.fixed.total
    assert plan.headroom == min(2_000, remaining // 10)
    assert plan.flexible == remaining - plan.headroom
    assert sum(plan.layers.values()) == plan.flexible


def test_fixed_costs_over_budget_name_each_part() -> None:
    """Fixed costs above the input budget raise BudgetExceeded naming their parts and sizes."""
    state = LayeredState(
        system=SystemLayer(prompt="p" * 4_000),
        task=TaskLayer(statement="t" * 400, pinned=("x" * 80,)),
    )
    with pytest.raises(BudgetExceeded) as info:
        plan_budget(state, phase="planning", counter=FixedCounter(), budget=500)
    message = str(info.value)
    assert "system_prompt=1000" in message
    assert "task=100" in message
    assert "pinned[0]=20" in message
    assert info.value.fixed["system_prompt"] == 1_000


def test_budget_from_profile_and_bad_budgets() -> None:
    """The profile gives the input budget; a non-positive budget is a PolicyError."""
    profile = ModelProfile(name="tiny", provider="test", context_window=10_000, max_output=1_000)
    plan = plan_budget(LayeredState(), phase="idle", counter=FixedCounter(), profile=profile)
    assert plan.input_budget == 9_000
    with pytest.raises(PolicyError):
        plan_budget(LayeredState(), phase="idle", counter=FixedCounter(), budget=0)
    with pytest.raises(PolicyError):
        plan_budget(LayeredState(), phase="idle", counter=FixedCounter())
    with pytest.raises(PolicyError):
        ModelProfile(
            name="none-left",
            provider="test",
            context_window=1_000,
            max_output=1_000,
            output_reserve=1_000,
        )


def test_budget_above_the_model_is_refused() -> None:
    """A budget above the profile's input budget is a PolicyError naming both numbers."""
    profile = ModelProfile(name="tiny", provider="test", context_window=10_000, max_output=1_000)
    counter = FixedCounter()
    plan = plan_budget(LayeredState(), phase="idle", counter=counter, profile=profile, budget=9_000)
    assert plan.input_budget == 9_000
    with pytest.raises(PolicyError) as info:
        plan_budget(LayeredState(), phase="idle", counter=counter, profile=profile, budget=9_001)
    assert "input budget of model 'tiny', 9000 tokens" in str(info.value)
    assert "(got 9001)" in str(info.value)
    assert info.value.rule == "budget_over_model"
    # Without a profile there is no model to exceed.
    free = plan_budget(LayeredState(), phase="idle", counter=counter, budget=10_000_000)
    assert free.input_budget == 10_000_000


def test_window_budget_above_the_model_is_refused_before_anything_changes() -> None:
    """build_window refuses a budget the model cannot take and leaves the conversation as it was."""
    profile = get_profile("claude-sonnet-4-5")
    conversation = Conversation(
        [Message.user("fix it"), Message.assistant("done")], measure=window_measure(FixedCounter())
    )
    before = list(conversation.effective())
    with pytest.raises(PolicyError, match=f"{profile.input_budget} tokens .*got 10000000"):
        build_window(
            LayeredState(),
            conversation,
            phase="execution",
            counter=FixedCounter(),
            profile=profile,
            budget=10_000_000,
        )
    assert list(conversation.effective()) == before


def test_engine_budget_above_the_model_is_refused() -> None:
    """An engine given a budget above its model's input budget is refused when made."""
    with pytest.raises(PolicyError, match="got 10000000") as info:
        Engine(model="claude-haiku-4-5", budget=10_000_000)
    assert info.value.rule == "budget_over_model"
    assert info.value.details["input_budget"] == get_profile("claude-haiku-4-5").input_budget


def test_cli_run_budget_above_the_model_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`ctxflow run --budget 10000000` exits 2 with one stderr line naming both numbers."""
    transcript = Path(__file__).parents[2] / "examples/transcripts/openhands-ponyc-4588.jsonl"
    args = ["run", str(transcript), "--budget", "10000000", "--store", "memory", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "191808 tokens" in err and "(got 10000000)" in err
