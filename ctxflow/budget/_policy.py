"""Budget policies: base ratios, phase and model adjustments, memory-tier weights.

A policy is a frozen value, so an engine can swap it per chart or per phase
and a checkpoint can record which one was in force. Every number is checked
on construction: NaN, infinities, negative base ratios or weights, and
policies that would leave nothing to share raise :class:`PolicyError` before
anything uses them.

Ratios are in *points* (percent of the flexible budget). Adjustments are
points added to the base ratio of a layer; each adjusted ratio is clamped at
zero and the six are normalised, so the points need not sum to 100.

Model-class adjustments (``ModelProfile.model_class``, which follows the
model's family and size, not its window: see docs/models.md):

- ``large`` (Opus-class: Claude Opus, GPT-5, GPT-4.1, o3, Gemini Pro): evidence
  +5, memory +5 — a model that reads long contexts well is given more raw tool
  output and history;
- ``small`` (Haiku-class: Claude Haiku, the ``-mini``/``-nano``/``-flash``
  models, GPT-3.5): evidence -10, memory -5, work buffer +15 — a small model
  does better with its current working set than with old evidence;
- ``standard`` (Sonnet, GPT-4o, ...): no adjustment.

Lending (``lending``): what a window cannot use of one allocation is lent on,
but within the phase's intent. The leftover message budget is shared between
the work and evidence layers in proportion to their allocations; the work
layer's share shows more of the latest tool rounds whole (``"recent"``), the
evidence layer's goes to the phase's other uses in order — ``"condensed"``
(one common cap raised over every older round's results, so older output is
condensed evenly) or ``"relevant"`` (rounds shown whole by relevance to the
task and the latest turn). What is still left then goes to the uses in
order, unbounded. Execution lends ``recent, condensed``; reflection
``condensed, recent`` (it reaches furthest back, older output condensed);
planning ``relevant, condensed, recent`` (what was learned that bears on the
task). A phase without an entry lends ``recent, condensed``.

Phases are plain strings (charts are user-defined). A phase without an entry
in ``phases`` gets no adjustment, unless ``known_phases`` is set: then a phase
outside it raises :class:`PolicyError` (rule ``unknown_phase``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import attrs

from ctxflow._checks import check_number
from ctxflow.errors import PolicyError
from ctxflow.layers import Layer, LayeredState, Tier, ToolDef

__all__ = [
    "DEFAULT_LENDING",
    "DEFAULT_MODEL_ADJUSTMENTS",
    "DEFAULT_PHASE_ADJUSTMENTS",
    "DEFAULT_WITHHELD",
    "LEND_USES",
    "Adjustments",
    "BudgetPolicy",
    "LayerRatios",
    "TierWeights",
]


def _check_shares(shares: Mapping[str, object], each: str) -> None:
    """Each share is a number >= 0 and not every one is zero."""
    total = sum(
        check_number(value, f"{each} '{name}'", kind="non-negative", rule="policy_value")
        for name, value in shares.items()
    )
    if total <= 0:
        raise PolicyError(
            f"{each}s must not all be zero (got {dict(shares)})", rule="policy_all_zero"
        )


@attrs.frozen(kw_only=True)
class LayerRatios:
    """Base shares of the flexible budget per layer, in points (need not sum to 100).

    The system and task shares cover what those layers render beyond their
    measured fixed costs (the context-block framing); the rest of the system
    prompt, the tools, the task statement and pinned items are fixed costs.
    """

    system: float = 5.0
    task: float = 5.0
    runtime: float = 3.0
    memory: float = 52.0
    evidence: float = 25.0
    work: float = 10.0

    def __attrs_post_init__(self) -> None:
        _check_shares({layer.value: getattr(self, layer.value) for layer in Layer}, "ratio")

    def as_dict(self) -> dict[Layer, float]:
        """The ratios by layer, in render order."""
        return {layer: float(getattr(self, layer.value)) for layer in Layer}


def _points(value: Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[Layer, float]]:
    out: dict[str, dict[Layer, float]] = {}
    for key, changes in (value or {}).items():
        if not isinstance(key, str) or not key:
            raise PolicyError(
                f"adjustment keys must be non-empty strings (got {key!r})", rule="policy_key"
            )
        row: dict[Layer, float] = {}
        for layer_name, points in changes.items():
            try:
                layer = Layer(layer_name)
            except ValueError:
                raise PolicyError(
                    f"adjustment layer must be one of {[x.value for x in Layer]} "
                    f"(got {layer_name!r} under {key!r})",
                    rule="policy_layer",
                    key=key,
                ) from None
            row[layer] = check_number(
                points, f"adjustment {key}.{layer.value}", kind="finite", rule="policy_value"
            )
        out[key] = row
    return out


@attrs.frozen(kw_only=True)
class Adjustments:
    """Points added to base ratios, keyed by phase name or model class."""

    points: Mapping[str, Mapping[Layer, float]] = attrs.field(factory=dict, converter=_points)

    def for_key(self, key: str) -> Mapping[Layer, float]:
        """The adjustment row for ``key`` (empty when there is none)."""
        return self.points.get(key, {})


#: Phase adjustments of the default chart (planning, execution, reflection).
DEFAULT_PHASE_ADJUSTMENTS = Adjustments(
    points={
        "planning": {"memory": 10, "evidence": 10, "work": -20},
        "execution": {"memory": -10, "evidence": -5, "work": 15},
        "reflection": {"memory": 15, "evidence": 5, "work": -20},
    }
)

#: Model-class adjustments (see the module docstring for why these values).
DEFAULT_MODEL_ADJUSTMENTS = Adjustments(
    points={
        "large": {"evidence": 5, "memory": 5},
        "small": {"evidence": -10, "memory": -5, "work": 15},
    }
)


#: The uses leftover message budget can be lent to (see the module docstring).
LEND_USES = ("recent", "condensed", "spread", "relevant", "memory")

#: Lending order of the default chart's phases (see the module docstring).
DEFAULT_LENDING: Mapping[str, tuple[str, ...]] = {
    "planning": ("relevant", "memory"),
    "execution": ("recent", "condensed", "memory"),
    "reflection": ("memory", "spread"),
}
_DEFAULT_LEND = ("recent", "condensed", "memory")

#: Uses a model class never lends to: a small model's history stops at its memory allocation.
DEFAULT_WITHHELD: Mapping[str, tuple[str, ...]] = {"small": ("memory",)}


def _withheld(value: Mapping[str, object] | None) -> dict[str, tuple[str, ...]]:
    return _lending(DEFAULT_WITHHELD if value is None else value, "withheld")


def _lending(
    value: Mapping[str, object] | None, field: str = "lending"
) -> dict[str, tuple[str, ...]]:
    if value is None:
        return dict(DEFAULT_LENDING)
    if not isinstance(value, Mapping):
        raise PolicyError(
            f"'{field}' must map names to lists of uses (got {value!r})",
            rule="policy_value",
            field=field,
        )
    out: dict[str, tuple[str, ...]] = {}
    for phase, uses in value.items():
        if not isinstance(phase, str) or not phase:
            raise PolicyError(
                f"'{field}' keys must be non-empty names (got {phase!r})",
                rule="policy_key",
                field=field,
            )
        order = tuple(uses) if isinstance(uses, list | tuple) else None
        if (
            order is None
            or any(use not in LEND_USES for use in order)
            or len(set(order)) != len(order)
        ):
            raise PolicyError(
                f"'{field}' for {phase!r} must list distinct uses out of "
                f"{list(LEND_USES)} (got {uses!r})",
                rule="policy_value",
                field=field,
                phase=phase,
            )
        out[phase] = order
    return out


@attrs.frozen(kw_only=True)
class TierWeights:
    """Weights splitting the memory layer's allocation over its non-empty tiers."""

    short_term: float = 1.5
    episodic: float = 1.0
    semantic: float = 0.8
    procedural: float = 1.2

    def __attrs_post_init__(self) -> None:
        _check_shares({tier.value: getattr(self, tier.value) for tier in Tier}, "tier weight")

    def as_dict(self) -> dict[Tier, float]:
        """The weights by tier."""
        return {tier: float(getattr(self, tier.value)) for tier in Tier}


def _phases(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise PolicyError(
            f"'known_phases' must be a collection of names (got the string {value!r})",
            rule="policy_value",
        )
    return frozenset(str(v) for v in value)  # type: ignore[attr-defined]


@attrs.frozen(kw_only=True)
class BudgetPolicy:
    """Everything that decides how a flexible budget is shared out.

    ``headroom_max`` and ``headroom_fraction`` set ``compaction_headroom``:
    ``min(headroom_max, floor(headroom_fraction * (input budget - fixed costs)))``
    tokens kept free so a summarizer call always fits.

    ``tool_definitions`` says which tool definitions a window carries:
    ``"all"`` (the default) carries every L0 tool, in L0's order, every turn —
    the phase's narrower set is stated in the runtime context and enforced
    when a call comes back, so a phase change leaves the prompt-cache prefix
    intact; ``"phase"`` carries only the tools the phase allows.

    ``history_reach`` says how far back the message history reaches before
    lending: ``"memory"`` (the default) as far as the memory layer's
    allocation (less what the memory tiers render) pays for the history
    masked, so each phase's memory share shows; ``"budget"`` as far as the
    message budget allows. Either way what is left at the end is lent to the
    history too, so a budget that holds everything shows everything.

    ``work_pays`` says what the work and evidence allocations pay for in the
    messages: ``"rounds"`` (the default) the latest tool rounds whole (call,
    results and any text) and the condensed ones; ``"results"`` their tool
    results only (the rest of those rounds then counts as history).

    ``lending`` maps phase names to the order they lend leftover message
    budget in, and ``withheld`` model classes to the uses they never lend to
    (by default a small model's history stops at its memory allocation even
    when the budget has room: a smaller window for a model that does better
    with its working set); see the module docstring.
    """

    ratios: LayerRatios = LayerRatios()
    phases: Adjustments = DEFAULT_PHASE_ADJUSTMENTS
    models: Adjustments = DEFAULT_MODEL_ADJUSTMENTS
    tiers: TierWeights = TierWeights()
    known_phases: frozenset[str] | None = attrs.field(default=None, converter=_phases)
    lending: Mapping[str, tuple[str, ...]] = attrs.field(default=None, converter=_lending)
    withheld: Mapping[str, tuple[str, ...]] = attrs.field(default=None, converter=_withheld)
    headroom_max: int = 2_000
    headroom_fraction: float = 0.10
    tool_definitions: Literal["all", "phase"] = "all"
    history_reach: Literal["memory", "budget"] = "memory"
    work_pays: Literal["rounds", "results"] = "rounds"

    def __attrs_post_init__(self) -> None:
        if self.work_pays not in ("rounds", "results"):
            raise PolicyError(
                f"'work_pays' must be 'rounds' or 'results' (got {self.work_pays!r})",
                rule="policy_value",
                field="work_pays",
            )
        if self.history_reach not in ("memory", "budget"):
            raise PolicyError(
                f"'history_reach' must be 'memory' or 'budget' (got {self.history_reach!r})",
                rule="policy_value",
                field="history_reach",
            )
        check_number(
            self.headroom_max, "'headroom_max'", kind="non-negative integer", rule="policy_value"
        )
        if self.tool_definitions not in ("all", "phase"):
            raise PolicyError(
                f"'tool_definitions' must be 'all' or 'phase' (got {self.tool_definitions!r})",
                rule="policy_value",
                field="tool_definitions",
            )
        fraction = check_number(
            self.headroom_fraction, "'headroom_fraction'", kind="non-negative", rule="policy_value"
        )
        if fraction >= 1:
            raise PolicyError(
                f"'headroom_fraction' must be below 1 (got {self.headroom_fraction!r})",
                rule="policy_value",
                field="headroom_fraction",
            )

    def window_tools(
        self, state: LayeredState, *, history_has_tools: bool = False
    ) -> tuple[ToolDef, ...]:
        """The tool definitions a window carries for ``state`` under this policy.

        Under ``"phase"``, a phase that allows no tool still carries every L0
        tool when the history holds tool blocks (Anthropic rejects tool blocks
        without tool definitions).
        """
        if self.tool_definitions == "all":
            return state.system.tools
        projected = state.projected_tools()
        if not projected and history_has_tools:
            return state.system.tools
        return projected

    def check_phase(self, phase: str) -> None:
        """Raise :class:`PolicyError` when the policy restricts phases and ``phase`` is not one."""
        if not isinstance(phase, str) or not phase:
            raise PolicyError(
                f"'phase' must be a non-empty string (got {phase!r})", rule="unknown_phase"
            )
        if self.known_phases is not None and phase not in self.known_phases:
            raise PolicyError(
                f"'phase' must be one of {sorted(self.known_phases)} (got {phase!r})",
                rule="unknown_phase",
                phase=phase,
            )

    def ratios_for(self, phase: str, model_class: str = "standard") -> dict[Layer, float]:
        """The adjusted ratios for a phase and model class, clamped at zero (not normalised).

        Raises :class:`PolicyError` when the phase is not allowed or every
        adjusted ratio is zero.
        """
        self.check_phase(phase)
        out = self.ratios.as_dict()
        for row in (self.phases.for_key(phase), self.models.for_key(model_class)):
            for layer, points in row.items():
                out[layer] += points
        clamped = {layer: max(0.0, value) for layer, value in out.items()}
        if sum(clamped.values()) <= 0:
            raise PolicyError(
                f"adjusted ratios for phase {phase!r} and model class {model_class!r} are all "
                f"zero (got {out})",
                rule="policy_all_zero",
                phase=phase,
            )
        return clamped

    def lend_for(self, phase: str, model_class: str = "standard") -> tuple[str, ...]:
        """The order ``phase`` lends leftover budget in, less the uses ``model_class`` withholds.

        See the module docstring.
        """
        order = self.lending.get(phase, _DEFAULT_LEND)
        withheld = self.withheld.get(model_class, ())
        return tuple(use for use in order if use not in withheld) if withheld else order

    def headroom(self, remaining: int) -> int:
        """``compaction_headroom`` for ``remaining`` tokens left after fixed costs."""
        if remaining <= 0:
            return 0
        return min(self.headroom_max, math.floor(self.headroom_fraction * remaining))
