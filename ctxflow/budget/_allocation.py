"""Budget allocation: fixed costs first, headroom, then the flexible rest by ratios.

The order follows DESIGN.md "The budget contract":

1. the input budget comes from the profile (``context_window - output_reserve``)
   or is given directly; a budget given with a profile must fit the profile's
   (a larger window is one the model would refuse);
2. fixed costs are *measured* with the token counter: the system prompt, the
   tool definitions (as the JSON the window sends), the task statement and each
   pinned item. If they alone exceed the input budget, :class:`BudgetExceeded`
   names each of them with its size;
3. ``compaction_headroom`` is set aside (policy default
   ``min(2000, 10% of what is left)``);
4. the rest, the **flexible budget**, is shared by the adjusted ratios with
   integers by largest remainder (ties go to the earlier layer in render
   order), so allocations sum exactly to the flexible budget;
5. the memory layer is split again over its non-empty tiers by weight.

Largest remainder is not monotonic per layer (the Alabama paradox: one more
token in total can move a remainder seat from one layer to another), but each
layer's allocation is always within one token of its exact quota, so growing
the total never shrinks a layer by more than one token; the sum is exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import TypeVar

import attrs

from ctxflow.budget._policy import BudgetPolicy
from ctxflow.errors import BudgetExceeded, PolicyError
from ctxflow.layers import Layer, LayeredState, Tier, ToolDef
from ctxflow.protocols import TokenCounter
from ctxflow.tokens import ModelProfile

__all__ = [
    "DEFAULT_POLICY",
    "Allocation",
    "FixedCosts",
    "allocate",
    "largest_remainder",
    "measure_fixed",
    "plan_budget",
    "tools_json",
]

#: The policy used when none is given.
DEFAULT_POLICY = BudgetPolicy()

K = TypeVar("K")


def largest_remainder(total: int, weights: Mapping[K, float]) -> dict[K, int]:
    """Split ``total`` into integers proportional to ``weights``, summing exactly to ``total``.

    Exact rational arithmetic; leftover units go to the largest remainders,
    ties to the key that comes first in ``weights``. Zero weights get zero.
    """
    if total < 0:
        raise PolicyError(f"'total' must be >= 0 (got {total})", rule="policy_value")
    exact = {key: Fraction(weight) for key, weight in weights.items()}
    weight_sum = sum(exact.values(), Fraction(0))
    if weight_sum <= 0:
        raise PolicyError(
            f"weights must have a positive sum (got {dict(weights)})", rule="policy_all_zero"
        )
    quotas = {key: w * total / weight_sum for key, w in exact.items()}
    out = {key: int(q) for key, q in quotas.items()}
    left = total - sum(out.values())
    order = list(quotas)
    ranked = sorted(order, key=lambda k: (-(quotas[k] - out[k]), order.index(k)))
    for key in ranked[:left]:
        out[key] += 1
    return out


def tools_json(tools: Sequence[ToolDef]) -> str:
    """The canonical JSON of tool definitions, as counted for the budget."""
    if not tools:
        return ""
    return json.dumps(
        [
            {"name": t.name, "description": t.description, "input_schema": dict(t.input_schema)}
            for t in tools
        ],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )


@attrs.frozen(kw_only=True)
class FixedCosts:
    """Measured (not allocated) costs: L0 prompt and tools, L1 statement and pinned items."""

    system_prompt: int = 0
    tools: int = 0
    task: int = 0
    pinned: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        """All fixed costs together."""
        return self.system_prompt + self.tools + self.task + sum(self.pinned)

    def named(self) -> dict[str, int]:
        """Each fixed cost by name (``pinned[i]`` per pinned item)."""
        out = {"system_prompt": self.system_prompt, "tools": self.tools, "task": self.task}
        for index, size in enumerate(self.pinned):
            out[f"pinned[{index}]"] = size
        return out


def measure_fixed(
    state: LayeredState,
    counter: TokenCounter,
    *,
    extra_system: str = "",
    tools: Sequence[ToolDef] | None = None,
) -> FixedCosts:
    """Measure the fixed costs of ``state`` with ``counter``.

    ``extra_system`` is system text carried by the conversation itself (a
    leading system message); it counts as part of the system prompt.
    ``tools`` are the definitions the window carries (None: the phase's).
    """
    prompt = state.system.prompt
    if extra_system and extra_system != prompt:
        prompt = f"{prompt}\n\n{extra_system}" if prompt else extra_system
    return FixedCosts(
        system_prompt=counter.count(prompt) if prompt else 0,
        tools=counter.count(tools_json(state.projected_tools() if tools is None else tools)),
        task=counter.count(state.task.statement) if state.task.statement else 0,
        pinned=tuple(counter.count(item) for item in state.task.pinned),
    )


@attrs.frozen(kw_only=True)
class Allocation:
    """How one input budget is shared: fixed costs, headroom, and per-layer integers."""

    input_budget: int
    fixed: FixedCosts
    headroom: int
    flexible: int
    phase: str
    model_class: str
    ratios: Mapping[Layer, float]
    layers: Mapping[Layer, int]
    tiers: Mapping[Tier, int]

    def __getitem__(self, layer: Layer) -> int:
        return self.layers[layer]


def allocate(
    flexible: int,
    *,
    phase: str,
    model_class: str = "standard",
    policy: BudgetPolicy = DEFAULT_POLICY,
    tiers_present: Iterable[Tier] = tuple(Tier),
) -> tuple[dict[Layer, float], dict[Layer, int], dict[Tier, int]]:
    """Share ``flexible`` tokens over layers and memory tiers.

    Returns the normalised ratios (fractions summing to 1), the layer integers
    (summing exactly to ``flexible``) and the memory tier integers (summing
    exactly to the memory layer's integer; all zero when no tier is present).
    """
    if isinstance(flexible, bool) or not isinstance(flexible, int) or flexible < 0:
        raise PolicyError(
            f"'flexible' must be an integer >= 0 (got {flexible!r})", rule="policy_value"
        )
    present = tuple(t for t in Tier if t in set(tiers_present))
    key = (flexible, phase, model_class, present)
    cached = _ALLOCATIONS.get(id(policy))
    if cached is not None and cached[0] is policy and key in cached[1]:
        ratios, layers, tiers = cached[1][key]
        return dict(ratios), dict(layers), dict(tiers)
    result = _allocate(flexible, phase, model_class, policy, present)
    if cached is None or cached[0] is not policy:
        cached = (policy, {})
        _ALLOCATIONS[id(policy)] = cached
        if len(_ALLOCATIONS) > 32:
            _ALLOCATIONS.clear()
            _ALLOCATIONS[id(policy)] = cached
    if len(cached[1]) > 256:
        cached[1].clear()
    cached[1][key] = result
    return dict(result[0]), dict(result[1]), dict(result[2])


_Result = tuple[dict[Layer, float], dict[Layer, int], dict[Tier, int]]
_ALLOCATIONS: dict[int, tuple[BudgetPolicy, dict[tuple[object, ...], _Result]]] = {}


def _allocate(
    flexible: int,
    phase: str,
    model_class: str,
    policy: BudgetPolicy,
    present: tuple[Tier, ...],
) -> _Result:
    adjusted = policy.ratios_for(phase, model_class)
    total = sum(adjusted.values())
    ratios = {layer: value / total for layer, value in adjusted.items()}
    layers = largest_remainder(flexible, adjusted)
    weights = {t: w for t, w in policy.tiers.as_dict().items() if t in present and w > 0}
    if weights:
        split = largest_remainder(layers[Layer.MEMORY], weights)
        tiers = {t: split.get(t, 0) for t in Tier}
    else:
        tiers = dict.fromkeys(Tier, 0)
    return ratios, layers, tiers


def plan_budget(
    state: LayeredState,
    *,
    phase: str,
    counter: TokenCounter,
    profile: ModelProfile | None = None,
    budget: int | None = None,
    policy: BudgetPolicy = DEFAULT_POLICY,
    tiers_present: Iterable[Tier] = tuple(Tier),
    extra_system: str = "",
    fixed: FixedCosts | None = None,
) -> Allocation:
    """The full allocation for one call: measure fixed costs, set headroom, share the rest.

    Raises :class:`PolicyError` for an unusable phase, budget or policy (a
    ``budget`` above the ``profile``'s input budget included) and
    :class:`BudgetExceeded` when the fixed costs alone exceed the input budget.
    """
    policy.check_phase(phase)
    if budget is None:
        if profile is None:
            raise PolicyError("give a model 'profile' or an input 'budget'", rule="no_budget")
        input_budget = profile.input_budget
    else:
        input_budget = budget
    if isinstance(input_budget, bool) or not isinstance(input_budget, int) or input_budget <= 0:
        raise PolicyError(
            f"the input budget must be a positive integer (got {input_budget!r})",
            rule="no_input_budget",
            budget=input_budget,
        )
    if profile is not None:
        profile.check_budget(input_budget)
    model_class = profile.model_class if profile is not None else "standard"
    if fixed is None:
        fixed = measure_fixed(
            state, counter, extra_system=extra_system, tools=policy.window_tools(state)
        )
    costs = fixed
    if costs.total > input_budget:
        parts = ", ".join(f"{name}={size}" for name, size in costs.named().items() if size)
        raise BudgetExceeded(
            f"fixed costs must fit the input budget of {input_budget} tokens "
            f"(got {costs.total}: {parts})",
            rule="fixed_costs",
            budget=input_budget,
            fixed=costs.named(),
        )
    remaining = input_budget - costs.total
    headroom = policy.headroom(remaining)
    flexible = remaining - headroom
    ratios, layers, tiers = allocate(
        flexible,
        phase=phase,
        model_class=model_class,
        policy=policy,
        tiers_present=tiers_present,
    )
    return Allocation(
        input_budget=input_budget,
        fixed=costs,
        headroom=headroom,
        flexible=flexible,
        phase=phase,
        model_class=model_class,
        ratios=ratios,
        layers=layers,
        tiers=tiers,
    )
