"""The selector's last steps (6 and 7 of :mod:`ctxflow.budget._selection`): messages and accounts.

A plan becomes ordered pieces (runs of units shown the same way, split where
a unit is trimmed or broken, or where two units of the same role meet), the
pieces become messages (adjacent same-role messages merged into one), and the
units left out, masked or trimmed are counted per reason, by prefix sums.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

from ctxflow.budget._selection_index import SelectionIndex
from ctxflow.budget._selection_steps import MASKED, TRIMMED, WHOLE, Plan, Show, Tally
from ctxflow.errors import BudgetExceeded
from ctxflow.model import Message

#: Units ``[first, end)``, all shown the same way (a plain tuple: there may be many).
Piece = tuple[int, int, Show]


class Assembled(NamedTuple):
    """A window's messages, their tokens, and how many of those are tool result content."""

    messages: list[Message]
    tokens: int
    evidence_tokens: int


def assemble_within_budget(index: SelectionIndex, plan: Plan) -> tuple[list[Piece], Assembled]:
    """Step 6: lay the plan out as messages, merging same-role neighbours.

    With a measure that charges a merged message more than its parts, the
    result may not fit: then the oldest optional unit is dropped (or the
    run shortened from its old end) until it does.
    """
    while True:
        pieces = _pieces(index, plan)
        window = _assemble(index, pieces, plan)
        if window.tokens <= plan.budget:
            return pieces, window
        if not _drop_oldest(plan):
            raise BudgetExceeded(
                f"the selected messages must fit the message budget of {plan.budget} tokens "
                f"(got {window.tokens})",
                rule="critical_exceeds",
                budget=plan.budget,
            )


def _drop_oldest(plan: Plan) -> bool:
    """Drop the oldest optional unit: chosen apart, then from the run (False: none is left)."""
    critical = plan.critical
    optional = [u for u in sorted(plan.chosen) if u not in critical and u != plan.last]
    if optional:
        del plan.chosen[optional[0]]
        plan.trims.pop(optional[0], None)
    elif plan.masked_from < plan.whole_from:
        plan.masked_from += 1
    elif plan.whole_from < plan.history_end:
        plan.whole_from += 1
        plan.masked_from = plan.whole_from
    else:
        return False
    return True


def _pieces(index: SelectionIndex, plan: Plan) -> list[Piece]:
    """The chosen units as ordered pieces, split at trims, broken units and role clashes."""
    units, chosen, trims = index.units, plan.chosen, plan.trims
    start, hi = plan.masked_from, plan.history_end
    spans: list[Piece] = []
    for u in sorted(k for k in chosen if k < start):
        spans.append((u, u + 1, TRIMMED if u in trims else chosen[u]))
    for a, b, show in (
        (start, plan.whole_from, MASKED),
        (plan.whole_from, hi, WHOLE),
    ):
        if a < b:
            spans.extend(_run_pieces(index, plan, a, b, show))
    for u in sorted(k for k in chosen if k >= hi):
        spans.append((u, u + 1, TRIMMED if u in trims else chosen[u]))
    return [span for span in spans if units.valid[span[0]]]


def _run_pieces(index: SelectionIndex, plan: Plan, a: int, b: int, show: Show) -> list[Piece]:
    """The run ``[a, b)`` cut into pieces at trimmed, broken and clashing units.

    A masked run's units in ``plan.trims`` show trimmed (condensed), those in
    ``plan.whole_in_run`` whole.
    """
    units, trims = index.units, plan.trims
    broken = _between(units.broken, a, b)
    apart = [u for u in trims if a <= u < b]
    if show is MASKED and plan.whole_in_run:
        apart += [u for u in plan.whole_in_run if a <= u < b]
    cuts = sorted(
        set(apart)
        | {u + 1 for u in apart}
        | set(_between(units.clash, a, b))
        | set(broken)
        | {u + 1 for u in broken}
    )
    out: list[Piece] = []
    start = a
    for point in [*cuts, b]:
        if point > start:
            if start in trims:
                out.append((start, start + 1, TRIMMED))
            elif show is MASKED and start in plan.whole_in_run:
                out.append((start, start + 1, WHOLE))
            elif units.valid[start] or point - start > 1:
                out.append((start, point, show))
            start = point
    return out


def _between(points: list[int], a: int, b: int) -> list[int]:
    """The sorted ``points`` in ``[a, b)``."""
    return points[bisect.bisect_left(points, a) : bisect.bisect_left(points, b)]


def _assemble(index: SelectionIndex, pieces: list[Piece], plan: Plan) -> Assembled:
    """The pieces' messages in order; a piece opening with the previous one's role merges."""
    view, masked_view = index.view, index.masked_view
    tokens, masked_tokens = index.tokens, index.masked_tokens
    first_of, end_of, unit_masked = index.units.first, index.units.end, index.units.masked
    whole_sums, masked_sums, evidence_sums = (
        index.prefix.tokens,
        index.prefix.masked,
        index.prefix.evidence,
    )
    out: list[Message] = []
    last_cost = total = evidence = 0
    for a, b, show in pieces:
        first_msg, end_msg = first_of[a], end_of[b - 1]
        if show is TRIMMED:
            trim = plan.trims[a]
            part: list[Message] = trim.messages
            part_cost = trim.tokens
            head_cost, tail_cost = index.cost_of(part[0]), index.cost_of(part[-1])
            evidence += max(0, part_cost - unit_masked[a])
        elif show is WHOLE:
            part = view[first_msg:end_msg]
            part_cost = whole_sums[b] - whole_sums[a]
            head_cost, tail_cost = tokens[first_msg], tokens[end_msg - 1]
            evidence += evidence_sums[b] - evidence_sums[a]
        else:
            part = masked_view[first_msg:end_msg]
            part_cost = masked_sums[b] - masked_sums[a]
            head_cost, tail_cost = masked_tokens[first_msg], masked_tokens[end_msg - 1]
        if out and out[-1].role is part[0].role:
            merged, cost = index.merged_message(out[-1], part[0])
            total += cost - last_cost - head_cost
            out[-1] = merged
            if len(part) == 1:
                last_cost = cost
                total += part_cost
                continue
            out.extend(part[1:])
        else:
            out.extend(part)
        total += part_cost
        last_cost = tail_cost
    return Assembled(out, total, evidence)


def account(index: SelectionIndex, plan: Plan, pieces: list[Piece], excluded: Tally) -> None:
    """Step 7: count what the pieces masked or trimmed, and the history they left out."""
    units, prefix = index.units, index.prefix
    valid_units, valid_messages, whole_sums = prefix.units, prefix.messages, prefix.tokens
    evidence_units = prefix.evidence_units
    lo, hi = plan.history_start, plan.history_end
    taken_units = taken_messages = taken_tokens = 0
    for a, b, show in pieces:
        if a >= lo and b <= hi:
            taken_units += valid_units[b] - valid_units[a]
            taken_messages += valid_messages[b] - valid_messages[a]
            taken_tokens += whole_sums[b] - whole_sums[a]
        if show is MASKED and evidence_units[b] > evidence_units[a]:
            excluded.add(
                "masked_results",
                units=evidence_units[b] - evidence_units[a],
                messages=prefix.evidence_messages[b] - prefix.evidence_messages[a],
                tokens=prefix.evidence[b] - prefix.evidence[a],
            )
        elif show is TRIMMED:
            excluded.add(
                "trimmed_results",
                units=1,
                messages=units.end[a] - units.first[a],
                tokens=units.tokens[a] - plan.trims[a].tokens,
            )
    older_units = valid_units[hi] - valid_units[lo] - taken_units if hi > lo else 0
    if older_units:
        excluded.add(
            "older_than_window",
            units=older_units,
            messages=valid_messages[hi] - valid_messages[lo] - taken_messages,
            tokens=whole_sums[hi] - whole_sums[lo] - taken_tokens,
        )
    for u in _between(units.broken, lo, hi):
        excluded.add_unit("broken_pair", units, u)
