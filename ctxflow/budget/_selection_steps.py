"""The selector's choosing steps (1 to 5 of :mod:`ctxflow.budget._selection`) over the unit table.

Each step reads the index and changes one :class:`Plan`; the steps run in
order, and each spends what is left of the message budget (``plan.left``).
Everything here works on unit numbers (rows of
:class:`~ctxflow.budget._selection_index.UnitTable`); messages are only
assembled afterwards.
"""

from __future__ import annotations

import bisect
import enum
from typing import NamedTuple

from ctxflow.budget._scoring import ScoreWeights, keywords
from ctxflow.budget._selection_index import SelectionIndex, Trim, UnitTable
from ctxflow.budget._selection_trim import trim_unit
from ctxflow.errors import BudgetExceeded
from ctxflow.model import Role
from ctxflow.protocols import TokenCounter

#: How far back from the recency cut gap fill looks, in units.
GAP_LOOKBACK = 256
#: The smallest remainder worth showing a middle-trimmed result for.
MIN_PARTIAL = 64


class Show(enum.IntEnum):
    """How a chosen unit appears in the window."""

    MASKED = 0
    WHOLE = 1
    TRIMMED = 2


# Plain names for the members: the assembly loops read them often.
MASKED, WHOLE, TRIMMED = Show.MASKED, Show.WHOLE, Show.TRIMMED


class Tally:
    """Units, messages and tokens left out (or masked, or trimmed), per reason."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: dict[str, list[int]] = {}

    def add(self, reason: str, *, units: int, messages: int, tokens: int) -> None:
        """Count ``units`` more units (``messages``, ``tokens``) for ``reason``."""
        row = self.rows.setdefault(reason, [0, 0, 0])
        row[0] += units
        row[1] += messages
        row[2] += tokens

    def add_unit(self, reason: str, units: UnitTable, unit: int) -> None:
        """Count one unit of the table, whole, for ``reason``."""
        messages = units.end[unit] - units.first[unit]
        self.add(reason, units=1, messages=messages, tokens=units.tokens[unit])


class Plan:
    """One build's choice in progress, as unit numbers.

    The units between the task (``lead``) and the last turn (``last``) form
    the history ``[history_start, history_end)``. Recency takes a contiguous
    run of it: ``[masked_from, whole_from)`` masked and ``[whole_from,
    history_end)`` whole. ``chosen`` holds every other unit taken and how it
    shows; ``trims`` the units shown middle-trimmed. ``walk_stop`` is the
    newest unit recency did not take (gap fill looks there and older).
    """

    __slots__ = (
        "budget",
        "chosen",
        "evidence_left",
        "history_end",
        "history_start",
        "important",
        "last",
        "lead",
        "left",
        "masked_from",
        "trims",
        "walk_stop",
        "whole_from",
    )

    def __init__(self, index: SelectionIndex, *, budget: int, lead: int, last: int) -> None:
        units = index.units
        self.budget = budget
        self.lead = lead
        self.last = last
        self.history_start = lead + 1
        self.history_end = last
        #: the important units of the history (reserved in step 2)
        self.important = [u for u in units.important if lead < u < last and units.valid[u]]
        self.chosen: dict[int, Show] = {}
        self.trims: dict[int, Trim] = {}
        self.masked_from = self.whole_from = last
        self.walk_stop = lead
        self.left = budget
        self.evidence_left = 0

    @property
    def critical(self) -> list[int]:
        """The units kept whatever the space: the task and the important ones."""
        return [self.lead, *self.important]


def leading_unit(index: SelectionIndex, excluded: Tally) -> int | None:
    """Step 1: the task unit, the first valid unit opening with a user message.

    Units before it cannot lead a window (``before_first_user``). None when
    no unit can.
    """
    units, view = index.units, index.view
    count = len(units)
    lead = 0
    while lead < count and not (units.valid[lead] and view[units.first[lead]].role is Role.USER):
        lead += 1
    for u in range(lead):
        excluded.add_unit("before_first_user", units, u)
    return lead if lead < count else None


def newest_unit(index: SelectionIndex, lead: int, excluded: Tally) -> int:
    """Step 1: the last turn, the newest valid unit; broken ones after it are ``broken_pair``."""
    units = index.units
    last = len(units) - 1
    while last > lead and not units.valid[last]:
        excluded.add_unit("broken_pair", units, last)
        last -= 1
    return last


def reserve_mandatory(
    index: SelectionIndex, plan: Plan, evidence: int, counter: TokenCounter
) -> None:
    """Step 2: reserve the task and the important units masked, the last turn whole.

    A last turn that does not fit is middle-trimmed; a task that is the last
    turn too is shown whole. Raises :class:`BudgetExceeded` with the numbers
    when they cannot fit, trimmed.
    """
    units = index.units
    lead, last = plan.lead, plan.last
    reserved = sum(units.masked[u] for u in plan.important)
    if last != lead:
        reserved += units.masked[lead]
        plan.chosen[lead] = MASKED
        last_cost = _fit_last_turn(index, plan, reserved, counter)
        plan.chosen[last] = WHOLE
        plan.evidence_left = evidence - max(0, last_cost - units.masked[last])
    else:
        last_cost = 0
        reserved += _fit_task_alone(index, plan, counter)
        plan.chosen[lead] = WHOLE
        plan.evidence_left = evidence
    if reserved + last_cost > plan.budget:
        raise BudgetExceeded(
            f"critical messages must fit the message budget of {plan.budget} tokens "
            f"(got {reserved} for {len(plan.critical)} critical turns and {last_cost} for "
            "the last turn)",
            rule="critical_exceeds",
            budget=plan.budget,
            critical=reserved,
            last_turn=last_cost,
        )
    plan.left = plan.budget - reserved - last_cost


def _fit_last_turn(index: SelectionIndex, plan: Plan, reserved: int, counter: TokenCounter) -> int:
    """The last turn's cost, middle-trimmed into what ``reserved`` leaves of the budget."""
    budget, last = plan.budget, plan.last
    whole = index.units.tokens[last]
    if reserved + whole <= budget:
        return whole
    trim = trim_unit(index, last, budget - reserved, counter)
    if trim is None:
        raise BudgetExceeded(
            f"critical messages and the last turn must fit the message budget of {budget} "
            f"tokens (got critical={reserved}, last turn={whole} before trimming)",
            rule="critical_exceeds",
            budget=budget,
            critical=reserved,
            last_turn=whole,
        )
    plan.trims[last] = trim
    return trim.tokens


def _fit_task_alone(index: SelectionIndex, plan: Plan, counter: TokenCounter) -> int:
    """The cost of the task when it is also the last turn, middle-trimmed to the budget."""
    budget, lead = plan.budget, plan.lead
    whole = index.units.tokens[lead]
    if whole <= budget:
        return whole
    trim = trim_unit(index, lead, budget, counter)
    if trim is None:
        raise BudgetExceeded(
            f"the latest user turn (here the task) must fit the {budget} tokens the input "
            f"budget leaves after the system text, the tools and the headroom; it is the one "
            f"turn never trimmed or hidden (got {index.units.masked[lead]} tokens at least)",
            rule="critical_exceeds",
            budget=budget,
            critical=index.units.masked[lead],
        )
    plan.trims[lead] = trim
    return trim.tokens


class _Run(NamedTuple):
    """A contiguous recent run: ``[masked_from, whole_from)`` masked, the rest whole."""

    masked_from: int
    whole_from: int
    tokens: int


def take_recent(index: SelectionIndex, plan: Plan) -> None:
    """Step 3: the newest history units whole while the evidence allowance lasts, older masked.

    Both cuts come from binary search over the prefix sums; what is left then
    unmasks the run's newest masked units. When even the whole tail does not
    fit, a unit-by-unit walk decides instead.
    """
    run = _contiguous_run(index, plan)
    if run is None:
        plan.masked_from = plan.whole_from = plan.history_end
        _walk_back(index, plan)
        return
    start, whole_from, cost = run
    left = plan.left - cost
    for u in plan.important:
        if u < start:
            plan.chosen[u] = MASKED
    tokens, masked, valid = index.units.tokens, index.units.masked, index.units.valid
    while whole_from > start and tokens[whole_from - 1] - masked[whole_from - 1] <= left:
        whole_from -= 1
        if valid[whole_from]:
            left -= tokens[whole_from] - masked[whole_from]
    plan.left = left
    plan.masked_from, plan.whole_from = start, whole_from
    plan.walk_stop = start - 1


def _contiguous_run(index: SelectionIndex, plan: Plan) -> _Run | None:
    """The longest run ending at the last turn that fits, by prefix sums (None: none fits)."""
    lo, hi = plan.history_start, plan.history_end
    if lo >= hi:
        return _Run(hi, hi, 0)
    prefix, masked = index.prefix, index.units.masked
    important, left = plan.important, plan.left
    whole_from = bisect.bisect_left(
        prefix.evidence, prefix.evidence[hi] - max(0, plan.evidence_left), lo, hi
    )
    masked_sums = prefix.masked
    # the whole tail, plus the masked run up to it (less what step 2 reserved)
    tail = prefix.tokens[hi] - prefix.tokens[whole_from] + masked_sums[whole_from]

    def cost(start: int) -> int:
        reserved = sum(masked[u] for u in important if u >= start) if important else 0
        return tail - masked_sums[start] - reserved

    if cost(whole_from) > left:
        return None
    low, high = lo, whole_from  # the smallest start in [lo, whole_from] that fits
    while low < high:
        mid = (low + high) // 2
        if cost(mid) <= left:
            high = mid
        else:
            low = mid + 1
    return _Run(low, whole_from, cost(low))


def _walk_back(index: SelectionIndex, plan: Plan) -> None:
    """Step 3, unit by unit: whole while evidence lasts, else masked, until one does not fit."""
    units, chosen = index.units, plan.chosen
    important = set(plan.important)
    for u in range(plan.history_end - 1, plan.history_start - 1, -1):
        if not units.valid[u]:
            continue
        evidence = units.evidence(u)
        if u in important:
            chosen[u] = MASKED
            if evidence and evidence <= plan.evidence_left and evidence <= plan.left:
                chosen[u] = WHOLE
                plan.left -= evidence
                plan.evidence_left -= evidence
            continue
        if evidence <= plan.evidence_left and units.tokens[u] <= plan.left:
            chosen[u] = WHOLE
            plan.left -= units.tokens[u]
            plan.evidence_left -= evidence
        elif units.masked[u] <= plan.left:
            chosen[u] = MASKED
            plan.left -= units.masked[u]
        else:
            for k in plan.important:
                if k < u:
                    chosen[k] = MASKED
            plan.walk_stop = u
            return
    plan.walk_stop = plan.history_start - 1


def fill_gaps(index: SelectionIndex, plan: Plan, task: str, weights: ScoreWeights) -> None:
    """Step 4: older units that still fit, masked, best score first (ties: the newer).

    Looks back at most :data:`GAP_LOOKBACK` units from where recency stopped.
    """
    stop, left = plan.walk_stop, plan.left
    if stop < plan.history_start or left <= 0:
        return
    chosen, units = plan.chosen, index.units
    valid, masked, end_of = units.valid, units.masked, units.end
    score = index.unit_scorer(keywords(task) if task else frozenset(), weights)
    newest = max(1, len(index.view) - 1)
    candidates: list[tuple[float, int]] = []
    for u in range(stop, max(plan.history_start, stop - GAP_LOOKBACK) - 1, -1):
        if u in chosen or not valid[u] or masked[u] > left:
            continue
        candidates.append((-(score(u) + weights.recency * end_of[u] / newest), -u))
    candidates.sort()
    for _, neg in candidates:
        if masked[-neg] <= left:
            chosen[-neg] = MASKED
            left -= masked[-neg]
    plan.left = left


def lend_leftover(index: SelectionIndex, plan: Plan, counter: TokenCounter) -> None:
    """Step 5: what is left unmasks chosen masked units, newest first.

    A worthwhile remainder then shows the newest masked result that did not
    fit, middle-trimmed.
    """
    if plan.left <= 0:
        return
    units = index.units
    partial = plan.whole_from - 1 if plan.whole_from > plan.masked_from else -1
    for u in sorted(plan.chosen, reverse=True):
        if plan.chosen[u] is MASKED and u not in plan.trims:
            evidence = units.evidence(u)
            if 0 < evidence <= plan.left:
                plan.chosen[u] = WHOLE
                plan.left -= evidence
            elif evidence > plan.left and partial < 0:
                partial = u
    if partial >= 0 and units.valid[partial] and plan.left >= max(MIN_PARTIAL, plan.budget // 50):
        trim = trim_unit(index, partial, units.masked[partial] + plan.left, counter)
        if trim is not None and trim.tokens > units.masked[partial]:
            plan.trims[partial] = trim
            plan.left -= trim.tokens - units.masked[partial]
