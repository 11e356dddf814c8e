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
from collections.abc import Callable

from ctxflow.budget._policy import LEND_USES as LEND_USES
from ctxflow.budget._scoring import DEFAULT_WEIGHTS, ScoreWeights, keywords
from ctxflow.budget._selection_index import SelectionIndex, Trim, UnitTable
from ctxflow.budget._selection_trim import trim_unit
from ctxflow.errors import BudgetExceeded
from ctxflow.model import Role
from ctxflow.protocols import TokenCounter

#: How far back from the recency cut gap fill looks, in units.
GAP_LOOKBACK = 256
#: The smallest remainder worth showing a middle-trimmed result for.
MIN_PARTIAL = 64
#: The largest partial a window shows of a result that did not fit, with an evidence allowance.
MAX_PARTIAL = 8_192
#: The smallest room a condensed tool round gets for its results, in tokens.
MIN_CONDENSED = 128
#: A condensed tool round gets at most this share of the evidence allowance.
CONDENSED_SHARE = 4


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
    run of it: ``[masked_from, whole_from)`` masked (its units in ``trims``
    shown condensed, those in ``whole_in_run`` whole) and ``[whole_from,
    history_end)`` whole. ``chosen`` holds every other unit taken and how it
    shows; ``trims`` the units shown middle-trimmed. ``walk_stop`` is the
    newest unit recency did not take (gap fill looks there and older).

    ``work_left`` is what is left of the work allowance (tool results shown
    whole, newest first), ``evidence_left`` of the evidence allowance (older
    tool rounds shown condensed, each in at most ``cap`` tokens of results),
    ``memory_left`` of the memory allowance (the history in masked form).
    """

    __slots__ = (
        "breadth",
        "budget",
        "cap",
        "chosen",
        "evidence_left",
        "evidence_share",
        "history_end",
        "history_start",
        "important",
        "last",
        "lead",
        "left",
        "masked_from",
        "memory_left",
        "pooled",
        "reach_cut",
        "reached",
        "trims",
        "unmask_in_run",
        "walk_stop",
        "whole_from",
        "whole_in_run",
        "work_left",
        "work_pays",
        "work_share",
    )

    def __init__(
        self,
        index: SelectionIndex,
        *,
        budget: int,
        lead: int,
        last: int,
        work: int = 0,
        evidence: int = 0,
        memory: int | None = None,
    ) -> None:
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
        #: units of the masked run shown whole (condensed rounds small enough to need no cut)
        self.whole_in_run: set[int] = set()
        self.masked_from = self.whole_from = last
        self.walk_stop = lead
        self.left = budget
        self.work_left = 0
        self.evidence_left = max(0, evidence)
        #: what the history may cost masked (None: as far as the budget reaches)
        self.memory_left = memory
        #: with no evidence allowance and leftover lent to recent rounds only, what recency
        #: leaves unmasks the run's newest masked units before gaps fill
        self.unmask_in_run = False
        #: gap fill takes the cheapest units first (as many turns as fit), not the best scored
        self.breadth = False
        #: what the work allowance pays for: the latest rounds whole, or their results only
        self.work_pays = "rounds"
        #: whether the memory allowance, not the budget, stopped the history's reach
        self.reach_cut = False
        #: whether lending to memory took more of the history in
        self.reached = False
        #: whether a lending use is spending a pool smaller than what is left (no partial then)
        self.pooled = False
        #: the allowances as given: lending shares the leftover in their proportion
        self.work_share, self.evidence_share = max(0, work), max(0, evidence)
        self.cap = max(MIN_CONDENSED, self.evidence_left // CONDENSED_SHARE)

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


def reserve_mandatory(index: SelectionIndex, plan: Plan, work: int, counter: TokenCounter) -> None:
    """Step 2: reserve the task and the important units masked, the last turn whole.

    A last turn that does not fit is middle-trimmed; a task that is the last
    turn too is shown whole. The last turn's tool results count against the
    ``work`` allowance first. Raises :class:`BudgetExceeded` with the numbers
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
        plan.work_left = work - max(0, last_cost - units.masked[last])
    else:
        last_cost = 0
        reserved += _fit_task_alone(index, plan, counter)
        plan.chosen[lead] = WHOLE
        plan.work_left = work
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


def take_recent(index: SelectionIndex, plan: Plan, counter: TokenCounter) -> None:
    """Step 3: the latest tool rounds whole, older ones condensed, older still masked.

    Newest first: units whole while the work allowance lasts (it pays for
    whole rounds, or with ``work_pays == "results"`` for their tool results
    only; the cut comes from binary search over the prefix sums), then units
    condensed (each tool round's results middle-trimmed to ``plan.cap``)
    while the evidence allowance lasts, then units masked back to the oldest that still fits
    (binary search again). With ``plan.unmask_in_run``, what is left then
    unmasks the run's newest masked units. When even the whole tail does not
    fit, a unit-by-unit walk decides instead.
    """
    lo, hi = plan.history_start, plan.history_end
    if lo >= hi:
        plan.masked_from = plan.whole_from = hi
        plan.walk_stop = hi - 1
        return
    prefix = index.prefix
    paid = prefix.tokens if plan.work_pays == "rounds" else prefix.evidence
    whole_from = bisect.bisect_left(paid, paid[hi] - max(0, plan.work_left), lo, hi)
    left = plan.left - (prefix.tokens[hi] - prefix.tokens[whole_from])
    left += sum(index.units.masked[u] for u in plan.important if u >= whole_from)
    if left < 0:
        plan.masked_from = plan.whole_from = hi
        _walk_back(index, plan, counter)
        return
    plan.work_left -= paid[hi] - paid[whole_from]
    condensed_from = whole_from
    if plan.evidence_left > 0:
        condensed_from, left = _condense_back(index, plan, whole_from, lo, left, counter)
    limit = left
    if plan.memory_left is not None:
        masked_sums = prefix.masked
        if plan.work_pays == "results":
            plan.memory_left -= masked_sums[hi] - masked_sums[condensed_from]
        plan.memory_left -= sum(index.units.masked[u] for u in plan.critical)
        limit = max(0, min(left, plan.memory_left))
    start, cost = _masked_run(index, plan, lo, condensed_from, limit)
    if limit < left and start > lo:
        plan.reach_cut = True
    if plan.memory_left is not None:
        plan.memory_left -= cost
    left -= cost
    for u in plan.important:
        if u < start:
            plan.chosen[u] = MASKED
    if plan.unmask_in_run:
        tokens, masked, valid = index.units.tokens, index.units.masked, index.units.valid
        while whole_from > start and tokens[whole_from - 1] - masked[whole_from - 1] <= left:
            whole_from -= 1
            if valid[whole_from]:
                left -= tokens[whole_from] - masked[whole_from]
    plan.left = left
    plan.masked_from, plan.whole_from = start, whole_from
    plan.walk_stop = start - 1


def _condensed(index: SelectionIndex, plan: Plan, unit: int, counter: TokenCounter) -> Trim | None:
    """The unit with its tool results middle-trimmed into ``plan.cap`` tokens (None: no need)."""
    units = index.units
    if not units.valid[unit] or units.evidence(unit) <= plan.cap:
        return None
    return trim_unit(index, unit, units.masked[unit] + plan.cap, counter)


def _condense_back(
    index: SelectionIndex, plan: Plan, end: int, lo: int, left: int, counter: TokenCounter
) -> tuple[int, int]:
    """Condense units from ``end - 1`` back while the evidence allowance lasts.

    Returns where the condensed units start and what is left of ``left``.
    A round whose results fit the cap is shown whole (it costs its results).
    """
    units, important = index.units, plan.important
    u = end
    while u > lo and plan.evidence_left > 0:
        unit = u - 1
        if units.valid[unit]:
            found = _condensed_cost(index, plan, unit, counter)
            if found is None:
                break
            trim, extra = found
            charge = extra if unit in important else units.masked[unit] + extra
            paid = units.masked[unit] + extra if plan.work_pays == "rounds" else extra
            if paid > plan.evidence_left or charge > left:
                break
            _show_condensed(index, plan, unit, trim, paid)
            left -= charge
        u -= 1
    return u, left


def _condensed_cost(
    index: SelectionIndex, plan: Plan, unit: int, counter: TokenCounter
) -> tuple[Trim | None, int] | None:
    """The unit condensed (None: whole, its results fit the cap) and what that adds to masked.

    None when the unit has no results to show or they cannot be condensed.
    """
    units = index.units
    evidence = units.evidence(unit)
    if evidence <= 0:
        return None
    if evidence <= plan.cap:
        return None, evidence
    trim = trim_unit(index, unit, units.masked[unit] + plan.cap, counter)
    if trim is None or trim.tokens <= units.masked[unit]:
        return None
    return trim, trim.tokens - units.masked[unit]


def _show_condensed(
    index: SelectionIndex, plan: Plan, unit: int, trim: Trim | None, paid: int
) -> None:
    """Record ``unit`` condensed (``trim``; None: whole); the evidence allowance pays ``paid``."""
    if trim is None and unit in plan.chosen:
        plan.chosen[unit] = WHOLE
    elif trim is None:
        plan.whole_in_run.add(unit)
    else:
        plan.trims[unit] = trim
    plan.evidence_left -= paid


def _masked_run(index: SelectionIndex, plan: Plan, lo: int, end: int, left: int) -> tuple[int, int]:
    """The smallest start in ``[lo, end]`` whose masked run to ``end`` fits ``left``; its cost.

    Important units in the run were reserved in step 2 and cost nothing more.
    """
    masked_sums, masked = index.prefix.masked, index.units.masked
    important = plan.important

    def cost(start: int) -> int:
        reserved = sum(masked[u] for u in important if start <= u < end) if important else 0
        return masked_sums[end] - masked_sums[start] - reserved

    low, high = lo, end
    while low < high:
        mid = (low + high) // 2
        if cost(mid) <= left:
            high = mid
        else:
            low = mid + 1
    return low, cost(low)


def _walk_back(index: SelectionIndex, plan: Plan, counter: TokenCounter) -> None:
    """Step 3, unit by unit: whole while work lasts, condensed while evidence lasts, else masked.

    Stops at the first unit that does not fit even masked.
    """
    units, chosen = index.units, plan.chosen
    important = set(plan.important)
    for u in range(plan.history_end - 1, plan.history_start - 1, -1):
        if not units.valid[u]:
            continue
        evidence = units.evidence(u)
        if u in important:
            chosen[u] = MASKED
            if evidence and evidence <= plan.work_left and evidence <= plan.left:
                chosen[u] = WHOLE
                plan.left -= evidence
                plan.work_left -= evidence
            else:
                _condense_chosen(index, plan, u, counter)
            continue
        if evidence <= plan.work_left and units.tokens[u] <= plan.left:
            chosen[u] = WHOLE
            plan.left -= units.tokens[u]
            plan.work_left -= evidence
        elif units.masked[u] <= plan.left:
            chosen[u] = MASKED
            plan.left -= units.masked[u]
            _condense_chosen(index, plan, u, counter)
        else:
            for k in plan.important:
                if k < u:
                    chosen[k] = MASKED
            plan.walk_stop = u
            return
    plan.walk_stop = plan.history_start - 1


def _condense_chosen(index: SelectionIndex, plan: Plan, unit: int, counter: TokenCounter) -> None:
    """Show a taken masked unit condensed, if the evidence allowance and the budget allow.

    Its masked cost is already paid; condensing costs what it adds.
    """
    if plan.evidence_left <= 0 or unit in plan.trims or unit in plan.whole_in_run:
        return
    found = _condensed_cost(index, plan, unit, counter)
    if found is None:
        return
    trim, extra = found
    if extra > plan.evidence_left or extra > plan.left:
        return
    _show_condensed(index, plan, unit, trim, extra)
    plan.left -= extra


def fill_gaps(index: SelectionIndex, plan: Plan, task: str, weights: ScoreWeights) -> None:
    """Step 4: older units that still fit, masked, best score first (ties: the newer).

    Within the memory allowance, when there is one. Looks back at most
    :data:`GAP_LOOKBACK` units from where recency stopped.
    """
    stop, left = plan.walk_stop, plan.left
    if plan.memory_left is not None:
        left = min(left, plan.memory_left)
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
        if plan.breadth:
            candidates.append((float(masked[u]), -u))
        else:
            candidates.append((-(score(u) + weights.recency * end_of[u] / newest), -u))
    candidates.sort()
    spent = 0
    for _, neg in candidates:
        if masked[-neg] <= left:
            chosen[-neg] = MASKED
            left -= masked[-neg]
            spent += masked[-neg]
        elif plan.memory_left is not None and masked[-neg] <= plan.left - spent:
            plan.reach_cut = True
    plan.left -= spent
    if plan.memory_left is not None:
        plan.memory_left -= spent


def lend_leftover(
    index: SelectionIndex,
    plan: Plan,
    counter: TokenCounter,
    order: tuple[str, ...] = ("recent",),
    *,
    task: str = "",
    weights: ScoreWeights | None = None,
) -> None:
    """Step 5: lend what is left to the uses in ``order`` (the phase's intent).

    The leftover is first shared by the allowances: the work allowance's
    share goes to ``"recent"``, the evidence allowance's to ``"condensed"``,
    ``"spread"`` and ``"relevant"`` (what one leaves passes to the next);
    ``"memory"`` has no pool, it takes what the others leave; each use spends at most its pool, in
    ``order``. Then whatever is still left goes to the uses in ``order``
    again, unbounded.

    - ``"recent"`` shows more rounds whole, newest first (the run grows, then
      units taken apart from it), and a worthwhile remainder shows the newest
      masked result that did not fit, middle-trimmed;
    - ``"condensed"`` condenses more of the taken masked rounds at the cap
      (a quarter of the evidence allowance), newest first: each rendering
      depends on the cap alone, so the next window repeats it;
    - ``"spread"`` raises one common cap over every taken round's results
      (the newest :data:`GAP_LOOKBACK` of them) as far as the leftover allows,
      so older output is condensed evenly rather than the newest shown whole;
    - ``"relevant"`` shows rounds whole by relevance to the task and the
      latest turn (see :mod:`ctxflow.budget._scoring`), best first;
    - ``"memory"`` reaches further back, when the memory allowance stopped
      the history short: the masked run grows, then gaps fill.
    """
    if plan.left <= 0 or not order:
        return
    words = weights or DEFAULT_WEIGHTS
    spend = {
        "recent": lambda: _lend_whole(index, plan, counter, with_partial=not plan.pooled),
        "condensed": lambda: _lend_condensed(index, plan, counter),
        "spread": lambda: _lend_spread(index, plan, counter),
        "relevant": lambda: _lend_relevant(index, plan, task, words),
        "memory": lambda: _reach_further(index, plan, task, words),
    }
    pools = _pools(plan, order)
    limited = False
    for use in order:
        layer = _LAYER_OF[use]
        pool = pools.get(layer, 0)
        if pool <= 0:
            limited = True
            continue
        limited |= pool < plan.left
        before = plan.left
        plan.pooled = pool < plan.left
        _spend_at_most(plan, pool, spend[use])
        plan.pooled = False
        pools[layer] = pool - (before - plan.left)  # what one use leaves passes to the next
    if limited:
        for use in order:
            if plan.left <= 0:
                return
            spend[use]()
    if plan.reached and plan.left > 0:  # the rounds the history reached get their turn too
        for use in order:
            if use != "memory" and plan.left > 0:
                spend[use]()


#: The layer whose share of the leftover each use spends.
_LAYER_OF = {
    "recent": "work",
    "condensed": "evidence",
    "spread": "evidence",
    "relevant": "evidence",
    "memory": "memory",
}


def _pools(plan: Plan, order: tuple[str, ...]) -> dict[str, int]:
    """What is left, shared between the layers the uses in ``order`` spend for, by allowance."""
    shares = {
        "work": plan.work_share,
        "evidence": plan.evidence_share,
        "memory": 0,  # the history only ever takes what the other uses leave
    }
    layers = list(dict.fromkeys(_LAYER_OF[use] for use in order))
    weights = {layer: max(0, shares[layer]) for layer in layers}
    total = sum(weights.values())
    left = plan.left
    if total <= 0:
        return {layers[0]: left}
    out = {layer: left * weight // total for layer, weight in weights.items()}
    out[layers[0]] += left - sum(out.values())
    return out


def _reach_further(index: SelectionIndex, plan: Plan, task: str, weights: ScoreWeights) -> None:
    """Lend what is left to the history: the masked run reaches further back, then gaps fill.

    Nothing to do unless the memory allowance stopped the history short. The
    run stops short of any unit taken apart from it that is not a plain
    masked important unit (one shown otherwise keeps its own piece).
    """
    if not plan.reach_cut:
        return
    chosen, important = plan.chosen, set(plan.important)
    floor = plan.history_start
    for u in chosen:
        if u < plan.masked_from and not (
            u in important and chosen[u] is MASKED and u not in plan.trims
        ):
            floor = max(floor, u + 1)
    start, cost = _masked_run(index, plan, floor, plan.masked_from, plan.left)
    plan.left -= cost
    plan.masked_from = start
    plan.walk_stop = min(plan.walk_stop, start - 1)
    plan.memory_left = None
    before = len(plan.chosen)
    fill_gaps(index, plan, task, weights)
    plan.memory_left = 0
    plan.reach_cut = False
    plan.reached = cost > 0 or len(plan.chosen) > before


def _spend_at_most(plan: Plan, pool: int, spend: Callable[[], None]) -> None:
    """Run ``spend`` as if only ``pool`` were left; charge the plan what it used."""
    total = plan.left
    plan.left = min(pool, total)
    given = plan.left
    spend()
    plan.left = total - (given - plan.left)


def _taken_rounds(plan: Plan, index: SelectionIndex) -> list[int]:
    """Taken units not shown whole, with results to show, newest first (at most the lookback)."""
    units = index.units
    valid, tokens, masked = units.valid, units.tokens, units.masked
    whole = plan.whole_in_run
    out: list[int] = []
    for u in range(plan.whole_from - 1, plan.masked_from - 1, -1):
        if valid[u] and u not in whole and tokens[u] > masked[u]:
            out.append(u)
            if len(out) >= GAP_LOOKBACK:
                break
    apart = [
        u
        for u in plan.chosen
        if plan.chosen[u] is MASKED and u != plan.lead and tokens[u] > masked[u]
    ]
    if apart:
        out = sorted({*out, *apart}, reverse=True)
    return out[:GAP_LOOKBACK]


def _show_whole(index: SelectionIndex, plan: Plan, unit: int) -> None:
    """Show a taken unit whole, in the run or apart from it."""
    plan.trims.pop(unit, None)
    if unit in plan.chosen:
        plan.chosen[unit] = WHOLE
    else:
        plan.whole_in_run.add(unit)


def _lend_condensed(index: SelectionIndex, plan: Plan, counter: TokenCounter) -> None:
    """Condense more taken masked rounds at ``plan.cap``, newest first.

    Each round's rendering depends only on the cap, so the next window
    repeats it (the prompt-cache prefix holds).
    """
    plan.evidence_left = plan.left  # lent: only what is left binds
    for u in _taken_rounds(plan, index):
        if plan.left <= 0:
            break
        if u != plan.last and u not in plan.trims:
            _condense_chosen(index, plan, u, counter)
    plan.evidence_left = 0


def _lend_spread(index: SelectionIndex, plan: Plan, counter: TokenCounter) -> None:
    """Raise one cap over the taken rounds' results as far as what is left allows.

    The cap is found on estimates (a round costs at most its masked form plus
    the cap); trims come out smaller, so a worthwhile remainder raises the
    cap again, by what they came out under, three rounds at most.
    """
    units = index.units
    rounds = [u for u in _taken_rounds(plan, index) if u != plan.last]
    if not rounds:
        return
    slack = 0  # how far trims came out under their room, on average, last round
    for _ in range(3):
        shown = {u: _shown_cost(index, plan, u) for u in rounds}

        def extra(cap: int, shown: dict[int, int] = shown, slack: int = slack) -> int:
            return sum(
                max(0, units.masked[u] + min(units.evidence(u), cap) - slack - shown[u])
                for u in rounds
            )

        low, high = 0, max(units.evidence(u) for u in rounds)
        while low < high:  # the largest cap whose extra cost fits
            mid = (low + high + 1) // 2
            if extra(mid) <= plan.left:
                low = mid
            else:
                high = mid - 1
        before, under, trimmed = plan.left, 0, 0
        for u in rounds:
            room = units.masked[u] + min(units.evidence(u), low)
            if room - slack <= shown[u]:
                continue
            if units.evidence(u) <= low:
                if units.tokens[u] - shown[u] <= plan.left:
                    _show_whole(index, plan, u)
                    plan.left -= units.tokens[u] - shown[u]
                continue
            trim = trim_unit(index, u, room, counter)
            if trim is not None and shown[u] < trim.tokens <= shown[u] + plan.left:
                plan.trims[u] = trim
                plan.left -= trim.tokens - shown[u]
                under += room - trim.tokens
                trimmed += 1
        slack = under // trimmed if trimmed else 0
        if before - plan.left <= 0 or plan.left < max(MIN_PARTIAL, plan.budget // 50):
            return


def _lend_relevant(
    index: SelectionIndex, plan: Plan, task: str, weights: ScoreWeights | None
) -> None:
    """Show taken rounds whole by relevance to the task and the latest turn, best first."""
    units = index.units
    rounds = [u for u in _taken_rounds(plan, index) if u != plan.last]
    if not rounds:
        return
    latest = " ".join(m.text for m in index.view[units.first[plan.last] : units.end[plan.last]])
    words = keywords(f"{task} {latest}")
    score = index.unit_scorer(words, weights if weights is not None else DEFAULT_WEIGHTS)
    for u in sorted(rounds, key=lambda k: (-score(k), -k)):
        extra = units.tokens[u] - _shown_cost(index, plan, u)
        if 0 < extra <= plan.left:
            _show_whole(index, plan, u)
            plan.left -= extra


def _lend_whole(
    index: SelectionIndex, plan: Plan, counter: TokenCounter, *, with_partial: bool = True
) -> None:
    """Unmask the run's newest units, then chosen masked units, newest first; then a partial.

    With an evidence allowance, a partial holds at most four condensed rounds' worth (and
    :data:`MAX_PARTIAL`), rounded down to 64 tokens (the next build's trim is then found in
    the cache).
    """
    show_partial = with_partial
    units = index.units
    while plan.whole_from > plan.masked_from:
        u = plan.whole_from - 1
        extra = units.tokens[u] - _shown_cost(index, plan, u)
        if extra > plan.left:
            break
        plan.trims.pop(u, None)
        plan.whole_in_run.discard(u)
        plan.whole_from = u
        if units.valid[u]:
            plan.left -= extra
    partial = plan.whole_from - 1 if plan.whole_from > plan.masked_from else -1
    for u in sorted(plan.chosen, reverse=True):
        if plan.chosen[u] is MASKED and u not in plan.whole_in_run:
            now = _shown_cost(index, plan, u)
            extra = units.tokens[u] - now
            if u in plan.trims and u != plan.last and 0 < extra <= plan.left:
                del plan.trims[u]
                plan.chosen[u] = WHOLE
                plan.left -= extra
            elif u not in plan.trims and 0 < extra <= plan.left:
                plan.chosen[u] = WHOLE
                plan.left -= extra
            elif extra > plan.left and partial < 0 and u not in plan.trims:
                partial = u
    if (
        show_partial
        and partial >= 0
        and units.valid[partial]
        and plan.left >= max(MIN_PARTIAL, plan.budget // 50)
    ):
        now = _shown_cost(index, plan, partial)
        room = plan.left
        if plan.evidence_share > 0:
            room = min(room, max(MIN_PARTIAL, min(4 * plan.cap, MAX_PARTIAL))) // 64 * 64
        trim = trim_unit(index, partial, now + room, counter)
        if trim is not None and trim.tokens > now:
            plan.trims[partial] = trim
            plan.left -= trim.tokens - now


def _shown_cost(index: SelectionIndex, plan: Plan, unit: int) -> int:
    """What ``unit`` costs as the plan shows it now, if it is not whole: trimmed or masked."""
    if unit in plan.whole_in_run:
        return index.units.tokens[unit]
    trim = plan.trims.get(unit)
    return trim.tokens if trim is not None else index.units.masked[unit]
