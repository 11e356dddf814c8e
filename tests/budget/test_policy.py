"""Budget policies: validation of ratios, adjustments, weights and phases."""

import math

import pytest

from ctxflow.budget import Adjustments, BudgetPolicy, LayerRatios, TierWeights
from ctxflow.errors import PolicyError
from ctxflow.layers import Layer


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_bad_ratio_is_rejected(value: float) -> None:
    """A NaN, infinite or negative base ratio raises PolicyError naming the layer."""
    with pytest.raises(PolicyError, match="memory"):
        LayerRatios(memory=value)


def test_all_zero_ratios_are_rejected() -> None:
    """A policy whose ratios are all zero has nothing to share and is rejected."""
    with pytest.raises(PolicyError) as info:
        LayerRatios(system=0, task=0, runtime=0, memory=0, evidence=0, work=0)
    assert info.value.rule == "policy_all_zero"


def test_adjustments_that_zero_everything_are_rejected() -> None:
    """Adjustments that clamp every ratio to zero raise PolicyError for that phase."""
    policy = BudgetPolicy(
        ratios=LayerRatios(system=0, task=0, runtime=0, memory=10, evidence=0, work=0),
        phases=Adjustments(points={"squeeze": {"memory": -20}}),
    )
    with pytest.raises(PolicyError) as info:
        policy.ratios_for("squeeze")
    assert info.value.rule == "policy_all_zero"


def test_nan_adjustment_is_rejected() -> None:
    """A NaN adjustment raises PolicyError before the policy exists."""
    with pytest.raises(PolicyError):
        Adjustments(points={"planning": {"memory": math.nan}})


def test_unknown_layer_in_adjustment_is_rejected() -> None:
    """An adjustment naming a layer that does not exist raises PolicyError."""
    with pytest.raises(PolicyError, match="bogus"):
        Adjustments(points={"planning": {"bogus": 5}})


def test_bad_tier_weights_are_rejected() -> None:
    """Negative or all-zero tier weights raise PolicyError."""
    with pytest.raises(PolicyError):
        TierWeights(episodic=-1)
    with pytest.raises(PolicyError):
        TierWeights(short_term=0, episodic=0, semantic=0, procedural=0)


def test_unknown_phase_rejected_only_when_policy_restricts() -> None:
    """Any phase string is accepted by default; a restricted policy rejects unknown ones."""
    assert BudgetPolicy().ratios_for("my-custom-phase") == {
        layer: float(v) for layer, v in LayerRatios().as_dict().items()
    }
    strict = BudgetPolicy(known_phases={"planning", "execution"})
    with pytest.raises(PolicyError) as info:
        strict.ratios_for("reflection")
    assert info.value.rule == "unknown_phase"


def test_default_phase_adjustments() -> None:
    """Planning shifts 20 points from the work buffer to memory and evidence."""
    ratios = BudgetPolicy().ratios_for("planning")
    assert ratios[Layer.MEMORY] == 62
    assert ratios[Layer.EVIDENCE] == 35
    assert ratios[Layer.WORK] == 0  # 10 - 20, clamped at zero


def test_model_class_adjustments() -> None:
    """Large models give evidence and memory more; small ones give the work buffer more."""
    policy = BudgetPolicy()
    assert policy.ratios_for("idle", "large")[Layer.EVIDENCE] == 30
    assert policy.ratios_for("idle", "large")[Layer.MEMORY] == 57
    assert policy.ratios_for("idle", "small")[Layer.WORK] == 25
    assert policy.ratios_for("idle", "small")[Layer.EVIDENCE] == 15
    assert policy.ratios_for("idle", "standard") == policy.ratios_for("idle")


def test_headroom_default() -> None:
    """Headroom is min(2000, 10% of what is left after fixed costs)."""
    policy = BudgetPolicy()
    assert policy.headroom(5_000) == 500
    assert policy.headroom(100_000) == 2_000
    assert policy.headroom(0) == 0
    with pytest.raises(PolicyError):
        BudgetPolicy(headroom_fraction=1.5)
